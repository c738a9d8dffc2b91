"""Sale on the lock holder's instruction through the real exchange (seed 003 S9070–S9100,
R-003-53..55; issue 11 §2): only the lock holder, only what the lock holds; the sold shares
leave the client's position as the name transfer completes, the proceeds are reported, and
what the lock still holds stays locked."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any
from uuid import uuid4

from agents.investor.trading import OrderTicket, place_order
from agents.settlement import mandates
from broker.runtime import AgentRuntime
from broker.settings import Settings
from schemas.custody import PlaceLock, PositionQuantity, SellInstruction
from schemas.trading import Side
from tests import support
from tests.custody_support import ask, balances, open_account, send_as
from tests.e2e.test_custody_certificates import deposited, register

AGENTS = ("investor", "issuer", "exchange", "settlement", "custody")


async def outbox_payloads(custody: AgentRuntime, type_: str) -> list[dict[str, Any]]:
    rows = await support.rows(
        custody, "SELECT body FROM outbox_messages WHERE message_type = $1 ORDER BY seq, place", type_
    )
    return [json.loads(r["body"])["payload"] for r in rows]


async def market(rt: dict[str, AgentRuntime]) -> PlaceLock:
    """alice's 500 KBT in custody, 300 of them locked for the credit holder; bob bids 200 at 1,000."""
    await support.open_offering(rt["issuer"])
    await support.list_issue(rt["exchange"])
    await open_account(rt["custody"], "alice-sk", "alice")
    await support.fund(rt["settlement"], "custody")
    bob_cash = await support.fund(rt["settlement"], "bob", Decimal(1_000_000))
    await deposited(rt)
    await rt["custody"].outcomes.wait(lambda s: s.type == "certificate.issued")
    await rt["exchange"].outcomes.wait_count(lambda s: s.type == "certid_list.updated", 2)
    lock = PlaceLock(
        lock_id=uuid4(),
        client="alice",
        account="alice-sk",
        positions=(PositionQuantity(issue_code="KBT", quantity=300),),
        lock_holder="credit",
        reason="collateral",
        obligation_reference="card-0001",
    )
    assert (await ask(rt["custody"].settings, rt["custody"], lock))["type"] == "custody.lock.placed"
    bid = OrderTicket(
        "bob-buy", "KBT", Side.BUY, 200, bob_cash, Decimal(1000), holder_name="Bob", holder_address="2-2 Kabuto-cho"
    )
    sent = await rt["investor"].command("bob", place_order(bid))
    await rt["investor"].outcomes.reply("order.accepted", sent)
    return lock


def instruction(lock: PlaceLock, quantity: int, **changes: Any) -> SellInstruction:
    values: dict[str, Any] = dict(
        instruction_id=uuid4(),
        lock_id=lock.lock_id,
        issue_code="KBT",
        quantity=quantity,
        limit_price=Decimal(1000),
        proceeds_account="credit-cash",
    )
    values.update(changes)
    return SellInstruction(**values)


async def test_the_lock_holder_sells_locked_shares_through_the_exchange(settings: Settings) -> None:
    async with support.agents(settings, *AGENTS) as rt:
        custody, ledger = rt["custody"], rt["settlement"]
        lock = await market(rt)
        await support.fund(ledger, "credit")
        await ledger.command("settlement", mandates.grant("credit-cash", "custody"))  # the holder's consent
        await send_as(settings, "credit", instruction(lock, 200))
        await custody.outcomes.wait(lambda s: s.type == "funds.brokered_posted", timeout=30)
        [sale] = await outbox_payloads(custody, "custody.sale.completed")
        assert (sale["status"], sale["quantity_sold"], sale["unsold"], sale["proceeds"]) == (
            "completed",
            200,
            0,
            "200000.0000",
        )
        assert (sale["proceeds_account"], sale["detail"]) == ("credit-cash", "")
        assert [(f["quantity"], f["price"]) for f in sale["fills"]] == [(200, "1000.0000")]
        assert await balances(custody, "alice-sk", "KBT") == {
            "available": 200,
            "locked": 100,
            "pending_delivery": 0,
            "pending_receipt": 0,
        }
        assert await register(rt["issuer"]) == [("bob", 200), ("custody", 300)]
        vault = await support.rows(custody, "SELECT shares, status FROM vault WHERE status <> 'gone'")
        assert vault == [{"shares": 300, "status": "held"}]  # the remainder, free again
        assert (await cash(ledger, "custody-cash"), await cash(ledger, "credit-cash")) == (0, 200_000)
        statuses = [
            p["status"] for p in await outbox_payloads(custody, "custody.status.changed") if p["subject"] == "sale"
        ]
        assert statuses == ["accepted", "completed"]


async def test_proceeds_stay_with_custody_when_it_may_not_pay_the_lock_holder(settings: Settings) -> None:
    async with support.agents(settings, *AGENTS) as rt:
        custody, ledger = rt["custody"], rt["settlement"]
        lock = await market(rt)
        await support.fund(ledger, "credit")  # no mandate for custody on it
        await send_as(settings, "credit", instruction(lock, 200))
        await custody.outcomes.wait(lambda s: s.type == "funds.brokered_failed", timeout=30)
        [sale] = await outbox_payloads(custody, "custody.sale.completed")
        assert (sale["status"], sale["proceeds"], sale["proceeds_account"]) == (
            "completed",
            "200000.0000",
            "custody-cash",
        )
        assert sale["detail"].startswith("proceeds stay in custody-cash: not_mandated")
        assert (await cash(ledger, "custody-cash"), await cash(ledger, "credit-cash")) == (200_000, 0)


async def cash(settlement: AgentRuntime, account: str) -> Decimal:
    rows = await support.rows(
        settlement, "SELECT coalesce(sum(amount), 0) AS b FROM postings WHERE account_id = $1", account
    )
    return Decimal(rows[0]["b"])


async def test_only_the_lock_holder_and_only_what_the_lock_holds_can_be_sold(settings: Settings) -> None:
    async with support.agents(settings, *AGENTS) as rt:
        custody = rt["custody"]
        lock = await market(rt)
        too_many = await ask(settings, custody, instruction(lock, 301))  # 200 more are available, not locked
        assert (too_many["type"], too_many["reason"]) == ("custody.sale.refused", "quantity_exceeds_lock")
        unknown = await ask(settings, custody, instruction(lock, 100, lock_id=uuid4()))
        assert unknown["reason"] == "unknown_lock"
        assert await balances(custody, "alice-sk", "KBT") == {
            "available": 200,
            "locked": 300,
            "pending_delivery": 0,
            "pending_receipt": 0,
        }
        assert await support.rows(custody, "SELECT * FROM sales") == []
        assert await register(rt["issuer"]) == [("custody", 500)]
