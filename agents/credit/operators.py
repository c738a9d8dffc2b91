"""Operators' commands for the card issuer and the line, each one transaction as an institution.

Set-ups (cards, contracts, rate tables, policies) write only the acting institution's books;
actions that involve another party (repay, default, refresh) send messages through the outbox.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from decimal import Decimal
from itertools import pairwise

from agents.credit import audit, card_repo, line_repo
from agents.credit import obligation_repo as obligations
from agents.credit.domain import Band, CardAccount, CardType, Method
from broker.context import Context
from schemas.identity import is_participant_id

Command = Callable[[Context], Awaitable[None]]


class CreditCommandError(ValueError):
    """An operator's command was refused; nothing changed."""


def _participant(value: str, what: str) -> str:
    if not is_participant_id(value):
        raise CreditCommandError(f"{what} {value!r} is not a participant id")
    return value


def open_card(
    card_number: str, purchaser: str, card_type: CardType, limit: int, repayment_account: str, outstanding: int = 0
) -> Command:
    """DB 600 (R-003-03/04): a card, its purchaser and limit (a debit card's deposit balance)."""
    if limit < 0 or outstanding < 0:
        raise CreditCommandError("the limit and the outstanding usage are not negative")
    account = CardAccount(card_number, _participant(purchaser, "purchaser"), card_type, limit, outstanding)

    async def action(ctx: Context) -> None:
        await card_repo.open_card(ctx.connection, account, repayment_account)
        await audit.record(ctx, purchaser, "DB600", "card_opened", card=card_number, limit=limit, type=card_type.value)

    return action


def issuer_policy(settlement_account: str, capture_window: timedelta) -> Command:
    if capture_window <= timedelta(0):
        raise CreditCommandError("the capture window is positive")

    async def action(ctx: Context) -> None:
        await card_repo.set_policy(ctx.connection, settlement_account, capture_window)

    return action


def line_policy(
    settlement_account: str,
    current_within: timedelta = timedelta(minutes=15),
    inquiry_timeout: timedelta = timedelta(minutes=2),
    refresh_interval: timedelta = timedelta(days=1),
) -> Command:
    if min(current_within, inquiry_timeout, refresh_interval) <= timedelta(0):
        raise CreditCommandError("every interval is positive")
    policy = line_repo.LinePolicy(settlement_account, current_within, inquiry_timeout, refresh_interval)

    async def action(ctx: Context) -> None:
        await line_repo.set_policy(ctx.connection, policy)

    return action


def contract(
    purchaser: str,
    method: Method,
    cash_account: str,
    cards: tuple[str, ...],
    custodians: tuple[str, ...],
    pledged: tuple[str, ...] = (),
) -> Command:
    """R-003-10/11/12: the purchaser's method, cards, the custodians holding its positions and,
    if given, the only safekeeping accounts it pledges (otherwise all of them)."""
    _participant(purchaser, "purchaser")
    for custodian in custodians:
        _participant(custodian, "custodian")

    async def action(ctx: Context) -> None:
        await line_repo.register_purchaser(ctx.connection, purchaser, method, cash_account, cards, custodians, pledged)
        await audit.record(ctx, purchaser, "R-003-10", "contract_set", method=method.value, custodians=custodians)

    return action


def haircut_bands(bands: tuple[Band, ...]) -> Command:
    """DB 630 (R-003-07): replace the table; bands must not overlap. Rates may exceed 1 (R-003-09)."""
    ordered = sorted(bands, key=lambda b: b.minimum)
    for band in ordered:
        if band.rate <= 0:
            raise CreditCommandError(f"rate {band.rate} is not positive")
    for lower, upper in pairwise(ordered):
        if lower.maximum is None or lower.maximum > upper.minimum:
            raise CreditCommandError(f"band from {lower.minimum:,} overlaps the band from {upper.minimum:,}")

    async def action(ctx: Context) -> None:
        await line_repo.clear_bands(ctx.connection)
        for band in ordered:
            await line_repo.set_band(ctx.connection, band)

    return action


def rating(issue_code: str, grade: str, discount_rate: Decimal) -> Command:
    """DB 640 (R-003-08, R-003-31): an issue's rating and the discount rate it implies."""
    if discount_rate <= 0:
        raise CreditCommandError(f"discount rate {discount_rate} is not positive")

    async def action(ctx: Context) -> None:
        await line_repo.set_rating(ctx.connection, issue_code, grade, discount_rate, ctx.now)

    return action


async def obligations_of(ctx: Context, purchaser: str | None = None) -> list[line_repo.Obligation]:
    return await obligations.listing(ctx.connection, purchaser)
