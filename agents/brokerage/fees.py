"""What a brokered order costs before it trades: commission, tax, the allowance and its holds.

Seed 002 §9.1–§9.6 (R-002-10/11, R-002-33..37, R-002-45): consideration = price × quantity;
commission from a banded table; consumption tax on the commission; the required amount; the
allowance the customer's selected accounts must cover, and how that allowance is held across
them. A market order has no price yet, so it is valued at the day's price limit (§9.6): the
upper limit for a buy (the most it can cost), the lower limit for a sell. Amounts are whole
yen: wherever a rate or a share leaves a fraction, it is rounded down (``ROUND_FLOOR``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal
from fractions import Fraction
from itertools import pairwise
from math import floor

from schemas.brokerage import FundingLeg, HoldLeg, SettlementType, TrialAmounts
from schemas.market_rules import price_band
from schemas.trading import OrderType, Side

_YEN = Decimal(1)


def whole_yen(amount: Decimal) -> Decimal:
    """Round down to whole yen (``ROUND_FLOOR``): a fraction of a yen is never charged or held."""
    return amount.quantize(_YEN, rounding=ROUND_FLOOR)


def _share(total: Decimal, part: Decimal, whole: Decimal) -> Decimal:
    """total × part / whole rounded down, computed exactly (no 28-digit Decimal rounding first)."""
    return Decimal(floor(Fraction(total) * Fraction(part) / Fraction(whole)))


@dataclass(frozen=True)
class FeeSchedule:
    """The commission table (R-002-45, R-002-83) and the rates applied on top of it.

    ``bands`` are rows of (consideration up to and including, commission); above the last
    band the commission is ``above_rate`` × the consideration. Consumption tax is
    ``consumption_tax_rate`` × the commission (seed 002: 500 on 10,000); the intermediary's fee
    is ``intermediary_share`` of the commission (seed 002 ¶0095: 20%). Each is rounded down
    to whole yen.
    """

    bands: tuple[tuple[Decimal, Decimal], ...]
    above_rate: Decimal
    consumption_tax_rate: Decimal = Decimal("0.05")
    intermediary_share: Decimal = Decimal("0.20")

    def __post_init__(self) -> None:
        bounds = [bound for bound, _ in self.bands]
        commissions = [commission for _, commission in self.bands]
        if any(value <= 0 for value in bounds + commissions):
            raise ValueError("commission bands need positive bounds and commissions")
        if any(lower >= upper for lower, upper in pairwise(bounds)):
            raise ValueError("commission band bounds must be strictly ascending")
        if any(lower > upper for lower, upper in pairwise(commissions)):
            raise ValueError("commissions must not fall as the consideration rises")
        if self.above_rate < 0 or self.consumption_tax_rate < 0:
            raise ValueError("rates must not be negative")
        if not 0 <= self.intermediary_share <= 1:
            raise ValueError("the intermediary's share of the commission must be between 0 and 1")

    def commission(self, consideration: Decimal) -> Decimal:
        """The table's commission for this consideration; nothing traded (0) costs nothing."""
        if consideration < 0:
            raise ValueError(f"a consideration cannot be negative: {consideration}")
        if consideration == 0:
            return Decimal(0)
        for bound, commission in self.bands:
            if consideration <= bound:
                return commission
        return whole_yen(consideration * self.above_rate)

    def consumption_tax(self, commission: Decimal) -> Decimal:
        return whole_yen(commission * self.consumption_tax_rate)

    def intermediary_fee(self, commission: Decimal) -> Decimal:
        return whole_yen(commission * self.intermediary_share)


DEFAULT_FEES = FeeSchedule(
    bands=tuple(
        (Decimal(bound), Decimal(commission))
        for bound, commission in (
            (100_000, 1_000),
            (200_000, 2_000),
            (500_000, 4_000),
            (1_000_000, 7_000),
            (1_500_000, 10_000),
            (3_000_000, 15_000),
        )
    ),
    above_rate=Decimal("0.005"),
)


@dataclass(frozen=True)
class AllowancePolicy:
    """How the allowance relates to the required amount (R-002-34/35): a configurable multiple
    (seed 002: e.g. 1.5 for a cushion) and the share needed for a regular 4th-day trade (½)."""

    factor: Decimal = Decimal(1)
    regular_share: Decimal = Decimal("0.5")

    def __post_init__(self) -> None:
        if self.factor <= 0:
            raise ValueError("the allowance factor must be positive")
        if not 0 < self.regular_share <= 1:
            raise ValueError("the regular-trade share must be above 0 and at most 1")

    def allowance(self, required: Decimal, settlement_type: SettlementType) -> Decimal:
        share = self.regular_share if settlement_type is SettlementType.REGULAR else Decimal(1)
        return whole_yen(max(required, Decimal(0)) * self.factor * share)


def settlement_total(side: Side, consideration: Decimal, commission: Decimal, tax: Decimal) -> Decimal:
    """What the customer pays (buy: consideration + commission + tax) or receives (sell: less both)."""
    if side is Side.BUY:
        return consideration + commission + tax
    return consideration - commission - tax


def order_price(side: Side, order_type: OrderType, price: Decimal | None, reference_price: Decimal) -> Decimal:
    """The limit price, or for a market order the day's price limit on the order's unsafe side (§9.6)."""
    if order_type is OrderType.LIMIT:
        if price is None:
            raise ValueError("a limit order needs a price")
        return price
    if price is not None:
        raise ValueError("a market order must not have a price")
    band = price_band(reference_price)
    return band.upper if side is Side.BUY else band.lower


def trial_amounts(
    side: Side,
    order_type: OrderType,
    price: Decimal | None,
    quantity: int,
    reference_price: Decimal,
    fees: FeeSchedule,
    policy: AllowancePolicy,
    settlement_type: SettlementType,
) -> TrialAmounts:
    """Seed 002 §9.1–§9.6: the amounts shown on the order screen and the allowance to check.

    The allowance is required × factor (× the regular share for a 4th-day trade), rounded
    down; a sell needs no allowance (0).
    """
    if quantity <= 0:
        raise ValueError(f"a quantity must be positive: {quantity}")
    unit_price = order_price(side, order_type, price, reference_price)
    consideration = whole_yen(unit_price * quantity)
    commission = fees.commission(consideration)
    tax = fees.consumption_tax(commission)
    required = settlement_total(side, consideration, commission, tax)
    allowance = policy.allowance(required, settlement_type) if side is Side.BUY else Decimal(0)
    return TrialAmounts(
        price=unit_price,
        consideration=consideration,
        commission=commission,
        consumption_tax=tax,
        required=required,
        allowance=allowance,
    )


def by_priority(funding: Sequence[FundingLeg]) -> tuple[FundingLeg, ...]:
    """The designated accounts, highest priority (lowest number) first, ties in the order given.

    An account named twice is refused: its amount and priority would be ambiguous.
    """
    accounts = [leg.account for leg in funding]
    if len(set(accounts)) != len(accounts):
        raise ValueError("an account is designated more than once")
    return tuple(sorted(funding, key=lambda leg: leg.priority))


def hold_legs(funding: Sequence[FundingLeg], allowance: Decimal) -> tuple[HoldLeg, ...]:
    """Spread the allowance over the designated accounts in proportion to their designated amounts.

    Each share is rounded down; what rounding leaves goes to the highest-priority account that
    designates anything. Accounts designating 0 hold nothing. The legs, in priority order, sum
    exactly to the allowance.
    """
    if allowance < 0:
        raise ValueError(f"an allowance cannot be negative: {allowance}")
    ordered = by_priority(funding)
    designated = sum((leg.amount for leg in ordered), Decimal(0))
    if allowance == 0:
        return ()
    if designated == 0:
        raise ValueError("no designated amount to hold the allowance against")
    shares = [_share(allowance, leg.amount, designated) for leg in ordered]
    first = next(index for index, leg in enumerate(ordered) if leg.amount > 0)
    shares[first] += allowance - sum(shares, Decimal(0))
    return tuple(
        HoldLeg(account=leg.account, amount=share) for leg, share in zip(ordered, shares, strict=True) if share > 0
    )
