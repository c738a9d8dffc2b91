"""``kabuto credit line-policy|contract|haircut|rating|rates|prices|obligations|collateral|holdings|
valuations|audit|refresh``: the securities-backed line's contracts, rate tables, obligations,
collateral and audit trail, acting as ``credit`` (seed 003)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from decimal import Decimal
from typing import Annotated, TypeVar
from uuid import UUID

import typer

from agents import render
from agents.cli_runtime import run
from agents.cli_types import SIGNED_ARGUMENTS, decimal, split
from agents.credit import audit, jobs, line_repo, operators
from agents.credit import obligation_repo as obligations
from agents.credit.commands.params import LedgerAccount, Purchaser, Seconds
from agents.credit.domain import Band, Method
from broker.context import Context
from broker.runtime import run_as
from broker.settings import Settings
from schemas.identity import CREDIT_ID

T = TypeVar("T")
app = typer.Typer()


def _band(text: str) -> Band:
    """MIN:MAX:RATE, MAX empty for an open band (``0::0.8`` is one uniform rate)."""
    low, high, rate = split(text, 3, "MIN:MAX:RATE (MAX may be empty)")
    try:
        return Band(int(low), int(high) if high else None, decimal(rate))
    except ValueError as exc:
        raise typer.BadParameter(f"expected whole numbers MIN and MAX, got {text!r}") from exc


async def _as_line(settings: Settings, action: Callable[[Context], Awaitable[T]]) -> T:
    return await run_as(settings, "credit", CREDIT_ID, action)


@app.command("line-policy")
def line_policy(
    account: LedgerAccount,
    current_within: Seconds = timedelta(minutes=15),
    inquiry_timeout: Seconds = timedelta(minutes=2),
    refresh_interval: Seconds = timedelta(days=1),
) -> None:
    """The line's ledger account, price freshness, timeouts, refresh interval."""

    async def body(settings: Settings) -> None:
        await _as_line(settings, operators.line_policy(account, current_within, inquiry_timeout, refresh_interval))
        print(f"line: ledger account {account}")

    run(body)


@app.command()
def contract(
    purchaser: Annotated[str, typer.Argument(help="the purchaser", show_default=False)],
    method: Annotated[Method, typer.Option(help="how the credit value is calculated", show_default=False)],
    cash_account: Annotated[str, typer.Option(help="where a surplus from a forced sale is paid", show_default=False)],
    cards: Annotated[list[str], typer.Option("--card", help="a card of the purchaser (repeat)", show_default=False)],
    custodians: Annotated[
        list[str], typer.Option("--custodian", help="a custodian of the purchaser (repeat)", show_default=False)
    ],
    pledges: Annotated[
        list[str] | None, typer.Option("--pledge", help="a safekeeping account pledged (repeat; default: all)")
    ] = None,
) -> None:
    """A purchaser's contract with the line: method, cards, custodians."""

    async def body(settings: Settings) -> None:
        terms = operators.contract(
            purchaser, method, cash_account, tuple(cards), tuple(custodians), tuple(pledges or ())
        )
        await _as_line(settings, terms)
        print(f"contract with {purchaser}: {method.value}, cards {', '.join(cards)}")

    run(body)


@app.command()
def haircut(
    bands: Annotated[
        list[Band],
        typer.Option(
            "--band",
            parser=_band,
            metavar="MIN:MAX:RATE",
            help="MIN:MAX:RATE, MAX empty = open (repeat)",
            show_default=False,
        ),
    ],
) -> None:
    """Replace the haircut rate table (DB 630)."""

    async def body(settings: Settings) -> None:
        await _as_line(settings, operators.haircut_bands(tuple(bands)))
        print(f"{len(bands)} haircut band(s) set")

    run(body)


@app.command(context_settings=SIGNED_ARGUMENTS)
def rating(
    issue_code: Annotated[str, typer.Argument(help="the issue code", show_default=False)],
    grade: Annotated[str, typer.Argument(help="its rating", show_default=False)],
    rate: Annotated[Decimal, typer.Argument(parser=decimal, help="its discount rate", show_default=False)],
) -> None:
    """An issue's rating and discount rate (DB 640)."""

    async def body(settings: Settings) -> None:
        await _as_line(settings, operators.rating(issue_code, grade, rate))
        print(f"{issue_code}: rating {grade}, discount rate {rate}")

    run(body)


@app.command()
def rates() -> None:
    """The haircut and rating tables."""

    async def q(ctx: Context) -> tuple[list[Band], dict[str, tuple[str, Decimal]]]:
        return await line_repo.bands(ctx.connection), await line_repo.ratings(ctx.connection)

    async def body(settings: Settings) -> None:
        bands, ratings = await _as_line(settings, q)
        print("Haircut rates (DB 630)")
        print(render.table(["from", "below", "rate"], [[b.minimum, b.maximum, b.rate] for b in bands]))
        print("Ratings and discount rates (DB 640)")
        print(render.table(["issue", "rating", "discount rate"], [[i, g, r] for i, (g, r) in ratings.items()]))

    run(body)


@app.command()
def prices() -> None:
    """The exchange's prices as the line received them."""

    async def q(ctx: Context) -> list[dict[str, object]]:
        return [dict(r) for r in await ctx.connection.fetch("SELECT * FROM prices ORDER BY issue_code")]

    async def body(settings: Settings) -> None:
        rows = await _as_line(settings, q)
        headers = ["issue_code", "reference_price", "last_price", "last_traded_at", "previous_close", "closed_at"]
        print(render.table(headers, [[r[h] for h in headers] for r in rows]))

    run(body)


@app.command("obligations")
def obligation_list(purchaser: Purchaser = None) -> None:
    """The line's obligations (DB 610 decisions)."""

    async def q(ctx: Context) -> list[line_repo.Obligation]:
        return await obligations.listing(ctx.connection, purchaser)

    async def body(settings: Settings) -> None:
        found = await _as_line(settings, q)
        headers = ["obligation", "purchaser", "shortfall", "status", "S", "grantable", "advanced", "proceeds"]
        rows = [
            [o.obligation_id, o.purchaser, o.shortfall, o.status, o.accumulated, o.grantable, o.advanced, o.proceeds]
            for o in found
        ]
        print(
            render.table(
                [*headers, "surplus", "deficit", "reason"],
                [[*r, o.surplus, o.deficit, o.reason] for r, o in zip(rows, found, strict=True)],
            )
        )

    run(body)


@app.command()
def collateral(purchaser: Purchaser = None) -> None:
    """The positions locked, released or sold."""

    async def q(ctx: Context) -> list[line_repo.Collateral]:
        return await obligations.all_collateral(ctx.connection, purchaser)

    async def body(settings: Settings) -> None:
        found = await _as_line(settings, q)
        headers = ["lock", "obligation", "custodian", "account", "issue", "qty", "price", "source", "credit value"]
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
        print(render.table([*headers, "status"], rows))

    run(body)


@app.command()
def holdings(purchaser: Purchaser = None) -> None:
    """DB 620: each position as the custodians reported it, and what may still be pledged."""

    async def q(ctx: Context) -> list[tuple[str, list[line_repo.Position]]]:
        ids = [purchaser] if purchaser else [p.purchaser for p in await line_repo.purchasers(ctx.connection)]
        return [(i, await line_repo.positions(ctx.connection, i)) for i in ids]

    async def body(settings: Settings) -> None:
        headers = ["custodian", "account", "issue", "available", "locked", "may be pledged"]
        for owner, positions in await _as_line(settings, q):
            print(f"{owner}:")
            rows = [[p.custodian, p.account, p.issue_code, p.available, p.locked, p.eligible] for p in positions]
            print(render.table(headers, rows))

    run(body)


@app.command()
def valuations(purchaser: Purchaser = None) -> None:
    """Every valuation with each price's source and age."""

    async def q(ctx: Context) -> list[dict[str, object]]:
        return await line_repo.valuations(ctx.connection, purchaser)

    async def body(settings: Settings) -> None:
        headers = ["issue", "quantity", "price", "price_source", "price_age_seconds", "market_value", "credit_value"]
        for v in await _as_line(settings, q):
            print(
                f"{v['valued_at']} {v['purchaser']} {v['method']}: total {v['total_market_value']} "
                f"rate {v['haircut_rate']} grantable {v['grantable']} {v['refusal'] or ''}"
            )
            positions = v["positions"]
            assert isinstance(positions, list)
            print(render.table(headers, [[p[h if h != "issue" else "issue_code"] for h in headers] for p in positions]))

    run(body)


@app.command("audit")
def audit_trail(
    purchaser: Purchaser = None,
    obligation: Annotated[UUID | None, typer.Option(help="only this obligation")] = None,
) -> None:
    """The audit trail (R-003-63)."""

    async def q(ctx: Context) -> list[audit.AuditEntry]:
        return await audit.entries(ctx, purchaser, obligation)

    async def body(settings: Settings) -> None:
        found = await _as_line(settings, q)
        headers = ["seq", "at", "institution", "purchaser", "step", "action", "obligation", "detail"]
        rows = [[e.seq, e.at, e.institution, e.purchaser, e.step, e.action, e.obligation_id, e.detail] for e in found]
        print(render.table(headers, rows))

    run(body)


@app.command()
def refresh() -> None:
    """S6000: refresh every purchaser's holdings now (also done periodically)."""

    async def body(settings: Settings) -> None:
        asked = await _as_line(settings, jobs.refresh_due)
        print(f"{len(asked)} holdings refresh request(s) sent")

    run(body)
