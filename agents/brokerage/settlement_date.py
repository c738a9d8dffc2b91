"""The contracted settlement cycle of a regular trade (seed 002 §7.3, R-002-72): the customer's
money is due on the 4th business day counting the trade date as the first ("3 days later",
¶0121/¶0129), i.e. trade date + 3 business days. Business days are Monday to Friday except the
configured holidays (``KABUTO_BROKERAGE_HOLIDAYS``, ISO dates separated by commas)."""

from __future__ import annotations

import os
from collections.abc import Collection
from datetime import date, timedelta

CYCLE_BUSINESS_DAYS = 3  # the 4th business day, the trade date being the 1st
CUT_OFF_BUSINESS_DAYS = 2  # a customer fail is recycled this many business days after the date


def holidays(text: str | None = None) -> frozenset[date]:
    """The holiday list from its setting; a malformed date is a clear error, not a silent workday."""
    raw = os.environ.get("KABUTO_BROKERAGE_HOLIDAYS", "") if text is None else text
    try:
        return frozenset(date.fromisoformat(part.strip()) for part in raw.split(",") if part.strip())
    except ValueError as exc:
        raise ValueError(f"KABUTO_BROKERAGE_HOLIDAYS: {exc}") from exc


def is_business_day(day: date, closed: Collection[date] = frozenset()) -> bool:
    return day.weekday() < 5 and day not in closed


def add_business_days(start: date, days: int, closed: Collection[date] = frozenset()) -> date:
    """``days`` business days after ``start``; a start on a closed day counts from the next open one."""
    day = start
    while not is_business_day(day, closed):
        day += timedelta(days=1)
    remaining = days
    while remaining > 0:
        day += timedelta(days=1)
        if is_business_day(day, closed):
            remaining -= 1
    return day


def settlement_date(trade_date: date, closed: Collection[date] = frozenset()) -> date:
    """R-002-72: the intended settlement date of a regular trade's customer legs."""
    return add_business_days(trade_date, CYCLE_BUSINESS_DAYS, closed)


def cut_off(due: date, closed: Collection[date] = frozenset()) -> date:
    """The last day a customer fail is retried; after it the brokerage's nominee keeps the position."""
    return add_business_days(due, CUT_OFF_BUSINESS_DAYS, closed)
