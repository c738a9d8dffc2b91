"""Review probes of the standing cover (commit 8d6462a; docs/dvp.md, "Standing cover").

The invariant under test: what the exchange lets a standing cover draw never exceeds its
amount, and never falls below what settlement earmarked or posted from its hold, whatever path
changes an order or an execution; and a closing cover is released once nothing drawn on it is
live, whichever path ended the last of it. Written by an independent review: the four tests
whose docstrings say "found by review" failed on the reviewed code and pass since the mends.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest
from prometheus_client import REGISTRY

from agents.exchange import standing, standing_repo, trading
from agents.investor.instructions import cancel_instruction
from broker import metrics
from broker.consumer import Outcome
from broker.pki import KeyStore
from broker.runtime import AgentRuntime
from broker.settings import Settings
from kabuto_client import Participant, buy_order, close_standing_cover, open_standing_cover, place
from schemas.dvp import (
    CancelInstruction,
    CloseStandingCover,
    StandingCoverClosed,
    StandingCoverOpened,
    StandingCoverRefused,
)
from schemas.identity import EXCHANGE_ID, SETTLEMENT_ID
from schemas.trading import OrderAccepted, OrderRejected, ReplaceOrder, SubmitOrder, TimeInForce
from tests import support
from tests.integration.conftest import delete_queue, enrol
from tests.integration.test_standing_cover import (
    bought,
    cancel,
    cover_requests,
    drawn,
    drawn_is,
    opened,
    placed_holds,
    status_is,
)
from tests.integration.test_trading_paths import buy, issue, sell
from tests.integration.test_trading_paths import place as place_hosted

Rt = dict[str, AgentRuntime]


def dora_buy(
    dora: Participant, coid: str, quantity: int, price: str | None, tif: TimeInForce = TimeInForce.DAY
) -> SubmitOrder:
    return buy_order(
        dora,
        coid,
        support.ISSUE,
        quantity,
        price=None if price is None else Decimal(price),
        account="dora-cash",
        holder_name="Dora",
        holder_address="2-2 Kabuto-cho, Tokyo",
        time_in_force=tif,
    )


async def status_of(exchange: AgentRuntime, cover_id: UUID) -> str:
    rows = await support.rows(exchange, "SELECT status FROM standing_covers WHERE cover_id = $1", cover_id)
    return str(rows[0]["status"])


async def order_row(exchange: AgentRuntime, coid: str) -> dict[str, Any]:
    rows = await support.rows(
        exchange,
        "SELECT acceptance_number, status, remaining, quantity, price, cover_id, cover_unit, cancel_reason "
        "FROM orders WHERE user_id = 'dora' AND client_order_id = $1",
        coid,
    )
    return rows[0]


async def unspent(settlement: AgentRuntime, cover_id: UUID) -> Decimal:
    rows = await support.rows(settlement, "SELECT unspent FROM covers WHERE cover_id = $1", cover_id)
    return Decimal(rows[0]["unspent"])


async def amount_of(exchange: AgentRuntime, cover_id: UUID) -> Decimal:
    rows = await support.rows(exchange, "SELECT amount FROM standing_covers WHERE cover_id = $1", cover_id)
    return Decimal(rows[0]["amount"])


# --- the draw never exceeds the amount ------------------------------------------------------


async def test_a_buy_order_restored_by_s131_does_not_draw_beyond_the_amount(
    settings: Settings, dora: Participant
) -> None:
    """S131 restores a buy order whose execution filled below its limit. Found by review: the fill
    gave the difference back at once, another order drew it, and the restored shares then drew
    again at the order's limit — 119,900 on a cover of 110,000. An execution now draws its shares
    at the order's limit until it settles, so the room is not there to be drawn and the restore
    moves nothing."""
    async with support.agents(settings, "investor", "exchange", "settlement") as base:
        async with support.agents(settings, "issuer") as issuing:
            rt: Rt = {**base, **issuing}
            await support.open_offering(rt["issuer"])
            await support.list_issue(rt["exchange"])
            await support.fund(rt["settlement"], "alice")
            await support.fund(rt["settlement"], "dora", Decimal(110_000))
            cert_id = await issue(rt, "alice", 100)
            await rt["issuer"].query(
                lambda c: c.execute("UPDATE register SET status = 'retired' WHERE cert_id = $1", cert_id)
            )
        # the issuer is down: settlement's reservation of alice's certificate waits for it
        await place_hosted(base, "alice", sell("s1", 100, cert_id, price="1000"))
        cover = await opened(dora, "110000")
        await bought(dora, "d1", 100, "1100")  # worst case 110,000; trades at 1,000, not settled yet
        await support.eventually(lambda: _unspent_is(base["settlement"], cover, Decimal(10_000)))
        assert await drawn(base["exchange"], cover) == Decimal(110_000)  # unsettled: at the limit
        d2 = await place(dora, dora_buy(dora, "d2", 9, "1100"))  # no room; no free cash for a cover of its own
        assert isinstance(d2.message, OrderRejected) and d2.message.reason == "insufficient_funds"

        async with support.agents(settings, "issuer"):  # the reservation is refused: S131
            await support.eventually(lambda: _restored(base["exchange"]), timeout=20)
        assert (await order_row(base["exchange"], "d1"))["remaining"] == 100
        assert await unspent(base["settlement"], cover) == Decimal(110_000)  # settlement gave its earmark back
        assert await drawn(base["exchange"], cover) == Decimal(110_000)


async def _unspent_is(settlement: AgentRuntime, cover: UUID, value: Decimal) -> bool:
    return await unspent(settlement, cover) == value


async def _restored(exchange: AgentRuntime) -> bool:
    rows = await support.rows(exchange, "SELECT status FROM matches")
    d1 = await order_row(exchange, "d1")
    return rows == [{"status": "failed"}] and d1["status"] == "open"


async def market_buy_above_the_band(rt: Rt, dora: Participant) -> UUID:
    """alice's GTC sell at 1,300 rests from a day with limits 700–1,300; the day closes at 700
    (limits 550–850); dora, with 90,000 and a standing cover of all of it, buys 100 at market."""
    await support.open_offering(rt["issuer"])
    await support.list_issue(rt["exchange"])  # reference 1,000: limits 700–1,300
    for user in ("alice", "bob", "carol"):
        await support.fund(rt["settlement"], user, Decimal(1_000_000))
    await support.fund(rt["settlement"], "dora", Decimal(90_000))
    alice = await issue(rt, "alice", 100)
    await place_hosted(rt, "alice", sell("s1", 100, alice, price="1300", tif=TimeInForce.GTC))
    carol = await issue(rt, "carol", 100)
    await place_hosted(rt, "carol", sell("c1", 100, carol, price="700", user="carol"))
    await place_hosted(rt, "bob", buy("b1", 100, price="700"))  # the day's last trade: 700
    await rt["exchange"].command("exchange", trading.end_of_day)  # reference rolls to 700
    reference = await support.rows(rt["exchange"], "SELECT reference_price FROM instruments")
    assert reference == [{"reference_price": Decimal(700)}]

    cover = await opened(dora, "90000")
    answer = await place(dora, dora_buy(dora, "d1", 100, None))  # a market order: 100 × 850 = 85,000
    assert isinstance(answer.message, OrderAccepted), answer.message
    assert (await order_row(rt["exchange"], "d1"))["cover_unit"] == Decimal(850)
    assert await cover_requests(rt["exchange"]) == 1  # bob's; dora's drew on the standing cover
    return cover


async def test_a_market_buy_does_not_trade_beyond_the_days_upper_limit(settings: Settings, dora: Participant) -> None:
    """A market buy draws quantity × the day's upper price limit, and a GTC sell resting from a day
    whose limits were higher is still on the book after the reference price rolls down. Found by
    review: the market buy traded at 1,300 against a worst case of 850 (drawn 130,000 on a cover of
    90,000), and settlement, counting the short cover's cash twice, began an attempt the ledger
    then refused, leaving the instruction in flight for good. A market order now trades no further
    than the day's limit on its side (seed 002 §9.6), so it meets nothing here and its remainder is
    cancelled; the double count is mended in instructions.plan (tests/unit/test_dvp_instructions.py)."""
    async with support.agents(settings, "investor", "issuer", "exchange", "settlement") as rt:
        cover = await market_buy_above_the_band(rt, dora)
        assert await drawn(rt["exchange"], cover) == 0
        order = await order_row(rt["exchange"], "d1")
        assert (order["status"], order["cancel_reason"]) == ("cancelled", "market_remainder")
        sells = await support.rows(rt["exchange"], "SELECT status FROM orders WHERE client_order_id = 's1'")
        assert sells == [{"status": "open"}]  # alice's sell still rests
        instructions = "SELECT * FROM dvp_instructions WHERE buyer_user_id = 'dora'"
        assert await support.rows(rt["settlement"], instructions) == []
        assert await unspent(rt["settlement"], cover) == Decimal(90_000)


# --- a closing cover is released whichever path ends the last of it ----------------------------


async def test_a_close_that_arrives_while_end_of_day_expires_the_last_order_still_closes(
    settings: Settings, dora: Participant
) -> None:
    """The close of day is a command in its own transaction (``kabuto exchange end-of-day``), run
    beside the exchange's consumer; a close handled meanwhile must not be lost. Found by review:
    each transaction decided on a snapshot without the other's write, and the cover stayed
    closing with its cash held for good; the exchange's close_drained job now releases it."""
    async with support.agents(settings, "exchange", "settlement") as rt:
        await support.list_issue(rt["exchange"])
        account = await support.fund(rt["settlement"], "dora", Decimal(1_000_000))
        cover = await opened(dora, "300000")
        await bought(dora, "d1", 100, "990")

        expired, finish = asyncio.Event(), asyncio.Event()

        async def slow_end_of_day(ctx: object) -> int:
            count = await trading.end_of_day(ctx)  # type: ignore[arg-type]
            expired.set()
            await finish.wait()  # a long close of day: many orders, many issues
            return count

        eod = asyncio.create_task(rt["exchange"].command("exchange", slow_end_of_day))
        await asyncio.wait_for(expired.wait(), 10)
        closing = await dora.send(CloseStandingCover(cover_id=cover), to=EXCHANGE_ID)
        await support.eventually(lambda: status_is(rt["exchange"], cover, "closing"))
        finish.set()
        assert await eod == 1
        assert (await order_row(rt["exchange"], "d1"))["status"] == "cancelled"

        closed_within = standing.CLOSE_SWEEP_EVERY.total_seconds() + 10
        await support.eventually(lambda: status_is(rt["exchange"], cover, "closed"), timeout=closed_within)
        answer = await closing.wait_for("standing_cover.closed", timeout=5)
        assert isinstance(answer.message, StandingCoverClosed)
        await rt["settlement"].outcomes.wait(lambda s: s.type == "settlement.cover.release")
        assert await placed_holds(rt["settlement"], account) == {}


async def test_a_closing_cover_is_released_when_its_last_order_expires_at_the_close_of_day(
    settings: Settings, dora: Participant
) -> None:
    async with support.agents(settings, "exchange", "settlement") as rt:
        await support.list_issue(rt["exchange"])
        account = await support.fund(rt["settlement"], "dora", Decimal(1_000_000))
        cover = await opened(dora, "300000")
        await bought(dora, "d1", 100, "990")
        gtc = await place(dora, dora_buy(dora, "d2", 100, "980", TimeInForce.GTC))
        assert isinstance(gtc.message, OrderAccepted)
        closing = await dora.send(CloseStandingCover(cover_id=cover), to=EXCHANGE_ID)
        await support.eventually(lambda: status_is(rt["exchange"], cover, "closing"))

        assert await rt["exchange"].command("exchange", trading.end_of_day) == 1  # d1 expires, d2 is GTC
        assert await status_of(rt["exchange"], cover) == "closing"
        assert await drawn(rt["exchange"], cover) == Decimal(98_000)
        await cancel(dora, "d2")
        answer = await closing.wait_for("standing_cover.closed")
        assert isinstance(answer.message, StandingCoverClosed)
        assert (answer.message.amount, answer.message.spent) == (Decimal(300_000), Decimal(0))
        await rt["settlement"].outcomes.wait(lambda s: s.type == "settlement.cover.release")
        assert await placed_holds(rt["settlement"], account) == {}


async def test_a_closing_cover_is_released_when_its_last_trade_settles(settings: Settings, dora: Participant) -> None:
    """The order rests when the close comes, fills below its limit afterwards, and the cover is
    released once the trade settled: spent is the trade's cash, and settlement's hold agreed."""
    async with support.agents(settings, "investor", "issuer", "exchange", "settlement") as rt:
        await support.open_offering(rt["issuer"])
        await support.list_issue(rt["exchange"])
        await support.fund(rt["settlement"], "alice")
        account = await support.fund(rt["settlement"], "dora", Decimal(500_000))
        cover = await opened(dora, "500000")
        await bought(dora, "d1", 300, "1100")  # 330,000 drawn
        closing = await dora.send(CloseStandingCover(cover_id=cover), to=EXCHANGE_ID)
        await support.eventually(lambda: status_is(rt["exchange"], cover, "closing"))

        cert_id = await issue(rt, "alice", 300)
        await place_hosted(rt, "alice", sell("s1", 300, cert_id, price="1050"))  # trades at dora's 1,100
        answer = await closing.wait_for("standing_cover.closed", timeout=30)
        assert isinstance(answer.message, StandingCoverClosed)
        assert (answer.message.amount, answer.message.spent) == (Decimal(500_000), Decimal(330_000))
        await rt["settlement"].outcomes.wait(lambda s: s.type == "settlement.cover.release")
        assert await placed_holds(rt["settlement"], account) == {}
        assert await unspent(rt["settlement"], cover) == Decimal(170_000)  # what was not spent, freed
        balance = await support.rows(
            rt["settlement"], "SELECT sum(amount) AS b FROM postings WHERE account_id = 'dora-cash'"
        )
        assert Decimal(balance[0]["b"]) == Decimal(170_000)


async def test_only_a_closing_cover_is_looked_at_when_a_trade_ends_and_it_closes_then_without_the_sweep(
    settings: Settings, dora: Participant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 8: the trade's end read whether the buyer's standing cover is closing with the orders
    it completes (order_repo.complete), and asks to close it only then: a trade on an active cover
    (most trades) ran a close statement that could change nothing. A closing cover still closes
    at its last trade's end, in that transaction: the sweep that would also close it is off here."""
    monkeypatch.setattr(standing, "CLOSE_SWEEP_EVERY", timedelta(hours=1))
    close_text = {"agent": "exchange", "statement": metrics.statement_text(standing_repo.CLOSE_IF_DONE)}
    before = REGISTRY.get_sample_value("kabuto_db_statement_texts_total", close_text) or 0.0
    census = settings.with_(statement_census=True)
    async with support.agents(census, "investor", "issuer", "exchange", "settlement") as rt:
        await support.open_offering(rt["issuer"])
        await support.list_issue(rt["exchange"])
        await support.fund(rt["settlement"], "alice")
        await support.fund(rt["settlement"], "dora", Decimal(1_000_000))
        cover = await opened(dora, "700000")
        await bought(dora, "d1", 300, "1100")
        cert_id = await issue(rt, "alice", 300)
        await place_hosted(rt, "alice", sell("s1", 300, cert_id, price="1050"))
        await support.eventually(lambda: _completed(rt["exchange"], 1), timeout=20)
        after_active = REGISTRY.get_sample_value("kabuto_db_statement_texts_total", close_text) or 0.0
        assert after_active == before  # the cover is active: nothing to close, nothing asked

        await bought(dora, "d2", 300, "1100")
        closing = await dora.send(CloseStandingCover(cover_id=cover), to=EXCHANGE_ID)
        await support.eventually(lambda: status_is(rt["exchange"], cover, "closing"))
        cert_id = await issue(rt, "alice", 300)
        await place_hosted(rt, "alice", sell("s2", 300, cert_id, price="1050"))
        answer = await closing.wait_for("standing_cover.closed", timeout=30)
        assert isinstance(answer.message, StandingCoverClosed)
        assert (answer.message.amount, answer.message.spent) == (Decimal(700_000), Decimal(660_000))


async def _completed(exchange: AgentRuntime, count: int) -> bool:
    rows = await support.rows(exchange, "SELECT count(*) AS n FROM matches WHERE status = 'completed'")
    return rows == [{"n": count}]


async def test_a_trade_cancelled_by_both_parties_gives_its_cash_back_and_the_closing_cover_closes(
    settings: Settings, dora: Participant
) -> None:
    """The reversed path (settling._reversed): settlement puts the earmark back on the standing
    cover (_unwind), the exchange stops drawing the execution, and the closing cover is released
    with nothing spent. The trade waits, pending: alice's CertID is held reserved for another
    instruction (a retryable refusal), so the cancel by both applies at once."""
    async with support.agents(settings, "investor", "issuer", "exchange", "settlement") as rt:
        await support.open_offering(rt["issuer"])
        await support.list_issue(rt["exchange"])
        await support.fund(rt["settlement"], "alice")
        account = await support.fund(rt["settlement"], "dora", Decimal(500_000))
        cert_id = await issue(rt, "alice", 100)
        await place_hosted(rt, "alice", sell("s1", 100, cert_id, price="1000"))
        await support.rows(
            rt["issuer"],
            "INSERT INTO reservations (instruction, attempt, cert_id, shares, request, status) "
            "VALUES (999, 1, $1, 100, '{}', 'reserved')",
            cert_id,
        )
        cover = await opened(dora, "200000")
        await bought(dora, "d1", 100, "1100")  # trades at 1,000
        [match] = await support.rows(rt["exchange"], "SELECT matching_number FROM matches")
        number = match["matching_number"]
        await support.eventually(lambda: _pending(rt["settlement"], number, "lack_of_securities"))
        closing = await dora.send(CloseStandingCover(cover_id=cover), to=EXCHANGE_ID)
        await support.eventually(lambda: status_is(rt["exchange"], cover, "closing"))
        await dora.send(CancelInstruction(instruction=number), to=SETTLEMENT_ID)
        await rt["investor"].command("alice", cancel_instruction(number))

        answer = await closing.wait_for("standing_cover.closed", timeout=30)
        assert isinstance(answer.message, StandingCoverClosed)
        assert (answer.message.amount, answer.message.spent) == (Decimal(200_000), Decimal(0))
        assert await drawn(rt["exchange"], cover) == 0
        assert await support.rows(rt["exchange"], "SELECT status FROM matches") == [{"status": "failed"}]
        [instruction] = await support.rows(rt["settlement"], "SELECT processing, reason FROM dvp_instructions")
        assert instruction == {"processing": "cancelled", "reason": "cancelled_by_party"}
        await rt["settlement"].outcomes.wait(lambda s: s.type == "settlement.cover.release")
        assert await unspent(rt["settlement"], cover) == Decimal(200_000)
        assert await placed_holds(rt["settlement"], account) == {}
        assert await balance_of(rt["settlement"], account) == Decimal(500_000)


async def _pending(settlement: AgentRuntime, number: int, reason: str) -> bool:
    rows = await support.rows(
        settlement,
        "SELECT true FROM dvp_instructions WHERE matching_number = $1 AND reason = $2 AND NOT in_flight",
        number,
        reason,
    )
    return bool(rows)


async def test_a_cancel_by_both_parties_while_the_delivery_is_out_comes_too_late_and_the_trade_settles(
    settings: Settings, dora: Participant
) -> None:
    """docs/dvp.md, "Delivery against earmarked cash": both parties ask to cancel while the
    issuer, down, has not answered the delivery; the cancel waits for the answer, and the answer
    is that the names were transferred, so the trade settles — nothing can undo the securities
    leg, and the earmarked cash is posted. The closing cover closes with the trade spent."""
    async with support.agents(settings, "investor", "exchange", "settlement") as base:
        async with support.agents(settings, "issuer") as issuing:
            rt: Rt = {**base, **issuing}
            await support.open_offering(rt["issuer"])
            await support.list_issue(rt["exchange"])
            await support.fund(rt["settlement"], "alice")
            account = await support.fund(rt["settlement"], "dora", Decimal(500_000))
            cert_id = await issue(rt, "alice", 100)
        await place_hosted(base, "alice", sell("s1", 100, cert_id, price="1000"))
        cover = await opened(dora, "200000")
        await bought(dora, "d1", 100, "1100")  # trades at 1,000
        await support.eventually(lambda: _unspent_is(base["settlement"], cover, Decimal(100_000)))
        closing = await dora.send(CloseStandingCover(cover_id=cover), to=EXCHANGE_ID)
        await support.eventually(lambda: status_is(base["exchange"], cover, "closing"))
        [match] = await support.rows(base["exchange"], "SELECT matching_number FROM matches")
        number = match["matching_number"]
        await dora.send(CancelInstruction(instruction=number), to=SETTLEMENT_ID)
        await base["investor"].command("alice", cancel_instruction(number))
        await support.eventually(lambda: _both_cancelled(base["settlement"], number))

        async with support.agents(settings, "issuer"):
            answer = await closing.wait_for("standing_cover.closed", timeout=30)
        assert isinstance(answer.message, StandingCoverClosed)
        assert (answer.message.amount, answer.message.spent) == (Decimal(200_000), Decimal(100_000))
        assert await support.rows(base["exchange"], "SELECT status FROM matches") == [{"status": "completed"}]
        [instruction] = await support.rows(
            base["settlement"], "SELECT processing, settlement, settled_amount FROM dvp_instructions"
        )
        assert instruction == {"processing": "accepted", "settlement": "settled", "settled_amount": Decimal(100_000)}
        await base["settlement"].outcomes.wait(lambda s: s.type == "settlement.cover.release")
        assert await placed_holds(base["settlement"], account) == {}
        assert await balance_of(base["settlement"], account) == Decimal(400_000)


async def balance_of(settlement: AgentRuntime, account: str) -> Decimal:
    postings = await support.rows(
        settlement, "SELECT coalesce(sum(amount), 0) AS b FROM postings WHERE account_id = $1", account
    )
    return Decimal(postings[0]["b"])


async def _both_cancelled(settlement: AgentRuntime, number: int) -> bool:
    rows = await support.rows(
        settlement,
        "SELECT cancel_by_buyer AND cancel_by_seller AS both FROM dvp_instructions WHERE matching_number = $1",
        number,
    )
    return bool(rows == [{"both": True}])


# --- orders and executions that change the draw ---------------------------------------------


async def replace(dora: Participant, coid: str, new: str, quantity: int, price: str) -> Any:
    request = ReplaceOrder(client_order_id=coid, new_client_order_id=new, quantity=quantity, price=Decimal(price))
    answer = await dora.request(request, to=EXCHANGE_ID, expect=("order.accepted", "order.rejected"))
    return answer.message


async def test_a_replacement_keeps_the_draw_within_the_cover_and_a_refused_one_changes_nothing(
    settings: Settings, dora: Participant
) -> None:
    async with support.agents(settings, "exchange", "settlement") as rt:
        await support.list_issue(rt["exchange"])
        await support.fund(rt["settlement"], "dora", Decimal(1_000_000))
        cover = await opened(dora, "100000")
        await bought(dora, "d1", 100, "990")
        assert await drawn(rt["exchange"], cover) == Decimal(99_000)

        assert isinstance(await replace(dora, "d1", "d1a", 60, "990"), OrderAccepted)  # keeps priority
        assert await drawn(rt["exchange"], cover) == Decimal(59_400)

        assert isinstance(await replace(dora, "d1a", "d1b", 60, "950"), OrderAccepted)  # a new order
        new = await order_row(rt["exchange"], "d1b")
        assert (new["status"], new["cover_id"], new["remaining"]) == ("open", cover, 60)
        # the replacement keeps the worst price it drew at (990, not 950): never less than it can cost
        assert await drawn(rt["exchange"], cover) == 60 * Decimal(new["cover_unit"])
        assert Decimal(new["cover_unit"]) >= Decimal(950)

        before = await support.rows(rt["exchange"], "SELECT * FROM orders ORDER BY acceptance_number")
        raised = await replace(dora, "d1b", "d1c", 200, "950")  # would draw past the cover
        assert isinstance(raised, OrderRejected) and raised.reason == "cover_required"
        assert await support.rows(rt["exchange"], "SELECT * FROM orders ORDER BY acceptance_number") == before
        assert await drawn(rt["exchange"], cover) == 60 * Decimal(new["cover_unit"])

        await cancel(dora, "d1b")
        assert await drawn(rt["exchange"], cover) == 0


async def test_partial_fills_below_the_limit_ioc_and_fok_draw_only_what_traded(
    settings: Settings, dora: Participant
) -> None:
    async with support.agents(settings, "investor", "issuer", "exchange", "settlement") as rt:
        await support.open_offering(rt["issuer"])
        await support.list_issue(rt["exchange"])
        await support.fund(rt["settlement"], "alice")
        await support.fund(rt["settlement"], "dora", Decimal(1_000_000))
        cert_id = await issue(rt, "alice", 100)
        await place_hosted(rt, "alice", sell("s1", 100, cert_id, price="1000"))
        cover = await opened(dora, "600000")

        fok = await place(dora, dora_buy(dora, "d0", 200, "1100", TimeInForce.FOK))  # not fillable
        assert isinstance(fok.message, OrderAccepted)
        assert await drawn(rt["exchange"], cover) == 0
        ioc = await place(dora, dora_buy(dora, "d1", 300, "1100", TimeInForce.IOC))  # 100 fill at 1,000
        assert isinstance(ioc.message, OrderAccepted)
        assert (await order_row(rt["exchange"], "d1"))["status"] == "cancelled"
        # the fill draws 100 × 1,100 until it settles, then its 100,000
        assert await drawn(rt["exchange"], cover) in (Decimal(110_000), Decimal(100_000))
        await support.eventually(lambda: _settled_count(rt["settlement"], 1), timeout=20)
        await support.eventually(lambda: drawn_is(rt["exchange"], cover, Decimal(100_000)))
        assert await unspent(rt["settlement"], cover) == Decimal(500_000)
        assert await cover_requests(rt["exchange"]) == 0


async def _settled_count(settlement: AgentRuntime, count: int) -> bool:
    rows = await support.rows(settlement, "SELECT count(*) AS n FROM dvp_instructions WHERE settlement = 'settled'")
    return bool(rows[0]["n"] == count)


async def test_orders_sent_together_in_one_batch_never_draw_past_the_amount(
    settings: Settings, dora: Participant
) -> None:
    """Ten orders in flight at once (group commit hands them to the exchange in batches): the
    cover draws as many as it has room for, and the rest take a cover of their own."""
    async with support.agents(settings, "exchange", "settlement") as rt:
        await support.list_issue(rt["exchange"])
        await support.fund(rt["settlement"], "dora", Decimal(2_000_000))
        cover = await opened(dora, "350000")
        conversations = [await dora.send(dora_buy(dora, f"b{i}", 100, "1000"), to=EXCHANGE_ID) for i in range(10)]
        for conversation in conversations:
            answer = await conversation.wait_for("order.accepted", "order.rejected", timeout=30)
            assert isinstance(answer.message, OrderAccepted), answer.message
        rows = await support.rows(
            rt["exchange"], "SELECT count(*) AS n FROM orders WHERE user_id = 'dora' AND cover_unit IS NOT NULL"
        )
        assert rows == [{"n": 3}]
        assert await drawn(rt["exchange"], cover) == Decimal(300_000)
        assert await cover_requests(rt["exchange"]) == 7


async def test_a_redelivered_order_draws_once(settings: Settings, dora: Participant) -> None:
    async with support.agents(settings, "exchange", "settlement") as rt:
        await support.list_issue(rt["exchange"])
        await support.fund(rt["settlement"], "dora", Decimal(1_000_000))
        cover = await opened(dora, "300000")
        sealed = dora.seal(dora_buy(dora, "d1", 100, "990"), to=EXCHANGE_ID)
        await dora.publish(sealed)
        await dora.publish(sealed)  # the same message again, as after a lost ack
        key = str(sealed.envelope.message_id)
        outcomes = await rt["exchange"].outcomes.wait_count(lambda s: s.message_id == key, 2)
        assert sorted(o.outcome for o in outcomes) == [Outcome.DUPLICATE, Outcome.PROCESSED]
        rows = await support.rows(rt["exchange"], "SELECT count(*) AS n FROM orders WHERE user_id = 'dora'")
        assert rows == [{"n": 1}]
        assert await drawn(rt["exchange"], cover) == Decimal(99_000)
        again = await place(dora, dora_buy(dora, "d1", 100, "990"))  # resubmitted under a new message id
        assert isinstance(again.message, OrderAccepted)
        assert await drawn(rt["exchange"], cover) == Decimal(99_000)


# --- refusals --------------------------------------------------------------------------------


async def test_someone_elses_close_is_refused_and_a_closed_box_can_be_opened_again(
    settings: Settings, dora: Participant, keys: KeyStore
) -> None:
    enrol(keys, "erin")
    async with (
        support.agents(settings, "exchange", "settlement") as rt,
        Participant.enrolled(settings.amqp_url, keys.root, "erin", namespace=settings.namespace) as erin,
    ):
        try:
            await support.list_issue(rt["exchange"])
            account = await support.fund(rt["settlement"], "dora", Decimal(1_000_000))
            cover = await opened(dora, "300000")
            await bought(dora, "d1", 100, "990")
            before = await support.rows(rt["exchange"], "SELECT * FROM standing_covers")

            stranger = await close_standing_cover(erin, cover)
            assert isinstance(stranger.message, StandingCoverRefused)
            assert stranger.message.reason == "unknown_cover"
            assert await support.rows(rt["exchange"], "SELECT * FROM standing_covers") == before
            assert await drawn(rt["exchange"], cover) == Decimal(99_000)

            await cancel(dora, "d1")
            closed = await close_standing_cover(dora, cover)
            assert isinstance(closed.message, StandingCoverClosed)
            again = await open_standing_cover(dora, "dora-cash", Decimal(100_000))  # the same box
            assert isinstance(again.message, StandingCoverOpened)
            await rt["settlement"].outcomes.wait(lambda s: s.type == "settlement.cover.release")
            assert await placed_holds(rt["settlement"], account) == {"standing": Decimal(100_000)}
            second = await bought(dora, "d2", 100, "990")
            assert (await order_row(rt["exchange"], "d2"))["cover_id"] == again.message.cover_id
            assert second > 0 and await cover_requests(rt["exchange"]) == 0
            assert uuid.UUID(str(again.message.cover_id)) != cover
        finally:
            await delete_queue(settings, "erin")


async def test_an_order_and_a_close_sent_together_are_taken_in_order(settings: Settings, dora: Participant) -> None:
    """Sent back to back they reach the exchange in one batch: the order draws, the close then
    waits for it; an order sent after the close takes a cover of its own."""
    async with support.agents(settings, "exchange", "settlement") as rt:
        await support.list_issue(rt["exchange"])
        account = await support.fund(rt["settlement"], "dora", Decimal(1_000_000))
        cover = await opened(dora, "300000")
        first = await dora.send(dora_buy(dora, "d1", 100, "990"), to=EXCHANGE_ID)
        closing = await dora.send(CloseStandingCover(cover_id=cover), to=EXCHANGE_ID)
        after = await dora.send(dora_buy(dora, "d2", 100, "990"), to=EXCHANGE_ID)
        for conversation in (first, after):
            answer = await conversation.wait_for("order.accepted", "order.rejected", timeout=30)
            assert isinstance(answer.message, OrderAccepted), answer.message
        assert (await order_row(rt["exchange"], "d1"))["cover_id"] == cover
        assert (await order_row(rt["exchange"], "d2"))["cover_unit"] is None
        assert await status_of(rt["exchange"], cover) == "closing"
        await cancel(dora, "d1")
        answer = await closing.wait_for("standing_cover.closed")
        assert isinstance(answer.message, StandingCoverClosed) and answer.message.spent == 0
        await rt["settlement"].outcomes.wait(lambda s: s.type == "settlement.cover.release")
        assert await placed_holds(rt["settlement"], account) == {"order": Decimal(99_000)}  # d2's own


async def test_the_drift_check_sees_a_change_that_bypassed_the_triggers(settings: Settings, dora: Participant) -> None:
    async with support.agents(settings, "exchange", "settlement") as rt:
        await support.list_issue(rt["exchange"])
        await support.fund(rt["settlement"], "dora", Decimal(1_000_000))
        cover = await opened(dora, "300000")
        await bought(dora, "d1", 100, "990")
        assert await rt["exchange"].query(standing_repo.drawn_drift) == []
        bogus = "INSERT INTO standing_cover_drawn_changes (cover_id, change) VALUES ($1, $2)"
        await rt["exchange"].query(lambda c: c.execute(bogus, cover, Decimal(1)))
        drift: list[Any] = await rt["exchange"].query(standing_repo.drawn_drift)
        assert drift == [(cover, Decimal(99_001), Decimal(99_000))]
        await rt["exchange"].query(lambda c: c.execute(bogus, cover, Decimal(-1)))  # leave no drift behind
        assert await rt["exchange"].query(standing_repo.drawn_drift) == []
