"""``kabuto credit …``: the card issuer's cards and the line's contracts, rate tables, obligations,
collateral and audit trail, for operators (seed 003). Each command acts as one institution:
``card-issuer`` or ``credit``."""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from datetime import timedelta
from decimal import Decimal
from typing import TypeVar
from uuid import UUID

from agents import render
from agents.cli_types import decimal
from agents.credit import audit, card_issuer, card_repo, jobs, line_repo, operators
from agents.credit import obligation_repo as obligations
from agents.credit.domain import Band, CardAccount, CardType, Method
from broker.context import Context
from broker.runtime import run_as
from broker.settings import Settings
from schemas.identity import CARD_ISSUER_ID, CREDIT_ID

T = TypeVar("T")
Command = Callable[[argparse.Namespace, Settings], Awaitable[int]]


def _band(text: str) -> Band:
    """MIN:MAX:RATE, MAX empty for an open band (``0::0.8`` is one uniform rate)."""
    try:
        low, high, rate = text.split(":")
        return Band(int(low), int(high) if high else None, Decimal(rate))
    except (ValueError, ArithmeticError) as exc:
        raise argparse.ArgumentTypeError(f"expected MIN:MAX:RATE (MAX may be empty), got {text!r}") from exc


def _seconds(text: str) -> timedelta:
    try:
        return timedelta(seconds=float(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from exc


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cr = sub.add_parser("credit", help="the card issuer and the securities-backed line").add_subparsers(
        dest="credit_command", required=True, metavar="CREDIT_COMMAND"
    )
    card = cr.add_parser("card", help="open or change a card (DB 600): its purchaser, type and limit")
    card.add_argument("card_number")
    card.add_argument("--purchaser", required=True)
    card.add_argument("--type", dest="card_type", choices=[t.value for t in CardType], required=True)
    card.add_argument("--limit", type=int, required=True, help="credit limit, or a debit card's deposit balance (JPY)")
    card.add_argument("--repayment-account", required=True, help="the settlement account withdrawals draw on")
    cr.add_parser("cards", help="the card issuer's cards, limits and usage")
    ip = cr.add_parser("issuer-policy", help="the card issuer's ledger account and capture window")
    ip.add_argument("--account", required=True)
    ip.add_argument("--capture-window", type=_seconds, default=timedelta(days=7), help="seconds")
    lp = cr.add_parser("line-policy", help="the line's ledger account, price freshness, timeouts, refresh interval")
    lp.add_argument("--account", required=True)
    lp.add_argument("--current-within", type=_seconds, default=timedelta(minutes=15), help="seconds")
    lp.add_argument("--inquiry-timeout", type=_seconds, default=timedelta(minutes=2), help="seconds")
    lp.add_argument("--refresh-interval", type=_seconds, default=timedelta(days=1), help="seconds")
    ct = cr.add_parser("contract", help="a purchaser's contract with the line: method, cards, custodians")
    ct.add_argument("purchaser")
    ct.add_argument("--method", choices=[m.value for m in Method], required=True)
    ct.add_argument("--cash-account", required=True, help="where a surplus from a forced sale is paid")
    ct.add_argument("--card", action="append", required=True)
    ct.add_argument("--custodian", action="append", required=True)
    ct.add_argument("--pledge", action="append", default=[], help="a safekeeping account pledged (default: all)")
    hc = cr.add_parser("haircut", help="replace the haircut rate table (DB 630)")
    hc.add_argument("--band", type=_band, action="append", required=True, help="MIN:MAX:RATE, MAX empty = open")
    rt = cr.add_parser("rating", help="an issue's rating and discount rate (DB 640)")
    rt.add_argument("issue_code")
    rt.add_argument("grade")
    rt.add_argument("rate", type=decimal)
    cr.add_parser("rates", help="the haircut and rating tables")
    cr.add_parser("prices", help="the exchange's prices as the line received them")
    cr.add_parser("authorisations", help="the card issuer's purchases and what became of them")
    for name, help_ in (
        ("obligations", "the line's obligations (DB 610 decisions)"),
        ("collateral", "the positions locked, released or sold"),
        ("holdings", "DB 620: each position as the custodians reported it, and what may still be pledged"),
        ("valuations", "every valuation with each price's source and age"),
    ):
        listing = cr.add_parser(name, help=help_)
        listing.add_argument("--purchaser")
    au = cr.add_parser("audit", help="the audit trail (R-003-63)")
    au.add_argument("--purchaser")
    au.add_argument("--obligation", type=UUID)
    rp = cr.add_parser("repay", help="S7000: withdraw from the purchaser's account for a captured purchase")
    rp.add_argument("authorisation", type=UUID)
    rp.add_argument("amount", type=int)
    df = cr.add_parser("default", help="S9000: declare the secured part overdue; the line recovers it")
    df.add_argument("authorisation", type=UUID)
    cr.add_parser("expire", help="lapse approvals not captured in time (also done periodically)")
    cr.add_parser("refresh", help="S6000: refresh every purchaser's holdings now (also done periodically)")


async def run(args: argparse.Namespace, settings: Settings) -> int:
    return await COMMANDS[args.credit_command](args, settings)


async def _as(settings: Settings, who: str, action: Callable[[Context], Awaitable[T]]) -> T:
    return await run_as(settings, "credit", who, action)


async def _card(args: argparse.Namespace, settings: Settings) -> int:
    command = operators.open_card(
        args.card_number, args.purchaser, CardType(args.card_type), args.limit, args.repayment_account
    )
    await _as(settings, CARD_ISSUER_ID, command)
    print(f"card {args.card_number}: {args.purchaser}, {args.card_type}, limit {args.limit:,}")
    return 0


async def _cards(args: argparse.Namespace, settings: Settings) -> int:
    async def q(ctx: Context) -> list[tuple[CardAccount, str]]:
        return await card_repo.cards(ctx.connection)

    rows = await _as(settings, CARD_ISSUER_ID, q)
    print(
        render.table(
            ["card", "purchaser", "type", "limit", "outstanding", "remaining", "repayment account"],
            [
                [c.card_number, c.purchaser, c.card_type, c.credit_limit, c.outstanding, c.remaining, acc]
                for c, acc in rows
            ],
        )
    )
    return 0


async def _issuer_policy(args: argparse.Namespace, settings: Settings) -> int:
    await _as(settings, CARD_ISSUER_ID, operators.issuer_policy(args.account, args.capture_window))
    print(f"card issuer: ledger account {args.account}, capture window {args.capture_window}")
    return 0


async def _line_policy(args: argparse.Namespace, settings: Settings) -> int:
    command = operators.line_policy(args.account, args.current_within, args.inquiry_timeout, args.refresh_interval)
    await _as(settings, CREDIT_ID, command)
    print(f"line: ledger account {args.account}")
    return 0


async def _contract(args: argparse.Namespace, settings: Settings) -> int:
    command = operators.contract(
        args.purchaser,
        Method(args.method),
        args.cash_account,
        tuple(args.card),
        tuple(args.custodian),
        tuple(args.pledge),
    )
    await _as(settings, CREDIT_ID, command)
    print(f"contract with {args.purchaser}: {args.method}, cards {', '.join(args.card)}")
    return 0


async def _haircut(args: argparse.Namespace, settings: Settings) -> int:
    await _as(settings, CREDIT_ID, operators.haircut_bands(tuple(args.band)))
    print(f"{len(args.band)} haircut band(s) set")
    return 0


async def _rating(args: argparse.Namespace, settings: Settings) -> int:
    await _as(settings, CREDIT_ID, operators.rating(args.issue_code, args.grade, args.rate))
    print(f"{args.issue_code}: rating {args.grade}, discount rate {args.rate}")
    return 0


async def _rates(args: argparse.Namespace, settings: Settings) -> int:
    async def q(ctx: Context) -> tuple[list[Band], dict[str, tuple[str, Decimal]]]:
        return await line_repo.bands(ctx.connection), await line_repo.ratings(ctx.connection)

    bands, ratings = await _as(settings, CREDIT_ID, q)
    print("Haircut rates (DB 630)")
    print(render.table(["from", "below", "rate"], [[b.minimum, b.maximum, b.rate] for b in bands]))
    print("Ratings and discount rates (DB 640)")
    print(render.table(["issue", "rating", "discount rate"], [[i, g, r] for i, (g, r) in ratings.items()]))
    return 0


async def _prices(args: argparse.Namespace, settings: Settings) -> int:
    async def q(ctx: Context) -> list[dict[str, object]]:
        return [dict(r) for r in await ctx.connection.fetch("SELECT * FROM prices ORDER BY issue_code")]

    rows = await _as(settings, CREDIT_ID, q)
    headers = ["issue_code", "reference_price", "last_price", "last_traded_at", "previous_close", "closed_at"]
    print(render.table(headers, [[r[h] for h in headers] for r in rows]))
    return 0


async def _authorisations(args: argparse.Namespace, settings: Settings) -> int:
    async def q(ctx: Context) -> list[card_repo.Authorisation]:
        return await card_repo.authorisations(ctx.connection)

    found = await _as(settings, CARD_ISSUER_ID, q)
    headers = ["authorisation", "merchant", "purchase", "purchaser", "price", "covered", "secured", "repaid", "status"]
    rows = [
        [a.authorisation_id, a.merchant, a.purchase_id, a.purchaser, a.price, a.covered, a.secured, a.repaid, a.status]
        for a in found
    ]
    print(render.table(headers, rows))
    return 0


async def _obligations(args: argparse.Namespace, settings: Settings) -> int:
    async def q(ctx: Context) -> list[line_repo.Obligation]:
        return await obligations.listing(ctx.connection, args.purchaser)

    found = await _as(settings, CREDIT_ID, q)
    headers = ["obligation", "purchaser", "shortfall", "status", "S", "grantable", "advanced", "proceeds", "surplus"]
    rows = [
        [
            o.obligation_id,
            o.purchaser,
            o.shortfall,
            o.status,
            o.accumulated,
            o.grantable,
            o.advanced,
            o.proceeds,
            o.surplus,
        ]
        for o in found
    ]
    print(
        render.table(
            [*headers, "deficit", "reason"], [[*r, o.deficit, o.reason] for r, o in zip(rows, found, strict=True)]
        )
    )
    return 0


async def _collateral(args: argparse.Namespace, settings: Settings) -> int:
    async def q(ctx: Context) -> list[line_repo.Collateral]:
        return await obligations.all_collateral(ctx.connection, args.purchaser)

    found = await _as(settings, CREDIT_ID, q)
    headers = [
        "lock",
        "obligation",
        "custodian",
        "account",
        "issue",
        "qty",
        "price",
        "source",
        "credit value",
        "status",
    ]
    rows = [
        [
            c.lock_id,
            c.obligation_id,
            c.custodian,
            c.account,
            c.issue_code,
            c.quantity,
            c.price,
            c.price_source,
            c.credit_value,
            c.status,
        ]
        for c in found
    ]
    print(render.table(headers, rows))
    return 0


async def _holdings(args: argparse.Namespace, settings: Settings) -> int:
    async def q(ctx: Context) -> list[tuple[str, list[line_repo.Position]]]:
        ids = [args.purchaser] if args.purchaser else [p.purchaser for p in await line_repo.purchasers(ctx.connection)]
        return [(i, await line_repo.positions(ctx.connection, i)) for i in ids]

    for purchaser, positions in await _as(settings, CREDIT_ID, q):
        print(f"{purchaser}:")
        headers = ["custodian", "account", "issue", "available", "locked", "may be pledged"]
        print(
            render.table(
                headers, [[p.custodian, p.account, p.issue_code, p.available, p.locked, p.eligible] for p in positions]
            )
        )
    return 0


async def _valuations(args: argparse.Namespace, settings: Settings) -> int:
    async def q(ctx: Context) -> list[dict[str, object]]:
        return await line_repo.valuations(ctx.connection, args.purchaser)

    for v in await _as(settings, CREDIT_ID, q):
        print(
            f"{v['valued_at']} {v['purchaser']} {v['method']}: total {v['total_market_value']} "
            f"rate {v['haircut_rate']} grantable {v['grantable']} {v['refusal'] or ''}"
        )
        positions = v["positions"]
        assert isinstance(positions, list)
        headers = ["issue", "quantity", "price", "price_source", "price_age_seconds", "market_value", "credit_value"]
        print(render.table(headers, [[p[h if h != "issue" else "issue_code"] for h in headers] for p in positions]))
    return 0


async def _audit(args: argparse.Namespace, settings: Settings) -> int:
    async def q(ctx: Context) -> list[audit.AuditEntry]:
        return await audit.entries(ctx, args.purchaser, args.obligation)

    found = await _as(settings, CREDIT_ID, q)
    headers = ["seq", "at", "institution", "purchaser", "step", "action", "obligation", "detail"]
    rows = [[e.seq, e.at, e.institution, e.purchaser, e.step, e.action, e.obligation_id, e.detail] for e in found]
    print(render.table(headers, rows))
    return 0


async def _repay(args: argparse.Namespace, settings: Settings) -> int:
    attempt = await _as(settings, CARD_ISSUER_ID, card_issuer.repay(args.authorisation, args.amount))
    print(f"withdrawal {attempt} of {args.amount:,} requested; the settlement ledger decides")
    return 0


async def _default(args: argparse.Namespace, settings: Settings) -> int:
    shortage = await _as(settings, CARD_ISSUER_ID, card_issuer.declare_default(args.authorisation))
    print(f"shortage of {shortage:,} reported to the line")
    return 0


async def _expire(args: argparse.Namespace, settings: Settings) -> int:
    count = await _as(settings, CARD_ISSUER_ID, card_issuer.expire_uncaptured())
    print(f"{count} approval(s) lapsed")
    return 0


async def _refresh(args: argparse.Namespace, settings: Settings) -> int:
    asked = await _as(settings, CREDIT_ID, jobs.refresh_due)
    print(f"{len(asked)} holdings refresh request(s) sent")
    return 0


COMMANDS: dict[str, Command] = {
    "card": _card,
    "cards": _cards,
    "issuer-policy": _issuer_policy,
    "line-policy": _line_policy,
    "contract": _contract,
    "haircut": _haircut,
    "rating": _rating,
    "rates": _rates,
    "prices": _prices,
    "authorisations": _authorisations,
    "obligations": _obligations,
    "collateral": _collateral,
    "holdings": _holdings,
    "valuations": _valuations,
    "audit": _audit,
    "repay": _repay,
    "default": _default,
    "expire": _expire,
    "refresh": _refresh,
}
