"""``kabuto credit card|cards|issuer-policy|authorisations|repay|default|expire``: the card issuer's
cards (DB 600), its purchases and what became of them, acting as ``card-issuer`` (seed 003)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Annotated, TypeVar
from uuid import UUID

import typer

from agents import render
from agents.cli_runtime import run
from agents.cli_types import SIGNED_ARGUMENTS
from agents.credit import card_issuer, card_repo, operators
from agents.credit.commands.params import LedgerAccount, Seconds
from agents.credit.domain import CardAccount, CardType
from broker.context import Context
from broker.runtime import run_as
from broker.settings import Settings
from schemas.identity import CARD_ISSUER_ID

T = TypeVar("T")
app = typer.Typer()

Authorisation = Annotated[UUID, typer.Argument(help="the card issuer's authorisation", show_default=False)]


async def _as_card_issuer(settings: Settings, action: Callable[[Context], Awaitable[T]]) -> T:
    return await run_as(settings, "credit", CARD_ISSUER_ID, action)


@app.command()
def card(
    card_number: Annotated[str, typer.Argument(help="the card number", show_default=False)],
    purchaser: Annotated[str, typer.Option(help="the card's purchaser", show_default=False)],
    card_type: Annotated[CardType, typer.Option("--type", help="credit or debit", show_default=False)],
    limit: Annotated[
        int, typer.Option(help="credit limit, or a debit card's deposit balance (JPY)", show_default=False)
    ],
    repayment_account: Annotated[
        str, typer.Option(help="the settlement account withdrawals draw on", show_default=False)
    ],
) -> None:
    """Open or change a card (DB 600): its purchaser, type and limit."""

    async def body(settings: Settings) -> None:
        await _as_card_issuer(
            settings, operators.open_card(card_number, purchaser, card_type, limit, repayment_account)
        )
        print(f"card {card_number}: {purchaser}, {card_type.value}, limit {limit:,}")

    run(body)


@app.command()
def cards() -> None:
    """The card issuer's cards, limits and usage."""

    async def q(ctx: Context) -> list[tuple[CardAccount, str]]:
        return await card_repo.cards(ctx.connection)

    async def body(settings: Settings) -> None:
        rows = await _as_card_issuer(settings, q)
        print(
            render.table(
                ["card", "purchaser", "type", "limit", "outstanding", "remaining", "repayment account"],
                [
                    [c.card_number, c.purchaser, c.card_type, c.credit_limit, c.outstanding, c.remaining, acc]
                    for c, acc in rows
                ],
            )
        )

    run(body)


@app.command("issuer-policy")
def issuer_policy(account: LedgerAccount, capture_window: Seconds = timedelta(days=7)) -> None:
    """The card issuer's ledger account and capture window."""

    async def body(settings: Settings) -> None:
        await _as_card_issuer(settings, operators.issuer_policy(account, capture_window))
        print(f"card issuer: ledger account {account}, capture window {capture_window}")

    run(body)


@app.command()
def authorisations() -> None:
    """The card issuer's purchases and what became of them."""

    async def q(ctx: Context) -> list[card_repo.Authorisation]:
        return await card_repo.authorisations(ctx.connection)

    async def body(settings: Settings) -> None:
        found = await _as_card_issuer(settings, q)
        headers = ["authorisation", "merchant", "purchase", "purchaser", "price", "covered", "secured", "repaid"]
        rows = [
            [a.authorisation_id, a.merchant, a.purchase_id, a.purchaser, a.price, a.covered, a.secured, a.repaid]
            for a in found
        ]
        print(render.table([*headers, "status"], [[*r, a.status] for r, a in zip(rows, found, strict=True)]))

    run(body)


@app.command(context_settings=SIGNED_ARGUMENTS)
def repay(
    authorisation: Authorisation,
    amount: Annotated[int, typer.Argument(help="how much (JPY)", show_default=False)],
) -> None:
    """S7000: withdraw from the purchaser's account for a captured purchase."""

    async def body(settings: Settings) -> None:
        attempt = await _as_card_issuer(settings, card_issuer.repay(authorisation, amount))
        print(f"withdrawal {attempt} of {amount:,} requested; the settlement ledger decides")

    run(body)


@app.command()
def default(authorisation: Authorisation) -> None:
    """S9000: declare the secured part overdue; the line recovers it."""

    async def body(settings: Settings) -> None:
        shortage = await _as_card_issuer(settings, card_issuer.declare_default(authorisation))
        print(f"shortage of {shortage:,} reported to the line")

    run(body)


@app.command()
def expire() -> None:
    """Lapse approvals not captured in time (also done periodically)."""

    async def body(settings: Settings) -> None:
        count = await _as_card_issuer(settings, card_issuer.expire_uncaptured())
        print(f"{count} approval(s) lapsed")

    run(body)
