"""The credit holder's decisions, free of I/O (seed 003 §6–§7, F1–F7).

The card issuer (seed 003's FI server) authorises a purchase within the remaining credit or
asks the securities-backed line for the shortfall (F1) and splits what is owed by card type
(F6 debit, F7 credit). The line (the holder-information holding institution) values the
purchaser's unlocked holdings by the contracted method — haircut (F3) or rating (F4) — with
rates that may exceed 1 (R-003-09), selects collateral largest first until it covers the
shortfall (F5, R-003-33) and approves, or refuses and selects nothing (R-003-36). Amounts are
integer yen, each product rounded down (R-003-62). A method whose inputs are missing is
refused with a reason (R-003-27, R-003-29), never guessed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_FLOOR, Decimal
from enum import StrEnum


class CardType(StrEnum):
    CREDIT = "credit"
    DEBIT = "debit"


class Method(StrEnum):
    """The calculation method the purchaser's contract with the line names (R-003-10)."""

    HAIRCUT = "haircut"
    RATING = "rating"


class PriceSource(StrEnum):
    """Where a valuation's price came from (R-003-25)."""

    CURRENT = "current"
    DELAYED = "delayed"
    PREVIOUS_CLOSE = "previous_close"


class Refusal(StrEnum):
    """Why the line refuses additional credit; each is told to the card issuer."""

    UNKNOWN_PURCHASER = "unknown_purchaser"
    NO_HOLDINGS = "no_holdings"
    PRICE_MISSING = "price_missing"  # R-003-27 / R-003-29: no price data for a holding
    HAIRCUT_RATE_MISSING = "haircut_rate_missing"  # R-003-27: no band covers the total
    RATING_MISSING = "rating_missing"  # R-003-29: an issue without a discount rate
    INSUFFICIENT_COLLATERAL = "insufficient_collateral"  # R-003-36
    CUSTODIAN_SILENT = "custodian_silent"  # E5: a custodian did not answer the refresh in time
    LOCK_REFUSED = "lock_refused"  # custody would not lock a selected position
    INVALID_SHORTFALL = "invalid_shortfall"


class RefusedError(Exception):
    """A valuation that cannot be made; carries the reason the card issuer is told."""

    def __init__(self, reason: Refusal, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


def yen(amount: Decimal) -> int:
    """Integer yen, rounded down (R-003-62)."""
    return int(amount.to_integral_value(rounding=ROUND_FLOOR))


# -- the card issuer -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CardAccount:
    """DB 600 (R-003-03/04): for a debit card the limit is the deposit balance."""

    card_number: str
    purchaser: str  # the Kabuto participant id the card number maps to (R-003-11)
    card_type: CardType
    credit_limit: int
    outstanding: int

    @property
    def remaining(self) -> int:
        return max(self.credit_limit - self.outstanding, 0)


@dataclass(frozen=True, slots=True)
class Split:
    """How a purchase is carried: ``covered`` by the card, ``secured`` by the line (F1, F6, F7)."""

    price: int
    covered: int
    secured: int
    owed: int  # what the purchaser owes the card issuer under the contract

    @property
    def needs_line(self) -> bool:
        return self.secured > 0


def split(account: CardAccount, price: int) -> Split:
    """S1040: within the remaining credit, or the shortfall F1 = price − remaining credit.

    A credit card owes the full price (F7); a debit card pays the covered part from the deposit
    at once and owes only the secured remainder (F6).
    """
    if price <= 0:
        raise ValueError("a purchase costs a positive amount")
    covered = min(account.remaining, price)
    secured = price - covered
    owed = price if account.card_type is CardType.CREDIT else secured
    return Split(price, covered, secured, owed)


# -- the line: prices and valuation -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PriceQuote:
    """What the line knows of an issue's price from the exchange's events."""

    issue_code: str
    last_price: Decimal | None
    last_at: datetime | None
    previous_close: Decimal | None
    closed_at: datetime | None


@dataclass(frozen=True, slots=True)
class Price:
    issue_code: str
    price: Decimal
    source: PriceSource
    as_of: datetime
    age: timedelta


def price_for(quote: PriceQuote | None, now: datetime, current_within: timedelta) -> Price | None:
    """A trade since the last close is current when fresh, delayed otherwise; else the close.

    A last trade *before* the last close is superseded by that close (the reference price
    rolled over), so the previous close is used.
    """
    if quote is None:
        return None
    traded_since_close = quote.last_at is not None and (quote.closed_at is None or quote.last_at > quote.closed_at)
    if traded_since_close and quote.last_price is not None and quote.last_at is not None:
        age = now - quote.last_at
        source = PriceSource.CURRENT if age <= current_within else PriceSource.DELAYED
        return Price(quote.issue_code, quote.last_price, source, quote.last_at, age)
    if quote.previous_close is not None and quote.closed_at is not None:
        return Price(
            quote.issue_code, quote.previous_close, PriceSource.PREVIOUS_CLOSE, quote.closed_at, now - quote.closed_at
        )
    return None


@dataclass(frozen=True, slots=True)
class Holding:
    """A DB 620 row (R-003-05, R-003-12): one issue held at one custodian."""

    custodian: str
    issue_code: str
    quantity: int
    locked_for: str | None = None  # the obligation it secures, pending or placed (R-003-41)
    account: str = ""  # the safekeeping account at the custodian


@dataclass(frozen=True, slots=True)
class Band:
    """A DB 630 row: a haircut rate for totals from ``minimum`` up to (excluding) ``maximum``."""

    minimum: int
    maximum: int | None
    rate: Decimal

    def covers(self, total: int) -> bool:
        return total >= self.minimum and (self.maximum is None or total < self.maximum)


@dataclass(frozen=True, slots=True)
class ValuedHolding:
    holding: Holding
    price: Price
    market_value: int  # F2, rounded down
    coefficient: Decimal
    credit_value: int  # market value × coefficient, rounded down (R-003-32)


@dataclass(frozen=True, slots=True)
class Valuation:
    method: Method
    holdings: tuple[ValuedHolding, ...]
    total_market_value: int
    grantable: int  # DB 610 (R-003-30): F3 or F4
    haircut_rate: Decimal | None


def eligible(holdings: Iterable[Holding]) -> list[Holding]:
    """Positions already locked for an obligation never count again (R-003-41)."""
    return [h for h in holdings if h.locked_for is None and h.quantity > 0]


def value(
    method: Method,
    holdings: Sequence[Holding],
    prices: Mapping[str, Price],
    bands: Sequence[Band],
    ratings: Mapping[str, Decimal],
) -> Valuation:
    """S3000–S3010 (haircut) or S4000–S4010 (rating) over the eligible holdings."""
    free = eligible(holdings)
    if not free:
        raise RefusedError(Refusal.NO_HOLDINGS, "no unlocked holdings to value")
    missing = sorted({h.issue_code for h in free if h.issue_code not in prices})
    if missing:
        raise RefusedError(Refusal.PRICE_MISSING, f"no price for {', '.join(missing)}")
    market = [(h, prices[h.issue_code], yen(h.quantity * prices[h.issue_code].price)) for h in free]
    total = sum(mv for _, _, mv in market)
    if method is Method.HAIRCUT:
        rate = haircut_rate(bands, total)
        valued = tuple(ValuedHolding(h, p, mv, rate, yen(mv * rate)) for h, p, mv in market)
        return Valuation(method, valued, total, yen(total * rate), rate)
    unrated = sorted({h.issue_code for h, _, _ in market if h.issue_code not in ratings})
    if unrated:
        raise RefusedError(Refusal.RATING_MISSING, f"no discount rate for {', '.join(unrated)}")
    valued = tuple(
        ValuedHolding(h, p, mv, ratings[h.issue_code], yen(mv * ratings[h.issue_code])) for h, p, mv in market
    )
    return Valuation(method, valued, total, sum(v.credit_value for v in valued), None)


def haircut_rate(bands: Sequence[Band], total: int) -> Decimal:
    """DB 630: the band covering the total; rates may exceed 1 (R-003-09)."""
    for band in bands:
        if band.covers(total):
            return band.rate
    raise RefusedError(Refusal.HAIRCUT_RATE_MISSING, f"no haircut rate is set for a total of {total:,} yen")


# -- the line: selection and decision -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Selection:
    """F5: what was accumulated largest first, and whether it covers the shortfall."""

    shortfall: int
    selected: tuple[ValuedHolding, ...]
    accumulated: int

    @property
    def approved(self) -> bool:
        return self.accumulated >= self.shortfall


def select(valuation: Valuation, shortfall: int) -> Selection:
    """S5020–S5030: add per-security amounts from the largest until S ≥ shortfall.

    A refusal selects nothing (R-003-36), so nothing is ever locked for it. Ties keep a stable
    order (custodian, issue) so the same inputs always lock the same positions.
    """
    if shortfall <= 0:
        raise RefusedError(Refusal.INVALID_SHORTFALL, f"shortfall {shortfall} is not positive")
    ordered = sorted(
        valuation.holdings,
        key=lambda v: (-v.credit_value, v.holding.custodian, v.holding.account, v.holding.issue_code),
    )
    chosen: list[ValuedHolding] = []
    total = 0
    for candidate in ordered:
        if total >= shortfall:
            break
        chosen.append(candidate)
        total += candidate.credit_value
    if total < shortfall:
        return Selection(shortfall, (), total)
    return Selection(shortfall, tuple(chosen), total)


# -- default (seed 003 §6.11, R-003-58) ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Recovery:
    """How sale proceeds settle a default: the line is repaid what it advanced, the rest returned."""

    advanced: int
    proceeds: int
    repaid_to_line: int
    surplus: int  # returned to the purchaser
    deficit: int  # still owed to the line by the purchaser

    def __post_init__(self) -> None:
        assert self.repaid_to_line + self.surplus == self.proceeds
        assert self.repaid_to_line + self.deficit == self.advanced


def recover(advanced: int, proceeds: int) -> Recovery:
    """Pay-then-sell (Fig. 19): the line advanced the shortage; proceeds repay it first."""
    if advanced < 0 or proceeds < 0:
        raise ValueError("amounts are not negative")
    repaid = min(advanced, proceeds)
    return Recovery(advanced, proceeds, repaid, proceeds - repaid, advanced - repaid)
