"""A book-entry trade between two custody clients through the real exchange, settled delivery
versus payment (issue 11 §1 and §2, docs/dvp.md): the seller's position moves to the buyer's
against the cash, both or neither; a locked position cannot be delivered, and nothing moves."""

from __future__ import annotations

from decimal import Decimal
from uuid import uuid4

from agents.investor.trading import OrderTicket, place_order
from broker.runtime import AgentRuntime
from broker.settings import Settings
from schemas.custody import PlaceLock, PositionQuantity
from schemas.trading import Side
from tests import support
from tests.custody_support import ask, balances, open_account
from tests.e2e.test_custody_certificates import deposited, register

AGENTS = ("investor", "issuer", "exchange", "settlement", "custody")


def sub(available: int, locked: int = 0) -> dict[str, int]:
    return {"available": available, "locked": locked, "pending_delivery": 0, "pending_receipt": 0}


async def cash(settlement: AgentRuntime, account: str) -> Decimal:
    rows = await support.rows(
        settlement, "SELECT coalesce(sum(amount), 0) AS b FROM postings WHERE account_id = $1", account
    )
    return Decimal(rows[0]["b"])


async def clients(rt: dict[str, AgentRuntime]) -> None:
    """alice has 500 KBT in custody; bob has a safekeeping account and 1,000,000 JPY."""
    await support.open_offering(rt["issuer"])
    await support.list_issue(rt["exchange"])
    await open_account(rt["custody"], "alice-sk", "alice")
    await open_account(rt["custody"], "bob-sk", "bob")
    await support.fund(rt["settlement"], "alice")
    await support.fund(rt["settlement"], "bob", Decimal(1_000_000))
    await deposited(rt)
    await rt["custody"].outcomes.wait(lambda s: s.type == "certificate.issued")


async def trade(rt: dict[str, AgentRuntime], quantity: int = 200) -> None:
    investor = rt["investor"]
    ask_ = OrderTicket(
        "alice-be-sell", "KBT", Side.SELL, quantity, "alice-cash", Decimal(1000), safekeeping_account="alice-sk"
    )
    bid = OrderTicket("bob-be-buy", "KBT", Side.BUY, quantity, "bob-cash", Decimal(1000), safekeeping_account="bob-sk")
    await investor.outcomes.reply("order.accepted", await investor.command("alice", place_order(ask_)))
    await investor.command("bob", place_order(bid))


async def test_a_book_entry_trade_between_two_custody_clients_settles_both_legs(settings: Settings) -> None:
    async with support.agents(settings, *AGENTS) as rt:
        await clients(rt)
        await trade(rt)
        completed = await rt["investor"].outcomes.wait_count(lambda s: s.type == "trade.completed", 2, timeout=30)
        assert len(completed) == 2
        custody, settlement = rt["custody"], rt["settlement"]
        assert await balances(custody, "alice-sk", "KBT") == sub(300)
        assert await balances(custody, "bob-sk", "KBT") == sub(200)
        assert (await cash(settlement, "alice-cash"), await cash(settlement, "bob-cash")) == (200_000, 800_000)
        assert await register(rt["issuer"]) == [("custody", 500)]  # the holder of record does not change
        reservations = await support.rows(custody, "SELECT instruction, status FROM reservations")
        assert [r["status"] for r in reservations] == ["committed"]
        moves = await support.rows(custody, "SELECT cause FROM position_changes WHERE reference LIKE 'instruction:%'")
        assert sorted(m["cause"] for m in moves) == ["delivered", "delivery_reserved", "receipt_expected", "received"]


async def test_a_locked_position_is_not_delivered_and_neither_leg_happens(settings: Settings) -> None:
    async with support.agents(settings, *AGENTS) as rt:
        await clients(rt)
        lock = PlaceLock(
            lock_id=uuid4(),
            client="alice",
            account="alice-sk",
            positions=(PositionQuantity(issue_code="KBT", quantity=400),),
            lock_holder="credit",
            reason="collateral",
            obligation_reference="card-0001",
        )
        assert (await ask(settings, rt["custody"], lock))["type"] == "custody.lock.placed"
        await trade(rt)
        await rt["investor"].outcomes.wait_count(lambda s: s.type == "order.execution_reversed", 2, timeout=30)
        custody, settlement = rt["custody"], rt["settlement"]
        assert await balances(custody, "alice-sk", "KBT") == sub(100, locked=400)
        assert await balances(custody, "bob-sk", "KBT") in ({}, sub(0))
        assert (await cash(settlement, "alice-cash"), await cash(settlement, "bob-cash")) == (0, 1_000_000)
        refusals = await support.rows(
            custody, "SELECT body FROM outbox_messages WHERE message_type = 'securities.reservation_refused'"
        )
        assert len(refusals) == 1 and b"quantity_locked" in refusals[0]["body"]
