"""``kabuto investor standing-cover open|close|list``: cash set aside once for buy orders
(docs/dvp.md, "Standing cover"; R-001-23)."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated
from uuid import UUID

import typer

from agents import render, waiting
from agents.cli_types import SIGNED_ARGUMENTS, As, decimal
from agents.investor import answer_repo
from agents.investor.client import InvestorClient
from agents.investor.commands.params import WAIT, NoWait, Timeout, acting, sent_to

app = typer.Typer(
    help="Cash set aside once on a settlement account: buy orders on it are booked in one hop.",
    no_args_is_help=True,
)


@app.command("open", context_settings=SIGNED_ARGUMENTS)
def open_cover(
    user: As,
    account: Annotated[str, typer.Argument(help="your settlement account", show_default=False)],
    amount: Annotated[Decimal, typer.Argument(parser=decimal, help="cash to set aside", show_default=False)],
    no_wait: NoWait = False,
    timeout: Timeout = WAIT,
) -> None:
    """Ask settlement to hold AMOUNT on ACCOUNT; your buy orders on ACCOUNT then draw on it."""

    async def act(client: InvestorClient) -> int:
        cover_id = await client.open_standing_cover(account, amount)
        cover = await client.standing_cover(cover_id)
        assert cover is not None  # committed by the call above
        sent = sent_to(cover.request_id, "exchange", answer_repo.standing_cover_opened(user, cover_id))
        queued = f"standing cover {cover_id} requested; `kabuto investor standing-cover list --as {user}` shows it"
        return await waiting.report(client, sent, queued, no_wait=no_wait, timeout=timeout)

    acting(user, act)


@app.command()
def close(
    user: As,
    cover_id: Annotated[UUID, typer.Argument(help="the standing cover's id", show_default=False)],
    no_wait: NoWait = False,
    timeout: Timeout = WAIT,
) -> None:
    """Stop drawing on a cover; it is closed once no order drawn on it is live (cancel resting ones to close sooner)."""

    async def act(client: InvestorClient) -> int:
        message_id = await client.close_standing_cover(cover_id)
        sent = sent_to(message_id, "exchange", answer_repo.standing_cover_closed(user, cover_id, message_id))
        queued = f"close of standing cover {cover_id} queued; it closes once no order drawn on it is live"
        return await waiting.report(client, sent, queued, no_wait=no_wait, timeout=timeout)

    acting(user, act)


@app.command("list")
def list_covers(user: As) -> None:
    """Your standing covers and their state."""

    async def act(client: InvestorClient) -> None:
        print(
            render.table(
                ["cover id", "account", "amount", "status", "spent", "reason", "opened"],
                [
                    [c.cover_id, c.account, c.amount, c.status, c.spent, c.reason, c.opened_at]
                    for c in await client.standing_covers()
                ],
                indent="",
            )
        )

    acting(user, act)
