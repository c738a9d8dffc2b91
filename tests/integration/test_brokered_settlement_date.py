"""Regular ("4th-day") brokered trades settle their customer legs on the intended settlement date
(issue 11; seed 002 §7.3, R-002-72..77), on the real agents.

The street trade settles at once (the brokerage holds the shares as nominee); the customer's legs
wait for the date (trade date + 3 business days: the 4th business day, ¶0121/¶0129) with the
customer's hold kept and revised to the mismatch-rule allocation (S22). On the date they post; a
customer who cannot pay is a recorded customer fail — never a refused order — that settles once
funded before the cut-off, and past the cut-off the nominee keeps the shares and the debt stays
recorded. Dates are driven with ``settle_due(as_of)`` (``kabuto brokerage settle-due --as-of``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import date, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

from agents.brokerage import deferred
from agents.brokerage.settlement_date import cut_off, settlement_date
from agents.investor.brokered import brokered_order
from agents.settlement import app as ledger
from broker.settings import Settings
from schemas.brokerage import MismatchRule, SettlementType
from schemas.trading import Side
from tests import support
from tests.e2e.test_cli import kabuto, ok
from tests.integration.test_brokered_paths import (
    AGENTS,
    KAMATA,
    OMORI,
    PIN,
    SEED_SPLIT,
    X_MRF,
    Rt,
    amounts,
    assert_ledger_balanced,
    assert_nothing_held,
    brokerage_order,
    customer_alice,
    first,
    investor_order,
    legs,
    postings,
    sent,
    statement,
)

ALICE_ALONE = ((KAMATA, 1_510_500, 1),)  # the whole required amount from Kamata


async def regular_buy(rt: Rt, coid: str, funding: Sequence[tuple[str, int, int]] = SEED_SPLIT) -> UUID:
    """alice buys 5,000 BRK at 300 through X as a regular (4th-day) trade (seed 002 E1, Fig. 4)."""
    return await rt["investor"].command(
        "alice",
        brokered_order(
            coid,
            "IM-0001",
            PIN,
            "x-sec",
            "BRK",
            Side.BUY,
            5000,
            legs(funding),
            price=Decimal(300),
            settlement_type=SettlementType.REGULAR,
        ),
    )


async def awaiting(rt: Rt, coid: str) -> date:
    """The trade statement reached the terminal and the revised hold reached settlement; the date."""
    await first(rt["investor"], "brokerage.trade_statement")
    await first(rt["settlement"], "funds.hold_revise")
    order = await brokerage_order(rt, coid)
    assert order["status"] == "awaiting_settlement_date", order
    due: date = order["settlement_date"]
    # R-002-72: trade date + 3 business days (the 4th business day); the trade date is the day
    # the order was done, the same as the day it was placed unless the test crossed midnight.
    assert due in {settlement_date(order["created_at"].date()), settlement_date(order["updated_at"].date())}
    assert due.weekday() < 5 and due > order["created_at"].date()
    assert order["cut_off"] == cut_off(due)
    return due


async def due_on(rt: Rt, as_of: date) -> int:
    sent_count: int = await rt["brokerage"].command("brokerage", lambda ctx: deferred.settle_due(ctx, as_of))
    return sent_count


async def held(rt: Rt, coid: str) -> dict[str, Decimal]:
    order_id = (await brokerage_order(rt, coid))["order_id"]
    rows = await support.rows(
        rt["settlement"], "SELECT account_id, amount FROM holds WHERE hold_id = $1 AND status = 'placed'", order_id
    )
    return {r["account_id"]: r["amount"] for r in rows}


async def statements_received(rt: Rt, status: str) -> dict[str, Any]:
    """Wait until the terminal handled the brokerage's trade statement with ``status``; its payload."""
    rows = await support.rows(
        rt["brokerage"], "SELECT message_id, body FROM outbox_messages WHERE message_type = 'brokerage.trade_statement'"
    )
    [(message_id, payload)] = [
        (str(r["message_id"]), json.loads(r["body"])["payload"])
        for r in rows
        if json.loads(r["body"])["payload"]["settlement_status"] == status
    ]
    await rt["investor"].outcomes.wait(lambda s: s.message_id == message_id, timeout=30)
    result: dict[str, Any] = payload
    return result


async def positions(rt: Rt) -> list[dict[str, Any]]:
    return await support.rows(rt["brokerage"], "SELECT shares FROM positions WHERE customer_id = 'IM-0001'")


async def test_regular_trade_posts_the_customer_legs_on_the_fourth_business_day_not_before(
    settings: Settings,
) -> None:
    """R-002-72/74/76, seed 002 E1: the ½ allowance (755,250, R-002-35) is held at the order; once
    the settlement information is known the hold is revised to its allocation (1,000,000 / 300,000
    / 210,500); nothing posts the day before the date; on the date the worked example posts
    exactly and the hold is consumed."""
    async with support.agents(settings, *AGENTS) as rt:
        await support.brokerage_market(rt)
        await customer_alice(rt)
        await support.seller_bob(rt)

        await regular_buy(rt, "r-1")
        due = await awaiting(rt, "r-1")

        [placed] = await sent(rt["settlement"], "funds.hold_placed")
        assert sum(Decimal(leg["amount"]) for leg in placed["held"]) == Decimal(755_250)  # R-002-35: ½
        information = await statement(rt, "r-1")
        allocation = amounts(information["customer"])
        assert allocation == {KAMATA: 1_000_000, OMORI: 300_000, X_MRF: 210_500}
        assert await held(rt, "r-1") == allocation  # S22: the hold revised to the allocation
        row = await investor_order(rt, "r-1")
        assert (row["status"], row["settlement_date"], row["settlement_status"]) == (
            "statement",
            due,
            "awaiting_settlement_date",
        )
        assert await positions(rt) == []  # the nominee holds the shares until the customer pays

        assert await due_on(rt, due - timedelta(days=1)) == 0
        assert await postings(rt, "r-1") == {}
        assert (await brokerage_order(rt, "r-1"))["status"] == "awaiting_settlement_date"

        assert await due_on(rt, due) == 1
        await first(rt["investor"], "brokerage.settlement_completed")
        row = await investor_order(rt, "r-1")
        assert (row["status"], row["settlement_status"]) == ("settled", "settled")
        booked = await postings(rt, "r-1")
        assert {a: booked[a] for a in allocation} == {KAMATA: -1_000_000, OMORI: -300_000, X_MRF: -210_500}
        assert (await brokerage_order(rt, "r-1"))["status"] == "settled"
        assert await positions(rt) == [{"shares": 5000}]
        assert await due_on(rt, due) == 0  # settled once, never twice
        await assert_nothing_held(rt)
        await assert_ledger_balanced(rt)


async def test_customer_emptied_before_the_date_is_a_recorded_fail_then_settles_when_funded(
    settings: Settings,
) -> None:
    """R-002-77: alice withdraws everything the ½ hold does not protect before her order fills;
    on the date she cannot pay 1,510,500 — a customer fail (lack_of_cash, amount, date), not a
    refusal, the hold kept — and after a deposit the retry before the cut-off settles."""
    async with support.agents(settings, *AGENTS) as rt:
        await support.brokerage_market(rt)
        await customer_alice(rt)
        sent_id = await regular_buy(rt, "r-2", ALICE_ALONE)
        await first(rt["investor"], "brokerage.order_accepted", "brokerage.order_refused", conversation=sent_id)
        # 2,000,000 less the hold of 755,250 is free: the hold does not protect beyond itself.
        await rt["settlement"].command("settlement", ledger.withdraw(KAMATA, Decimal(1_244_750), "out-kamata"))
        await support.seller_bob(rt)
        due = await awaiting(rt, "r-2")
        assert await held(rt, "r-2") == {KAMATA: Decimal(755_250)}  # revised as far as the balance covers

        assert await due_on(rt, due) == 1
        await first(rt["brokerage"], "funds.brokered_failed")
        failed = await statements_received(rt, "customer_fail")
        assert Decimal(failed["fail_amount"]) == Decimal(1_510_500)
        order = await brokerage_order(rt, "r-2")
        assert (order["status"], order["fail_reason"], order["fail_amount"], order["failed_on"]) == (
            "customer_fail",
            "lack_of_cash",
            Decimal(1_510_500),
            due,
        )
        row = await investor_order(rt, "r-2")
        assert (row["status"], row["settlement_status"]) == ("statement", "customer_fail")
        assert await sent(rt["brokerage"], "brokerage.order_refused") == []
        assert await held(rt, "r-2") == {KAMATA: Decimal(755_250)}  # kept for the retry
        assert await postings(rt, "r-2") == {}
        assert await positions(rt) == []

        listing = await ok(settings, "brokerage", "orders")
        assert "customer_fail" in listing and "lack_of_cash" in listing and due.isoformat() in listing
        code, _, err = await kabuto(settings, "brokerage", "settle-due", "--as-of", "tomorrow")
        assert code == 2 and "--as-of" in err  # a bad date changes nothing
        assert (await brokerage_order(rt, "r-2"))["attempts"] == 1

        await rt["settlement"].command("settlement", ledger.deposit(KAMATA, Decimal(755_250), "top-up"))
        retry = (due + timedelta(days=1)).isoformat()
        assert f"1 customer settlement(s) due on {retry}" in await ok(
            settings, "brokerage", "settle-due", "--as-of", retry
        )
        await first(rt["investor"], "brokerage.settlement_completed")
        row = await investor_order(rt, "r-2")
        assert (row["status"], row["settlement_status"]) == ("settled", "settled")
        assert (await postings(rt, "r-2"))[KAMATA] == -1_510_500
        assert (await brokerage_order(rt, "r-2"))["attempts"] == 2
        assert await positions(rt) == [{"shares": 5000}]
        await assert_nothing_held(rt)
        await assert_ledger_balanced(rt)


async def test_customer_fail_past_the_cut_off_leaves_the_shares_with_the_nominee(settings: Settings) -> None:
    """Past the cut-off the brokerage stops retrying: the hold is freed, the customer is told
    (customer_failed, the amount owed), the shares stay the nominee's and nothing is posted."""
    async with support.agents(settings, *AGENTS) as rt:
        await support.brokerage_market(rt)
        await customer_alice(rt, balances={KAMATA: 800_000})
        await support.seller_bob(rt)
        await regular_buy(rt, "r-3", ALICE_ALONE)
        due = await awaiting(rt, "r-3")
        assert await held(rt, "r-3") == {KAMATA: Decimal(800_000)}

        assert await due_on(rt, due) == 1
        await first(rt["brokerage"], "funds.brokered_failed")
        await statements_received(rt, "customer_fail")
        limit = (await brokerage_order(rt, "r-3"))["cut_off"]
        assert await due_on(rt, limit + timedelta(days=1)) == 0
        await first(rt["settlement"], "funds.hold_release")
        closed = await statements_received(rt, "customer_failed")
        assert Decimal(closed["fail_amount"]) == Decimal(1_510_500)
        order = await brokerage_order(rt, "r-3")
        assert (order["status"], order["fail_amount"]) == ("customer_failed", Decimal(1_510_500))
        row = await investor_order(rt, "r-3")
        assert (row["status"], row["settlement_status"]) == ("statement", "customer_failed")
        assert await sent(rt["brokerage"], "brokerage.order_refused") == []
        assert await postings(rt, "r-3") == {}
        assert await positions(rt) == []
        await assert_nothing_held(rt)
        await assert_ledger_balanced(rt)


async def test_regular_market_buy_costing_more_than_the_balances_is_not_refused(settings: Settings) -> None:
    """R-002-78 rule 2 with R-002-77: a regular market buy fills at 310, above what alice's
    designated accounts can pay today; the excess still goes to the highest priority (she has
    until the date), the order is not refused, and on the date it is a customer fail."""
    async with support.agents(settings, *AGENTS) as rt:
        await support.brokerage_market(rt)
        await customer_alice(rt, balances={KAMATA: 1_000_000, OMORI: 300_000, X_MRF: 210_500})
        await support.seller_bob(rt, price="310")
        await rt["investor"].command(
            "alice",
            brokered_order(
                "r-4",
                "IM-0001",
                PIN,
                "x-sec",
                "BRK",
                Side.BUY,
                5000,
                legs(SEED_SPLIT),
                rule=MismatchRule.DEBIT_HIGH_PRIORITY_FIRST,
                settlement_type=SettlementType.REGULAR,
            ),
        )
        due = await awaiting(rt, "r-4")
        information = await statement(rt, "r-4")
        total = Decimal(information["total"])
        assert Decimal(information["consideration"]) == 1_550_000  # 5,000 × 310
        assert amounts(information["customer"]) == {KAMATA: total - 510_500, OMORI: 300_000, X_MRF: 210_500}
        assert await sent(rt["brokerage"], "brokerage.order_refused") == []

        assert await due_on(rt, due) == 1
        await first(rt["brokerage"], "funds.brokered_failed")
        await statements_received(rt, "customer_fail")
        order = await brokerage_order(rt, "r-4")
        assert (order["status"], order["fail_amount"]) == ("customer_fail", total)
        await assert_ledger_balanced(rt)
