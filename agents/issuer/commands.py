"""``kabuto issuer …``: the issuing agent's books, for operators."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from datetime import date
from decimal import Decimal
from typing import Annotated, TypeVar
from uuid import UUID

import typer

from agents import render
from agents.cli_runtime import run
from agents.cli_types import decimal
from agents.issuer import repo
from agents.issuer.app import publish_certid_lists
from agents.issuer.domain import Offering
from broker.context import Context
from broker.runtime import run_as
from broker.settings import Settings
from schemas.certificates import ShareClass
from schemas.identity import ISSUER_ID

T = TypeVar("T")
app = typer.Typer(help="The issuing agent's books.", no_args_is_help=True)
Issue = Annotated[str, typer.Argument(help="the issue code", show_default=False)]


async def _as_issuer(settings: Settings, action: Callable[[Context], Awaitable[T]]) -> T:
    return await run_as(settings, "issuer", ISSUER_ID, action)


@app.command()
def offer(
    issue_code: Issue,
    company: Annotated[str, typer.Option(help="the company's name", show_default=False)],
    incorporated: Annotated[date, typer.Option(help="YYYY-MM-DD", show_default=False)],
    shares: Annotated[int, typer.Option(help="shares offered", show_default=False)],
    price: Annotated[Decimal, typer.Option(parser=decimal, help="offer price per share", show_default=False)],
    lot: Annotated[int, typer.Option(help="the minimum lot")] = 100,
    par_value: Annotated[Decimal | None, typer.Option(parser=decimal, help="par value per share")] = None,
    share_class: Annotated[ShareClass, typer.Option("--class", help="the class of shares")] = ShareClass.COMMON,
) -> None:
    """Open a new-share offering."""
    offering = Offering(
        issue_code=issue_code,
        company_name=company,
        incorporated_on=incorporated,
        share_class=share_class,
        offer_price=price,
        shares_offered=shares,
        shares_remaining=shares,
        minimum_lot=lot,
        par_value_per_share=par_value,
    )

    async def body(settings: Settings) -> None:
        await _as_issuer(settings, lambda ctx: repo.open_offering(ctx.connection, offering))
        print(f"opened offering {offering.issue_code}")

    run(body)


@app.command()
def register(issue_code: Issue) -> None:
    """The shareholder register of an issue."""

    async def body(settings: Settings) -> None:
        rows = await _as_issuer(settings, lambda ctx: repo.register_rows(ctx.connection, issue_code))
        print(render.table(list(rows[0]) if rows else ["register"], [list(r.values()) for r in rows], indent=""))

    run(body)


@app.command()
def offerings() -> None:
    """Every offering."""

    async def body(settings: Settings) -> None:
        found = await _as_issuer(settings, lambda ctx: repo.offerings(ctx.connection))
        print(
            render.table(
                ["issue", "company", "class", "price", "offered", "remaining", "lot", "status"],
                [
                    [
                        o.issue_code,
                        o.company_name,
                        o.share_class,
                        o.offer_price,
                        o.shares_offered,
                        o.shares_remaining,
                        o.minimum_lot,
                        o.status,
                    ]
                    for o in found
                ],
                indent="",
            )
        )

    run(body)


@app.command("publish-certid-list")
def publish_certid_list() -> None:
    """Send the exchange every issue's CertID list."""

    async def body(settings: Settings) -> None:
        count = await _as_issuer(
            settings, functools.partial(publish_certid_lists, max_message_bytes=settings.max_message_bytes)
        )
        print(f"queued CertID lists of {count} issue(s) for the exchange")

    run(body)


@app.command()
def history(cert_id: Annotated[UUID, typer.Argument(help="the CertID", show_default=False)]) -> None:
    """The life of a certificate: issuance, name transfers, reissues."""

    async def body(settings: Settings) -> int:
        events = await _as_issuer(settings, lambda ctx: repo.history(ctx.connection, cert_id))
        print(
            render.table(
                ["when", "event", "CertID", "from CertID", "holder", "shares", "number", "status", "NTN/reissue"],
                [
                    [
                        e["at"].isoformat(timespec="seconds"),
                        e["event"],
                        e["cert_id"],
                        e["from_cert_id"],
                        e["holder"],
                        e["shares"],
                        e["certificate_number"],
                        e["status"],
                        e["number"],
                    ]
                    for e in events
                ],
                indent="",
            )
        )
        return 0 if events else 1

    run(body)
