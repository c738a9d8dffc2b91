"""Market rules that need no book (agents/exchange/rules.py): tick sizes and the daily price limit.

The price-limit rows seed 002 §9.6 states (R-002-37) are pinned exactly; the bands the seed leaves
out follow the TSE table (see rules.py) and are only checked for shape.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.market_rules import (
    PRICE_LIMIT_WIDTHS,
    PriceBand,
    on_tick,
    price_band,
    price_limit_width,
    tick_size,
)

D = Decimal


@pytest.mark.parametrize(
    ("price", "tick"),
    [
        (1, 1),
        (2_999, 1),
        (3_000, 5),
        (4_995, 5),
        (5_000, 10),
        (29_990, 10),
        (30_000, 50),
        (49_950, 50),
        (50_000, 100),
        (299_900, 100),
        (300_000, 500),
        (499_500, 500),
        (500_000, 1_000),
        (10_000_000, 1_000),
    ],
)
def test_the_tick_size_changes_exactly_at_each_band_edge(price: int, tick: int) -> None:
    assert tick_size(D(price)) == D(tick)


@pytest.mark.parametrize("price", ["1", "2999", "3000", "3005", "5010", "30050", "50100", "300500", "501000"])
def test_prices_on_their_bands_tick_are_valid(price: str) -> None:
    assert on_tick(D(price))


@pytest.mark.parametrize("price", ["3001", "3004", "5005", "30010", "50050", "300100", "500500", "100.5", "0", "-5"])
def test_prices_off_tick_or_not_positive_are_invalid(price: str) -> None:
    assert not on_tick(D(price))


@pytest.mark.parametrize(("reference", "width"), [(1, 30), (90, 30), (99, 30), (200, 80), (300, 80), (499, 80)])
def test_the_price_limit_width_follows_seed_002s_stated_rows(reference: int, width: int) -> None:
    assert price_limit_width(D(reference)) == D(width)


def test_the_seed_worked_example_reference_300_trades_between_220_and_380() -> None:
    assert price_band(D(300)) == PriceBand(D(220), D(380))


def test_the_seed_worked_example_reference_90_may_rise_to_120() -> None:
    assert price_band(D(90)) == PriceBand(D(60), D(120))


def test_the_band_contains_its_edges_and_nothing_beyond() -> None:
    band = price_band(D(300))
    assert band.contains(D(220)) and band.contains(D(300)) and band.contains(D(380))
    assert not band.contains(D(219)) and not band.contains(D(381))


def test_a_band_that_would_go_below_zero_stops_at_one_tick() -> None:
    assert price_band(D(10)) == PriceBand(D(1), D(40))


def test_the_width_table_starts_at_zero_and_widens_with_the_reference() -> None:
    bounds = [bound for bound, _ in PRICE_LIMIT_WIDTHS]
    widths = [width for _, width in PRICE_LIMIT_WIDTHS]
    assert bounds[0] == 0 and bounds == sorted(set(bounds))
    assert widths == sorted(widths)


@settings(max_examples=300, deadline=None, database=None)
@given(st.integers(min_value=1, max_value=10_000_000))
def test_every_band_holds_its_reference_and_is_symmetric_unless_clipped(reference: int) -> None:
    band, width = price_band(D(reference)), price_limit_width(D(reference))
    assert band.contains(D(reference))
    assert band.upper - D(reference) == width
    assert D(reference) - band.lower == min(width, D(reference) - tick_size(D(reference)))
