"""Standing covers for the investors the investor agent hosts (issue 8; docs/dvp.md, "Standing
cover"; R-001-23 cover at order entry).

The agent seals the account once when it opens a cover and sends that very box with the buy
orders on the account while the cover is active, so the exchange books them in the hop that
receives them, drawn on the cover (no per-order cover request). A refused cover holds nothing;
a closing one is not drawn on and closes once the order drawn on it ends; what the agent will
not send it refuses itself, sending nothing.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest

from agents.investor.standing import close_standing_cover, open_standing_cover
from agents.investor.trading import OrderError, cancel_order
from agents.settlement import app as ledger
from broker.runtime import AgentRuntime
from broker.settings import Settings
from tests import support
from tests.e2e.test_cli import kabuto
from tests.integration.test_trading_paths import answer_to, buy, place

AGENTS = ("investor", "exchange", "settlement")
Rt = dict[str, AgentRuntime]


async def opened(rt: Rt, amount: str, expect: str = "standing_cover.opened", account: str = "bob-cash") -> UUID:
    """Open a standing cover of bob's on ``account`` and wait for the exchange's answer."""
    cover_id: UUID = await rt["investor"].command("bob", open_standing_cover(account, Decimal(amount)))
    request_id = (await mine(rt, cover_id))["request_id"]
    await rt["investor"].outcomes.wait(answer_to(request_id, expect))
    return cover_id


async def mine(rt: Rt, cover_id: UUID) -> dict[str, Any]:
    """The investor agent's record of the cover."""
    [row] = await support.rows(
        rt["investor"],
        "SELECT request_id, account, box, amount, status, reason, detail, spent FROM standing_covers "
        "WHERE cover_id = $1",
        cover_id,
    )
    return row


async def exchange_cover(rt: Rt, cover_id: UUID) -> dict[str, Any] | None:
    found = await support.rows(
        rt["exchange"], "SELECT account, status FROM standing_covers WHERE cover_id = $1", cover_id
    )
    return found[0] if found else None


async def exchange_order(rt: Rt, coid: str) -> dict[str, Any]:
    [row] = await support.rows(
        rt["exchange"],
        "SELECT settlement_account, cover_id, cover_unit, status FROM orders WHERE client_order_id = $1",
        coid,
    )
    return row


async def cover_requests(rt: Rt) -> int:
    rows = await support.rows(
        rt["exchange"], "SELECT count(*) AS n FROM outbox_messages WHERE message_type = 'settlement.cover.request'"
    )
    return int(rows[0]["n"])


async def placed_holds(rt: Rt, account: str) -> dict[str, Decimal]:
    rows = await support.rows(
        rt["settlement"],
        """SELECT c.kind, sum(h.amount) AS amount FROM holds h JOIN covers c ON c.cover_id = h.hold_id
           WHERE h.account_id = $1 AND h.status = 'placed' GROUP BY c.kind""",
        account,
    )
    return {r["kind"]: Decimal(r["amount"]) for r in rows}


async def test_a_hosted_buy_order_on_the_covered_account_draws_on_the_cover_without_a_cover_request(
    settings: Settings,
) -> None:
    """R-001-23: settlement holds the cover's amount once; bob's buy order carries the box the
    cover was opened with and is booked drawn on it, with no settlement.cover.request."""
    async with support.agents(settings, *AGENTS) as rt:
        await support.list_issue(rt["exchange"])
        account = await support.fund(rt["settlement"], "bob", Decimal(1_000_000))
        cover = await opened(rt, "200000")

        record = await mine(rt, cover)
        assert (record["account"], record["status"], record["amount"]) == (account, "active", Decimal(200_000))
        assert await exchange_cover(rt, cover) == {"account": record["box"], "status": "active"}
        assert await placed_holds(rt, account) == {"standing": Decimal(200_000)}

        await place(rt, "bob", buy("b1", 100, "990"))
        assert await exchange_order(rt, "b1") == {
            "settlement_account": record["box"],
            "cover_id": cover,
            "cover_unit": Decimal(990),
            "status": "open",
        }
        assert await cover_requests(rt) == 0  # booked in the hop that received it
        assert await placed_holds(rt, account) == {"standing": Decimal(200_000)}
        orders = await support.rows(rt["investor"], "SELECT settlement_account, status FROM orders")
        assert orders == [{"settlement_account": account, "status": "accepted"}]  # kept in clear, as before


async def test_a_refused_standing_cover_holds_nothing_and_its_box_is_not_used(settings: Settings) -> None:
    """R-001-23: an amount over the free balance is refused with settlement's reason; nothing is
    held, the next buy order takes a per-order cover with a box of its own, and the account is
    free for another standing cover."""
    async with support.agents(settings, *AGENTS) as rt:
        await support.list_issue(rt["exchange"])
        account = await support.fund(rt["settlement"], "bob", Decimal(100_000))
        refused = await opened(rt, "100001", expect="standing_cover.refused")

        record = await mine(rt, refused)
        assert (record["status"], record["reason"]) == ("refused", "insufficient_funds")
        assert record["detail"]
        assert await placed_holds(rt, account) == {}

        await place(rt, "bob", buy("b1", 100, "990"))
        order = await exchange_order(rt, "b1")
        assert order["settlement_account"] != record["box"] and order["cover_unit"] is None
        assert await cover_requests(rt) == 1
        assert await placed_holds(rt, account) == {"order": Decimal(99_000)}

        again = await opened(rt, "1000")
        assert (await mine(rt, again))["status"] == "active"


async def test_closing_with_a_resting_order_waits_for_the_order_then_frees_the_cover(settings: Settings) -> None:
    """R-001-23: while closing, the cover is not drawn on (a new buy order takes a cover of its
    own); once bob cancels the order drawn on it, the exchange closes it and settlement frees it."""
    async with support.agents(settings, *AGENTS) as rt:
        await support.list_issue(rt["exchange"])
        account = await support.fund(rt["settlement"], "bob", Decimal(1_000_000))
        cover = await opened(rt, "300000")
        box = (await mine(rt, cover))["box"]
        await place(rt, "bob", buy("b1", 100, "990"))

        close = await rt["investor"].command("bob", close_standing_cover(cover))
        assert (await mine(rt, cover))["status"] == "closing"
        await support.eventually(lambda: _exchange_status(rt, cover, "closing"))

        await place(rt, "bob", buy("b2", 100, "990"))
        b2 = await exchange_order(rt, "b2")
        assert b2["settlement_account"] != box and b2["cover_unit"] is None
        assert await cover_requests(rt) == 1
        assert (await mine(rt, cover))["status"] == "closing"  # b1 still rests on it

        cancel = await rt["investor"].command("bob", cancel_order("b1"))
        await rt["investor"].outcomes.wait(answer_to(cancel, "order.cancelled"))
        await rt["investor"].outcomes.wait(answer_to(close, "standing_cover.closed"))
        record = await mine(rt, cover)
        assert (record["status"], record["spent"], record["reason"]) == ("closed", Decimal(0), None)
        await rt["settlement"].outcomes.wait(lambda s: s.type == "settlement.cover.release")
        assert await placed_holds(rt, account) == {"order": Decimal(99_000)}  # b2's own cover


async def _exchange_status(rt: Rt, cover_id: UUID, status: str) -> bool:
    found = await exchange_cover(rt, cover_id)
    return found is not None and found["status"] == status


async def test_what_the_agent_refuses_itself_sends_nothing(settings: Settings) -> None:
    """A second cover on an account with a live one, a close of a cover that is not the user's or
    not active, and an amount that is not positive are refused before anything is signed."""
    async with support.agents(settings, *AGENTS) as rt:
        await support.list_issue(rt["exchange"])
        await support.fund(rt["settlement"], "bob", Decimal(1_000_000))
        cover = await opened(rt, "50000")
        with pytest.raises(OrderError, match=f"bob-cash has a standing cover already: {cover} is active"):
            await rt["investor"].command("bob", open_standing_cover("bob-cash", Decimal(1_000)))
        unknown_account = await opened(rt, "1000", expect="standing_cover.refused", account="bob-other")
        with pytest.raises(OrderError, match="is refused; only an active one can be closed"):
            await rt["investor"].command("bob", close_standing_cover(unknown_account))
        with pytest.raises(OrderError, match="no standing cover"):
            await rt["investor"].command("bob", close_standing_cover(uuid.uuid4()))
        with pytest.raises(OrderError, match=f"no standing cover {cover} of alice"):
            await rt["investor"].command("alice", close_standing_cover(cover))
        with pytest.raises(OrderError, match="a positive amount"):
            await rt["investor"].command("bob", open_standing_cover("bob-other", Decimal(0)))

        await place(rt, "bob", buy("b1", 100, "990"))  # drawn on the cover: it stays closing while b1 rests
        await rt["investor"].command("bob", close_standing_cover(cover))
        with pytest.raises(OrderError, match="is closing; only an active one can be closed"):
            await rt["investor"].command("bob", close_standing_cover(cover))
        with pytest.raises(OrderError, match=f"{cover} is closing"):  # the account stays taken until closed
            await rt["investor"].command("bob", open_standing_cover("bob-cash", Decimal(1_000)))

        sent = await support.rows(
            rt["investor"], "SELECT message_type, count(*) AS n FROM outbox_messages GROUP BY 1 ORDER BY 1"
        )
        assert sent == [
            {"message_type": "order.submit", "n": 1},
            {"message_type": "standing_cover.close", "n": 1},
            {"message_type": "standing_cover.open", "n": 2},
        ]
        statuses = await support.rows(rt["investor"], "SELECT account, status, reason FROM standing_covers ORDER BY 1")
        assert statuses == [
            {"account": "bob-cash", "status": "closing", "reason": None},
            {"account": "bob-other", "status": "refused", "reason": "unknown_account"},
        ]


async def test_the_cli_opens_lists_and_closes_a_standing_cover(settings: Settings) -> None:
    """`kabuto investor standing-cover open|list|close` (docs/cli.md): each sending command waits
    for the answer and exits 0 when accepted, 1 when refused."""
    async with support.agents(settings, *AGENTS) as rt:
        await support.fund(rt["settlement"], "bob", Decimal(100_000))
        code, out, _ = await kabuto(settings, "investor", "standing-cover", "open", "--as", "bob", "bob-cash", "200000")
        assert code == 1 and out.startswith("refused: standing cover ") and "insufficient_funds" in out
        code, out, _ = await kabuto(settings, "investor", "standing-cover", "open", "--as", "bob", "bob-cash", "-5")
        assert code == 1  # a negative amount reaches the command, which refuses it

        code, out, _ = await kabuto(settings, "investor", "standing-cover", "open", "--as", "bob", "bob-cash", "60000")
        assert code == 0 and out.startswith("accepted: standing cover ") and "opened" in out, out
        [row] = await support.rows(rt["investor"], "SELECT cover_id FROM standing_covers WHERE status = 'active'")
        cover = str(row["cover_id"])
        code, out, _ = await kabuto(settings, "investor", "standing-cover", "list", "--as", "bob")
        assert code == 0 and cover in out and "active" in out and "insufficient_funds" in out

        code, out, _ = await kabuto(settings, "investor", "standing-cover", "close", "--as", "bob", cover)
        assert code == 0 and out.startswith(f"accepted: standing cover {cover} closed"), out
        code, out, err = await kabuto(settings, "investor", "standing-cover", "close", "--as", "bob", cover)
        assert code == 1 and "only an active one can be closed" in err


async def test_a_close_the_exchange_refuses_is_recorded_with_its_reason(settings: Settings) -> None:
    """The agent closes only covers it saw opened, once, so a refused close means the exchange's
    record differs from its own: one the exchange holds as not active is already closing or closed
    there (its `standing_cover.closed` settles it), one it does not know frees the account."""
    async with support.agents(settings, *AGENTS) as rt:
        await support.fund(rt["settlement"], "bob", Decimal(1_000_000))
        await rt["settlement"].command("settlement", ledger.open_account("bob-2", "bob"))
        await rt["settlement"].command("settlement", ledger.deposit("bob-2", Decimal(1_000_000), "initial-bob-2"))
        closing, unknown = await opened(rt, "1000"), await opened(rt, "1000", account="bob-2")
        diverged = "UPDATE standing_covers SET status = 'closed' WHERE cover_id = $1"
        await support.rows(rt["exchange"], diverged, closing)
        await support.rows(rt["exchange"], "UPDATE standing_covers SET user_id = 'carol' WHERE cover_id = $1", unknown)

        for cover, reason, status in ((closing, "not_active", "closing"), (unknown, "unknown_cover", "refused")):
            close = await rt["investor"].command("bob", close_standing_cover(cover))
            await rt["investor"].outcomes.wait(answer_to(close, "standing_cover.refused"))
            record = await mine(rt, cover)
            assert (record["status"], record["reason"]) == (status, reason)

        again = await opened(rt, "1000", account="bob-2")  # the cover the exchange does not know left it free
        assert (await mine(rt, again))["status"] == "active"
