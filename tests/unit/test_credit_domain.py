"""The credit holder's pure decisions against seed 003's worked example and its edges."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from agents.credit.domain import (
    Band,
    CardAccount,
    CardType,
    Holding,
    Method,
    Price,
    PriceQuote,
    PriceSource,
    Refusal,
    RefusedError,
    eligible,
    price_for,
    recover,
    select,
    split,
    value,
    yen,
)

NOW = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
A, B = "ISSA", "ISSB"
HOLDINGS = (Holding("custody", A, 6_000), Holding("custody", B, 2_000))
PRICES = {
    A: Price(A, Decimal(1_000), PriceSource.CURRENT, NOW, timedelta(0)),
    B: Price(B, Decimal(2_000), PriceSource.CURRENT, NOW, timedelta(0)),
}
BANDS = (Band(0, 5_000_000, Decimal("0.6")), Band(5_000_000, None, Decimal("0.8")))
RATINGS = {A: Decimal("1.0"), B: Decimal("0.5")}


def card(kind: CardType = CardType.CREDIT, limit: int = 50_000, outstanding: int = 0) -> CardAccount:
    return CardAccount("4000-0001", "alice", kind, limit, outstanding)


def test_shortfall_is_price_less_remaining_credit_f1_r_003_18() -> None:
    s = split(card(), 200_000)
    assert (s.covered, s.secured) == (50_000, 150_000)
    assert s.needs_line


def test_within_remaining_credit_needs_no_line_r_003_16() -> None:
    s = split(card(outstanding=10_000), 40_000)
    assert (s.covered, s.secured, s.needs_line) == (40_000, 0, False)


def test_credit_card_owes_full_price_f7_debit_owes_remainder_f6_r_003_43_44() -> None:
    assert split(card(CardType.CREDIT), 200_000).owed == 200_000
    debit = split(card(CardType.DEBIT), 200_000)
    assert (debit.covered, debit.owed) == (50_000, 150_000)


def test_remaining_credit_never_negative() -> None:
    assert split(card(outstanding=80_000), 10_000).secured == 10_000


def test_worked_example_haircut_gives_8_000_000_r_003_26() -> None:
    v = value(Method.HAIRCUT, HOLDINGS, PRICES, BANDS, {})
    assert v.total_market_value == 10_000_000
    assert v.haircut_rate == Decimal("0.8")
    assert v.grantable == 8_000_000


def test_worked_example_rating_gives_8_000_000_r_003_28() -> None:
    v = value(Method.RATING, HOLDINGS, PRICES, BANDS, RATINGS)
    assert [h.credit_value for h in v.holdings] == [6_000_000, 2_000_000]
    assert v.grantable == 8_000_000


@pytest.mark.parametrize("method", [Method.RATING])
def test_worked_example_locks_only_issue_a_r_003_34(method: Method) -> None:
    selection = select(value(method, HOLDINGS, PRICES, BANDS, RATINGS), 150_000)
    assert selection.approved
    assert [v.holding.issue_code for v in selection.selected] == [A]


def test_haircut_mode_uses_the_haircut_rate_per_security_and_selects_a() -> None:
    selection = select(value(Method.HAIRCUT, HOLDINGS, PRICES, BANDS, {}), 150_000)
    assert [(v.holding.issue_code, v.credit_value) for v in selection.selected] == [(A, 4_800_000)]


def test_shortfall_7_000_000_locks_both_and_9_000_000_refuses_nothing_selected_f5_r_003_36() -> None:
    v = value(Method.RATING, HOLDINGS, PRICES, BANDS, RATINGS)
    both = select(v, 7_000_000)
    assert both.approved and [x.holding.issue_code for x in both.selected] == [A, B]
    refused = select(v, 9_000_000)
    assert not refused.approved and refused.selected == () and refused.accumulated == 8_000_000


def test_locked_positions_never_count_again_r_003_41() -> None:
    holdings = (Holding("custody", A, 6_000, locked_for="obl-1"), Holding("custody", B, 2_000))
    assert [h.issue_code for h in eligible(holdings)] == [B]
    v = value(Method.RATING, holdings, PRICES, BANDS, RATINGS)
    assert v.grantable == 2_000_000
    assert not select(v, 3_000_000).approved


def test_rates_above_one_are_accepted_r_003_09() -> None:
    v = value(Method.RATING, HOLDINGS, PRICES, BANDS, {A: Decimal("1.2"), B: Decimal("1.5")})
    assert v.grantable == 7_200_000 + 6_000_000


def test_products_round_down_to_integer_yen_r_003_62() -> None:
    prices = {A: Price(A, Decimal("333.33"), PriceSource.CURRENT, NOW, timedelta(0))}
    v = value(Method.RATING, (Holding("custody", A, 3),), prices, BANDS, {A: Decimal("0.333")})
    assert v.holdings[0].market_value == 999  # 999.99 down
    assert v.grantable == 332  # 999 × 0.333 = 332.667 down
    assert yen(Decimal("-0.5")) == -1


def test_missing_price_is_refused_with_a_reason_r_003_27() -> None:
    with pytest.raises(RefusedError) as raised:
        value(Method.HAIRCUT, HOLDINGS, {A: PRICES[A]}, BANDS, {})
    assert raised.value.reason is Refusal.PRICE_MISSING and B in raised.value.detail


def test_missing_haircut_rate_is_refused_r_003_27() -> None:
    with pytest.raises(RefusedError) as raised:
        value(Method.HAIRCUT, HOLDINGS, PRICES, (Band(0, 1_000, Decimal("0.5")),), {})
    assert raised.value.reason is Refusal.HAIRCUT_RATE_MISSING


def test_missing_rating_is_refused_r_003_29() -> None:
    with pytest.raises(RefusedError) as raised:
        value(Method.RATING, HOLDINGS, PRICES, BANDS, {A: Decimal(1)})
    assert raised.value.reason is Refusal.RATING_MISSING and B in raised.value.detail


def test_no_unlocked_holdings_is_refused() -> None:
    with pytest.raises(RefusedError) as raised:
        value(Method.RATING, (Holding("custody", A, 1, locked_for="x"),), PRICES, BANDS, RATINGS)
    assert raised.value.reason is Refusal.NO_HOLDINGS


def test_non_positive_shortfall_is_refused() -> None:
    with pytest.raises(RefusedError):
        select(value(Method.RATING, HOLDINGS, PRICES, BANDS, RATINGS), 0)


def test_price_source_current_delayed_previous_close_r_003_25() -> None:
    window = timedelta(minutes=15)
    closed = NOW - timedelta(hours=20)
    fresh = PriceQuote(A, Decimal(1_010), NOW - timedelta(minutes=1), Decimal(990), closed)
    stale = PriceQuote(A, Decimal(1_010), NOW - timedelta(hours=1), Decimal(990), closed)
    before_close = PriceQuote(A, Decimal(1_010), closed - timedelta(hours=1), Decimal(990), closed)
    p = price_for(fresh, NOW, window)
    assert p is not None and (p.source, p.price, p.age) == (PriceSource.CURRENT, Decimal(1_010), timedelta(minutes=1))
    p = price_for(stale, NOW, window)
    assert p is not None and p.source is PriceSource.DELAYED
    p = price_for(before_close, NOW, window)
    assert p is not None and (p.source, p.price) == (PriceSource.PREVIOUS_CLOSE, Decimal(990))
    assert price_for(PriceQuote(A, None, None, None, None), NOW, window) is None
    assert price_for(None, NOW, window) is None


def test_recovery_conserves_proceeds_surplus_and_deficit_r_003_58() -> None:
    surplus = recover(150_000, 6_000_000)
    assert (surplus.repaid_to_line, surplus.surplus, surplus.deficit) == (150_000, 5_850_000, 0)
    deficit = recover(150_000, 100_000)
    assert (deficit.repaid_to_line, deficit.surplus, deficit.deficit) == (100_000, 0, 50_000)


def test_a_close_supersedes_the_trades_before_it_at_the_exchange() -> None:
    from agents.exchange.prices import Quote

    closed = NOW - timedelta(hours=1)
    assert Quote(A, Decimal(1), Decimal(2), NOW, Decimal(1), closed).traded_since_close
    assert not Quote(A, Decimal(1), Decimal(2), closed - timedelta(1), Decimal(1), closed).traded_since_close
    assert not Quote(A, Decimal(1), None, None, None, None).traded_since_close
    assert Quote(A, Decimal(1), Decimal(2), NOW, None, None).traded_since_close
