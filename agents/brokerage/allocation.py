"""Which designated account pays or receives what, once the actual amount is known.

Seed 002 §9.8 (R-002-78..80): the customer designates an amount and a priority per account;
a partial fill or a market order makes the actual amount differ from their total. A shortfall
keeps the higher priorities' amounts and reduces the lowest priority first, under every rule.
An excess is placed by the order's rule: rule 1 in the lowest priorities first, rule 2 (a
buy) and rule 3 (a sell) in the highest priorities first. Paying more than designated is
limited by what each account has available beyond its designated amount; receiving is not.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal

from agents.brokerage.fees import by_priority
from schemas.brokerage import FundingLeg, MismatchRule
from schemas.trading import Side


class FundingShortfall(ValueError):
    """A buy's actual amount exceeds what the designated accounts can pay."""

    def __init__(self, missing: Decimal) -> None:
        super().__init__(f"the designated accounts lack {missing} to pay the actual amount")
        self.missing = missing


def allocate(
    side: Side,
    funding: Sequence[FundingLeg],
    actual: Decimal,
    rule: MismatchRule,
    available: Mapping[str, Decimal],
) -> tuple[tuple[str, Decimal], ...]:
    """(account, amount) per designated account in priority order, summing exactly to ``actual``.

    ``available`` is each account's available balance; an account missing from it has nothing
    available beyond its designated amount. Raises FundingShortfall when a buy's excess does
    not fit within the available balances.
    """
    if actual < 0:
        raise ValueError(f"an actual amount cannot be negative: {actual}")
    ordered = by_priority(funding)
    amounts = [leg.amount for leg in ordered]
    difference = actual - sum(amounts, Decimal(0))
    if difference < 0:
        _reduce_lowest_first(amounts, -difference)
    elif difference > 0:
        _place_excess(side, ordered, amounts, difference, rule, available)
    return tuple((leg.account, amount) for leg, amount in zip(ordered, amounts, strict=True))


def _reduce_lowest_first(amounts: list[Decimal], shortfall: Decimal) -> None:
    for index in reversed(range(len(amounts))):
        cut = min(amounts[index], shortfall)
        amounts[index] -= cut
        shortfall -= cut


def _place_excess(
    side: Side,
    ordered: tuple[FundingLeg, ...],
    amounts: list[Decimal],
    excess: Decimal,
    rule: MismatchRule,
    available: Mapping[str, Decimal],
) -> None:
    if not ordered:
        raise (FundingShortfall(excess) if side is Side.BUY else ValueError("no account to receive the proceeds"))
    lowest_first = rule is MismatchRule.PROTECT_HIGH_PRIORITY
    order = list(reversed(range(len(ordered)))) if lowest_first else list(range(len(ordered)))
    if side is Side.SELL:
        amounts[order[0]] += excess
        return
    for index in order:
        room = max(available.get(ordered[index].account, Decimal(0)) - ordered[index].amount, Decimal(0))
        taken = min(room, excess)
        amounts[index] += taken
        excess -= taken
    if excess > 0:
        raise FundingShortfall(excess)
