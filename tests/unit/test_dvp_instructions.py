"""Delivery versus payment decisions at settlement, no services (issue 11, docs/dvp.md; R-001-41, R-001-42).

Cover at order entry, an instruction's validation, the plan of each attempt (cover first, then
the buyer's available cash, partial only where allowed), refusals, recycling to the cut-off,
cancellation by both parties, and the trade completion notice presented to settlement.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import date
from decimal import Decimal
from typing import Any

import pytest

from agents.settlement import instructions as decide
from agents.settlement.domain import Account, AccountKind
from agents.settlement.instructions import Attempt, Cover, Fail, Instruction, Wait
from schemas.dvp import (
    CoverRefusal,
    CoverRequest,
    DvpReason,
    PresentTradeNotice,
    ProcessingStatus,
    SettlementStatus,
    StandingCoverRequest,
)
from schemas.trading import Side
from tests import support

TODAY = date(2026, 12, 1)
ALICE = Account("alice-cash", "alice", "JPY", balance=Decimal(1_000_000))
BOB = Account("bob-cash", "bob", "JPY", balance=Decimal(0))
COVER_ID = uuid.uuid4()


def instruction(**changes: Any) -> Instruction:
    values: dict[str, Any] = dict(
        matching_number=7,
        trade_date=TODAY,
        intended_settlement_date=TODAY,
        issue_code="KBT",
        quantity=500,
        price=Decimal(1200),
        amount=Decimal(600_000),
        currency="JPY",
        buyer_user_id="alice",
        buyer_account="alice-cash",
        seller_user_id="bob",
        seller_account="bob-cash",
        cover_id=None,
        partial_allowed=False,
        leg_agent="issuer",
    )
    values.update(changes)
    return Instruction(**values)


def accepted(**changes: Any) -> Instruction:
    return replace(instruction(**changes), processing=ProcessingStatus.ACCEPTED)


def cover(remaining: int = 500, unit: str = "1300", active: bool = True) -> Cover:
    return Cover(COVER_ID, "alice", "alice-cash", remaining, Decimal(unit), active)


def cover_request(**changes: Any) -> CoverRequest:
    values: dict[str, Any] = dict(
        cover_id=COVER_ID,
        user_id="alice",
        account=support.box("alice-cash"),
        client_order_id="b1",
        quantity=500,
        unit_price=Decimal(1300),
        amount=Decimal(650_000),
    )
    values.update(changes)
    return CoverRequest(**values)


# -- cover ---------------------------------------------------------------------------------------


def test_issue_11_a_cover_within_the_available_cash_is_granted() -> None:
    assert decide.cover_refusal(cover_request(), ALICE, Decimal(650_000)) is None


@pytest.mark.parametrize(
    ("account", "available", "reason"),
    [
        (None, Decimal(10**7), CoverRefusal.UNKNOWN_ACCOUNT),
        (BOB, Decimal(10**7), CoverRefusal.ACCOUNT_NOT_OWNED),
        (Account("alice-usd", "alice", "USD", balance=Decimal(10**7)), Decimal(10**7), CoverRefusal.CURRENCY_MISMATCH),
        (ALICE, Decimal(649_999), CoverRefusal.INSUFFICIENT_FUNDS),
        (
            Account("external:deposits", "settlement", "JPY", AccountKind.EXTERNAL),
            Decimal(10**7),
            CoverRefusal.UNKNOWN_ACCOUNT,
        ),
    ],
)
def test_issue_11_an_uncovered_buy_is_refused_with_a_reason(
    account: Account | None, available: Decimal, reason: CoverRefusal
) -> None:
    refusal = decide.cover_refusal(cover_request(), account, available)
    assert refusal is not None and refusal[0] is reason


def test_an_insufficient_funds_detail_does_not_reveal_the_balance() -> None:
    refusal = decide.cover_refusal(cover_request(), ALICE, Decimal(123_456))
    assert refusal is not None and "123,456" not in refusal[1] and "123456" not in refusal[1]


def test_a_cover_whose_amount_is_not_quantity_times_price_is_refused() -> None:
    refusal = decide.cover_refusal(cover_request(amount=Decimal(1)), ALICE, Decimal(10**7))
    assert refusal is not None and refusal[0] is CoverRefusal.INSUFFICIENT_FUNDS


def test_a_cover_holds_its_remaining_shares_at_the_worst_price() -> None:
    assert cover(200).held == Decimal(260_000)
    assert cover(200, active=False).held == 0


# -- validation ----------------------------------------------------------------------------------


def test_r_001_41_a_consistent_instruction_is_accepted_and_matched() -> None:
    checked = decide.validate(instruction(), ALICE, BOB)
    assert checked.processing is ProcessingStatus.ACCEPTED and checked.live
    assert checked.status().matching.value == "matched"


@pytest.mark.parametrize(
    ("changes", "buyer", "seller", "reason"),
    [
        ({"amount": Decimal(1)}, ALICE, BOB, DvpReason.AMOUNT_MISMATCH),
        ({}, None, BOB, DvpReason.UNKNOWN_ACCOUNT),
        ({}, ALICE, None, DvpReason.UNKNOWN_ACCOUNT),
        ({"buyer_user_id": "carol"}, ALICE, BOB, DvpReason.ACCOUNT_NOT_OWNED),
        ({"seller_user_id": "carol"}, ALICE, BOB, DvpReason.ACCOUNT_NOT_OWNED),
        ({"currency": "USD"}, ALICE, BOB, DvpReason.CURRENCY_MISMATCH),
        ({"seller_user_id": "alice", "seller_account": "alice-cash"}, ALICE, ALICE, DvpReason.ACCOUNT_NOT_OWNED),
    ],
)
def test_r_001_41_an_inconsistent_instruction_is_rejected_with_its_reason(
    changes: dict[str, Any], buyer: Account | None, seller: Account | None, reason: DvpReason
) -> None:
    checked = decide.validate(instruction(**changes), buyer, seller)
    assert (checked.processing, checked.settlement, checked.reason) == (
        ProcessingStatus.REJECTED,
        SettlementStatus.FAILED,
        reason,
    )
    assert not checked.live


# -- attempts ------------------------------------------------------------------------------------


def test_issue_11_the_cash_comes_from_the_cover_first() -> None:
    plan = decide.plan(accepted(cover_id=COVER_ID), cover(), Decimal(0), TODAY)
    assert plan == Attempt(1, 500, Decimal(600_000), 500)


def test_without_a_cover_the_buyers_available_cash_pays() -> None:
    assert decide.plan(accepted(), None, Decimal(600_000), TODAY) == Attempt(1, 500, Decimal(600_000), 0)


def test_issue_11_lack_of_cash_waits_and_says_so() -> None:
    plan = decide.plan(accepted(), None, Decimal(599_999), TODAY)
    assert isinstance(plan, Wait) and plan.reason is DvpReason.LACK_OF_CASH


def test_issue_11_partial_settlement_takes_what_the_cash_allows_where_allowed() -> None:
    plan = decide.plan(accepted(partial_allowed=True), None, Decimal(250_000), TODAY)
    assert plan == Attempt(1, 208, Decimal(249_600), 0)
    after = decide.settled(decide.started(accepted(partial_allowed=True), plan), plan.quantity, plan.amount)
    assert (after.settlement, after.settled_quantity, after.open_quantity) == (
        SettlementStatus.PARTIALLY_SETTLED,
        208,
        292,
    )
    assert after.live and after.reason is DvpReason.LACK_OF_CASH


def test_a_cover_of_another_account_or_released_is_not_used() -> None:
    other = replace(cover(), account_id="alice-other")
    assert isinstance(decide.plan(accepted(cover_id=COVER_ID), other, Decimal(0), TODAY), Wait)
    assert isinstance(decide.plan(accepted(cover_id=COVER_ID), cover(active=False), Decimal(0), TODAY), Wait)


def standing(unspent: str = "1000000", active: bool = True) -> Cover:
    return Cover(COVER_ID, "alice", "alice-cash", 0, Decimal(1_000_000), active, Decimal(unspent))


def test_a_standing_cover_pays_any_trade_at_its_own_price_and_holds_what_is_unspent() -> None:
    """docs/dvp.md, "Standing cover": cash, not shares; each trade takes quantity × its price."""
    plan = decide.plan(accepted(cover_id=COVER_ID), standing(), Decimal(0), TODAY)
    assert plan == Attempt(1, 500, Decimal(600_000), 500)
    after = standing().taken(plan.from_cover, Decimal(1200))
    assert (after.unspent, after.held) == (Decimal(400_000), Decimal(400_000))
    assert after.given_back(plan.from_cover, Decimal(1200)) == standing()
    assert standing(active=False).held == 0


def test_what_a_standing_cover_lacks_comes_from_the_free_balance_or_the_trade_waits() -> None:
    short = standing("599999")  # 499 shares at 1,200
    assert short.shares_for(500, Decimal(1200)) == 499
    # ``available`` counts the cover's cash too (its hold is excluded): only what is beyond it is free
    plan = decide.plan(accepted(cover_id=COVER_ID), short, Decimal(599_999 + 1200), TODAY)
    assert plan == Attempt(1, 500, Decimal(600_000), 499)
    waits = decide.plan(accepted(cover_id=COVER_ID), short, Decimal(599_999 + 1199), TODAY)
    assert isinstance(waits, Wait) and waits.reason is DvpReason.LACK_OF_CASH
    # the review's case: everything the account has is in the cover, the trade costs more
    alone = decide.plan(accepted(cover_id=COVER_ID), standing("90000"), Decimal(90_000), TODAY)
    assert isinstance(alone, Wait) and alone.reason is DvpReason.LACK_OF_CASH


def test_a_standing_cover_refusal_checks_the_account_but_not_a_share_count() -> None:
    request = StandingCoverRequest(cover_id=COVER_ID, user_id="alice", account=support.box(), amount=Decimal(500_000))
    assert decide.cover_refusal(request, ALICE, Decimal(500_000)) is None
    refusal = decide.cover_refusal(request, ALICE, Decimal(499_999))
    assert refusal is not None and refusal[0] is CoverRefusal.INSUFFICIENT_FUNDS
    assert "standing cover" in refusal[1] and "499" not in refusal[1]


def test_an_instruction_waits_for_its_intended_settlement_date() -> None:
    later = accepted(intended_settlement_date=date(2026, 12, 7))
    plan = decide.plan(later, None, Decimal(10**7), TODAY)
    assert isinstance(plan, Wait) and plan.reason is DvpReason.AWAITING_SETTLEMENT_DATE


def test_a_retryable_refusal_keeps_it_pending_and_a_final_one_fails_it() -> None:
    started = decide.started(accepted(), Attempt(1, 500, Decimal(600_000), 0))
    pending = decide.refused(started, DvpReason.LACK_OF_SECURITIES, "short", retryable=True)
    assert (pending.settlement, pending.reason, pending.in_flight) == (
        SettlementStatus.PENDING,
        DvpReason.LACK_OF_SECURITIES,
        False,
    )
    failed = decide.refused(started, DvpReason.SECURITIES_INVALID, "bad", retryable=False)
    assert failed.settlement is SettlementStatus.FAILED and not failed.live


def test_recycling_stops_at_the_cut_off() -> None:
    pending = accepted()
    assert decide.recycle(pending, date(2026, 12, 3), 2) is None
    failure = decide.recycle(pending, date(2026, 12, 4), 2)
    assert failure is not None and failure.reason is DvpReason.PAST_CUT_OFF
    ended = decide.failed(pending, failure)
    assert (ended.settlement, ended.reason) == (SettlementStatus.FAILED, DvpReason.PAST_CUT_OFF)


# -- cancellation --------------------------------------------------------------------------------


def test_a_matched_instruction_is_cancelled_only_when_both_parties_asked() -> None:
    once = decide.ask_cancel(accepted(), "alice")
    assert isinstance(once, Instruction) and decide.cancel_due(once) is None
    twice = decide.ask_cancel(once, "bob")
    assert isinstance(twice, Instruction)
    due = decide.cancel_due(twice)
    assert due == Fail(DvpReason.CANCELLED_BY_PARTY, "cancelled by both parties")
    cancelled = decide.failed(twice, due)
    assert (cancelled.processing, cancelled.settlement) == (ProcessingStatus.CANCELLED, SettlementStatus.FAILED)


def test_a_cancel_waits_while_a_reservation_is_outstanding() -> None:
    both = replace(accepted(), cancel_by_buyer=True, cancel_by_seller=True, in_flight=True)
    assert decide.cancel_due(both) is None
    assert decide.cancel_due(replace(both, in_flight=False)) is not None


def test_a_stranger_cannot_cancel_and_nobody_cancels_a_settled_instruction() -> None:
    assert decide.ask_cancel(accepted(), "carol") is DvpReason.UNKNOWN_INSTRUCTION
    settled = replace(accepted(), settlement=SettlementStatus.SETTLED)
    assert decide.ask_cancel(settled, "alice") is DvpReason.NOT_CANCELLABLE
    assert isinstance(decide.ask_cancel(accepted(), "operator", operator=True), Instruction)


# -- R-001-42 ------------------------------------------------------------------------------------


def notice(**changes: Any) -> PresentTradeNotice:
    values: dict[str, Any] = dict(
        matching_number=7, side=Side.BUY, issue_code="KBT", quantity=500, price=Decimal(1200), amount=Decimal(600_000)
    )
    values.update(changes)
    return PresentTradeNotice(**values)


def test_r_001_42_a_partys_true_notice_is_verified() -> None:
    assert decide.notice_reason(accepted(), notice(), "alice") is None
    assert decide.notice_reason(accepted(), notice(side=Side.SELL), "bob") is None


def test_r_001_42_a_wrong_notice_or_someone_elses_trade_is_not() -> None:
    assert decide.notice_reason(None, notice(), "alice") is DvpReason.UNKNOWN_INSTRUCTION
    assert decide.notice_reason(accepted(), notice(), "carol") is DvpReason.UNKNOWN_INSTRUCTION
    assert decide.notice_reason(accepted(), notice(side=Side.SELL), "alice") is DvpReason.UNKNOWN_INSTRUCTION
    assert decide.notice_reason(accepted(), notice(quantity=499), "alice") is DvpReason.NOTICE_MISMATCH
