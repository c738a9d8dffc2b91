"""Market rules every participant applies alike: tick sizes and the daily price limit.

Published with the wire contract because the exchange refuses orders by them and the brokerage
values market orders by them (seed 002 §9.6): both must use the same table.

The tick table follows the Tokyo Stock Exchange's standard bands. The price-limit table has
seed 002's two stated rows (§9.6: reference < 100 → 30; 200 ≤ reference < 500 → 80) and the
TSE's widths for the bands the seed leaves out (recorded in docs/decisions.md).
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from decimal import Decimal

# (lower bound of the band, value) — the value applies from the bound up to the next one.
TICK_SIZES: tuple[tuple[Decimal, Decimal], ...] = (
    (Decimal(0), Decimal(1)),
    (Decimal(3_000), Decimal(5)),
    (Decimal(5_000), Decimal(10)),
    (Decimal(30_000), Decimal(50)),
    (Decimal(50_000), Decimal(100)),
    (Decimal(300_000), Decimal(500)),
    (Decimal(500_000), Decimal(1_000)),
)

PRICE_LIMIT_WIDTHS: tuple[tuple[Decimal, Decimal], ...] = (
    (Decimal(0), Decimal(30)),
    (Decimal(100), Decimal(50)),
    (Decimal(200), Decimal(80)),
    (Decimal(500), Decimal(100)),
    (Decimal(700), Decimal(150)),
    (Decimal(1_000), Decimal(300)),
    (Decimal(1_500), Decimal(400)),
    (Decimal(2_000), Decimal(500)),
    (Decimal(3_000), Decimal(700)),
    (Decimal(5_000), Decimal(1_000)),
    (Decimal(7_000), Decimal(1_500)),
    (Decimal(10_000), Decimal(3_000)),
    (Decimal(15_000), Decimal(4_000)),
    (Decimal(20_000), Decimal(5_000)),
    (Decimal(30_000), Decimal(7_000)),
    (Decimal(50_000), Decimal(10_000)),
)


def _band(table: tuple[tuple[Decimal, Decimal], ...], price: Decimal) -> Decimal:
    index = bisect_right([bound for bound, _ in table], price) - 1
    return table[max(index, 0)][1]


def tick_size(price: Decimal) -> Decimal:
    return _band(TICK_SIZES, price)


def on_tick(price: Decimal) -> bool:
    return price > 0 and price % tick_size(price) == 0


def price_limit_width(reference: Decimal) -> Decimal:
    """Seed 002 §9.6 (R-002-37): how far from the reference price an issue may trade today."""
    return _band(PRICE_LIMIT_WIDTHS, reference)


@dataclass(frozen=True, slots=True)
class PriceBand:
    lower: Decimal
    upper: Decimal

    def contains(self, price: Decimal) -> bool:
        return self.lower <= price <= self.upper


def price_band(reference: Decimal) -> PriceBand:
    width = price_limit_width(reference)
    return PriceBand(max(reference - width, tick_size(reference)), reference + width)
