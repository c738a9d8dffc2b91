"""The double-entry legs of a brokered trade's fund settlement (seed 002 §8, R-002-51..67).

The customer's accounts move by the per-account confirmed amounts: those at the intermediary
by means 39, those at the securities company by means 22. The intermediary advances (buy) or
collects (sell) the part routed through its accounts, and the companies settle between them in
one of two designs, configurable per securities company (R-002-67):

* design 1 — the securities company holds an account of the intermediary and settles on it
  (means 23): the intermediary's cash moves against that account, net of its fee;
* design 2 — the intermediary holds an account of the securities company and settles on it
  (means 40): the intermediary's fee is booked to the intermediary directly.

The securities company's side is its clearing account (the exchange's consideration), its
commission net of the intermediary's fee and the consumption tax. Legs credit positive and
debit negative, one per account, and always sum to zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

from agents.brokerage.fees import settlement_total
from schemas.brokerage import LedgerLeg
from schemas.trading import Side

CustomerAmount = tuple[str, Decimal, bool]  # (account, amount ≥ 0, held at the intermediary)


class Design(StrEnum):
    SC_HOLDS_IM_ACCOUNT = "sc_holds_im_account"  # design 1, means 23 (claim 1 family)
    IM_HOLDS_SC_ACCOUNT = "im_holds_sc_account"  # design 2, means 40 (claim 2 family)


@dataclass(frozen=True)
class CompanyAccounts:
    """The institutions' accounts one settlement touches."""

    clearing: str  # the securities company's clearing account with the exchange
    commission: str  # the securities company's commission income
    tax: str  # consumption tax collected
    im_account_at_sc: str  # design 1: the intermediary's account at the securities company
    im_cash: str  # the intermediary's own cash, against which it advances or collects
    sc_account_at_im: str  # design 2: the securities company's account at the intermediary
    im_fees: str  # design 2: the intermediary's fee income


def settlement_legs(
    side: Side,
    customer: Sequence[CustomerAmount],
    accounts: CompanyAccounts,
    design: Design,
    consideration: Decimal,
    commission: Decimal,
    tax: Decimal,
    fee: Decimal,
) -> tuple[LedgerLeg, ...]:
    """The legs posting one brokered trade, merged per account, zero legs dropped, summing to zero.

    The customer amounts must add up to what the customer pays (buy: consideration +
    commission + tax) or receives (sell: consideration − commission − tax).
    """
    _check_amounts(side, customer, consideration, commission, tax, fee)
    sign = Decimal(-1) if side is Side.BUY else Decimal(1)
    legs = [(account, sign * amount, "39" if at_im else "22") for account, amount, at_im in customer]
    through_im = sum((amount for _, amount, at_im in customer if at_im), Decimal(0))
    through_sc = sum((amount for _, amount, at_im in customer if not at_im), Decimal(0))
    if design is Design.SC_HOLDS_IM_ACCOUNT:
        legs += _design_1(side, accounts, through_im, consideration, fee)
    else:
        legs += _design_2(side, accounts, through_im, through_sc, commission, tax, fee)
    legs += [(accounts.commission, commission - fee, "sc"), (accounts.tax, tax, "sc")]
    return _merged(legs)


def _design_1(
    side: Side, accounts: CompanyAccounts, through_im: Decimal, consideration: Decimal, fee: Decimal
) -> list[tuple[str, Decimal, str]]:
    if side is Side.BUY:
        return [
            (accounts.im_cash, through_im, "im"),
            (accounts.im_account_at_sc, -(through_im - fee), "23"),
            (accounts.clearing, consideration, "sc"),
        ]
    return [
        (accounts.im_cash, -through_im, "im"),
        (accounts.im_account_at_sc, through_im + fee, "23"),
        (accounts.clearing, -consideration, "sc"),
    ]


def _design_2(
    side: Side,
    accounts: CompanyAccounts,
    through_im: Decimal,
    through_sc: Decimal,
    commission: Decimal,
    tax: Decimal,
    fee: Decimal,
) -> list[tuple[str, Decimal, str]]:
    if side is Side.BUY:
        return [
            (accounts.sc_account_at_im, through_im - fee, "40"),
            (accounts.im_fees, fee, "im"),
            (accounts.clearing, through_sc - (commission - fee) - tax, "sc"),
        ]
    return [
        (accounts.sc_account_at_im, -(through_im + fee), "40"),
        (accounts.im_fees, fee, "im"),
        (accounts.clearing, -(through_sc + (commission - fee) + tax), "sc"),
    ]


def _check_amounts(
    side: Side,
    customer: Sequence[CustomerAmount],
    consideration: Decimal,
    commission: Decimal,
    tax: Decimal,
    fee: Decimal,
) -> None:
    if min(consideration, commission, tax, fee) < 0 or any(amount < 0 for _, amount, _ in customer):
        raise ValueError("settlement amounts cannot be negative")
    if fee > commission:
        raise ValueError(f"the intermediary's fee {fee} exceeds the commission {commission}")
    expected = settlement_total(side, consideration, commission, tax)
    paid = sum((amount for _, amount, _ in customer), Decimal(0))
    if paid != expected:
        raise ValueError(f"the customer's amounts sum to {paid}, not the {expected} the trade settles")


def _merged(legs: Sequence[tuple[str, Decimal, str]]) -> tuple[LedgerLeg, ...]:
    """One leg per account in order of first appearance; an account under two means is refused."""
    totals: dict[str, Decimal] = {}
    means: dict[str, str] = {}
    for account, amount, leg_means in legs:
        if means.setdefault(account, leg_means) != leg_means:
            raise ValueError(f"account {account} would move by means {means[account]} and {leg_means}")
        totals[account] = totals.get(account, Decimal(0)) + amount
    return tuple(
        LedgerLeg(account=account, amount=amount, means=means[account])
        for account, amount in totals.items()
        if amount != 0
    )
