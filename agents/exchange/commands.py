"""``kabuto exchange …``: listing issues, the books, the CertID list and the close of day."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Annotated, TypeVar

import typer

from agents import render
from agents.cli_runtime import run
from agents.cli_types import decimal
from agents.exchange import order_repo, prices, repo
from agents.exchange.trading import end_of_day
from broker.context import Context
from broker.runtime import run_as
from broker.settings import Settings
from schemas.certificates import ShareClass
from schemas.identity import EXCHANGE_ID
from schemas.trading import Side

T = TypeVar("T")
app = typer.Typer(help="The exchange's books.", no_args_is_help=True)
Issue = Annotated[str, typer.Argument(help="the issue code", show_default=False)]


async def _as_exchange(settings: Settings, action: Callable[[Context], Awaitable[T]]) -> T:
    return await run_as(settings, "exchange", EXCHANGE_ID, action)


@app.command("list")
def list_issue(
    issue_code: Issue,
    reference_price: Annotated[
        Decimal, typer.Option(parser=decimal, help="for the daily price limit", show_default=False)
    ],
    share_class: Annotated[ShareClass, typer.Option("--class", help="the class of shares")] = ShareClass.COMMON,
) -> None:
    """List an issue for trading, or set its reference price."""

    async def body(settings: Settings) -> None:
        await _as_exchange(settings, prices.listed(issue_code, share_class.value, reference_price))
        print(f"listed {issue_code} with reference price {reference_price}")

    run(body)


@app.command()
def book(issue_code: Issue) -> None:
    """The open orders of an issue, best first."""

    async def body(settings: Settings) -> None:
        loaded = await _as_exchange(settings, lambda ctx: order_repo.load_book(ctx.connection, issue_code))
        rows = [
            [o.side.value, o.price, o.remaining, o.acceptance_number, o.user_id]
            for side in (Side.BUY, Side.SELL)
            for o in loaded.resting(side)
        ]
        print(render.table(["side", "price", "open", "OAN", "user"], rows, indent=""))

    run(body)


@app.command("certid-list")
def certid_list(issue_code: Annotated[str | None, typer.Argument(help="one issue (default: all)")] = None) -> None:
    """The CertID list."""

    async def body(settings: Settings) -> None:
        entries = await _as_exchange(settings, lambda ctx: repo.certid_list(ctx.connection, issue_code))
        print(
            render.table(
                ["issue", "CertID", "holder", "shares", "status", "version"],
                [[e.issue_code, e.cert_id, e.user_id, e.shares, e.status, e.version] for e in entries],
                indent="",
            )
        )

    run(body)


@app.command()
def matches() -> None:
    """The order matching list and each trade's transfer and settlement."""

    async def body(settings: Settings) -> None:
        found = await _as_exchange(settings, lambda ctx: order_repo.matching_list(ctx.connection))
        print(render.table(list(found[0]) if found else ["matches"], [list(m.values()) for m in found], indent=""))

    run(body)


@app.command("end-of-day")
def close_the_day() -> None:
    """Expire the DAY orders still open."""

    async def body(settings: Settings) -> None:
        count = await _as_exchange(settings, end_of_day)
        print(f"expired {count} DAY order(s)")

    run(body)
