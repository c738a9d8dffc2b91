"""The intended settlement date of a regular brokered trade (seed 002 §7.3, R-002-72): the 4th
business day counting the trade date as the first, Monday–Friday less configured holidays."""

from __future__ import annotations

from datetime import date

import pytest

from agents.brokerage.settlement_date import add_business_days, cut_off, holidays, settlement_date

MONDAY, THURSDAY, FRIDAY, SATURDAY = date(2026, 11, 30), date(2026, 12, 3), date(2026, 12, 4), date(2026, 12, 5)


@pytest.mark.parametrize(
    ("trade", "due"),
    [
        (MONDAY, THURSDAY),  # Mon, Tue, Wed, Thu: the 4th business day
        (THURSDAY, date(2026, 12, 8)),  # Thu, Fri, Mon, Tue
        (FRIDAY, date(2026, 12, 9)),  # Fri, Mon, Tue, Wed
        (SATURDAY, date(2026, 12, 10)),  # a weekend trade counts from Monday
    ],
)
def test_settlement_date_is_the_fourth_business_day(trade: date, due: date) -> None:
    assert settlement_date(trade) == due


def test_holidays_are_not_business_days() -> None:
    closed = holidays("2026-12-01, 2026-12-02")
    assert settlement_date(MONDAY, closed) == date(2026, 12, 7)  # Mon, Thu, Fri, Mon
    assert holidays("") == frozenset()


def test_a_malformed_holiday_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="KABUTO_BROKERAGE_HOLIDAYS"):
        holidays("2026-13-01")


def test_cut_off_is_two_business_days_after_the_date() -> None:
    assert cut_off(THURSDAY) == date(2026, 12, 7)  # Fri, Mon
    assert add_business_days(FRIDAY, 0) == FRIDAY
