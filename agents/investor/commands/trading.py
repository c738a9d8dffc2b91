"""``kabuto investor order|cancel|replace|status|orders|executions``: orders at the exchange."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Annotated
from uuid import UUID

import typer

from agents import render, waiting
from agents.cli_types import SIGNED_ARGUMENTS, As, decimal
from agents.investor import answer_repo, order_file
from agents.investor.client import InvestorClient
from agents.investor.commands.params import (
    WAIT,
    Issue,
    Limit,
    NoWait,
    OrderId,
    Quantity,
    SideArgument,
    Timeout,
    acting,
    order_id,
    sent_to,
)
from agents.investor.order_file import OrderFileError
from agents.investor.trading import OrderTicket
from schemas.trading import TimeInForce

app = typer.Typer()


@app.command(context_settings=SIGNED_ARGUMENTS)
def order(
    user: As,
    side: SideArgument,
    issue_code: Issue,
    quantity: Quantity,
    account: Annotated[str, typer.Option(help="settlement account", show_default=False)],
    limit: Limit = None,
    tif: Annotated[TimeInForce, typer.Option(help="time in force")] = TimeInForce.DAY,
    certificate: Annotated[UUID | None, typer.Option(help="CertID to sell from (sell orders)")] = None,
    name: Annotated[str | None, typer.Option(help="holder of record (buy orders)")] = None,
    address: Annotated[str | None, typer.Option(help="holder's address (buy orders)")] = None,
    client_order_id: OrderId = None,
    safekeeping_account: Annotated[
        str | None, typer.Option(help="trade book-entry from/into this custody account (no certificate)")
    ] = None,
    no_wait: NoWait = False,
    timeout: Timeout = WAIT,
) -> None:
    """Place a buy or sell order (seed 001 message 33)."""

    async def act(client: InvestorClient) -> int:
        ticket = OrderTicket(
            client_order_id=order_id(user, client_order_id),
            issue_code=issue_code,
            side=side,
            quantity=quantity,
            settlement_account=account,
            price=limit,
            time_in_force=tif,
            cert_id=certificate,
            holder_name=name,
            holder_address=address,
            safekeeping_account=safekeeping_account,
        )
        sent = sent_to(await client.place_order(ticket), "exchange", answer_repo.order(user, ticket.client_order_id))
        queued = f"order {ticket.client_order_id} queued; `kabuto investor orders --as {user}` shows it"
        return await waiting.report(client, sent, queued, no_wait=no_wait, timeout=timeout)

    acting(user, act)


@app.command("order-list")
def order_list(
    user: As,
    file: Annotated[
        Path, typer.Argument(help="a CSV file, one order a line", exists=True, dir_okay=False, show_default=False)
    ],
) -> None:
    """Place every order of a CSV file at once, each its own signed order (seed 001 message 33), all
    recorded in one transaction or none. Columns: side, issue, quantity, account; limit, tif,
    certificate, name, address, safekeeping_account and id where an order needs them. The
    exchange's answers appear in `kabuto investor orders`."""
    try:
        tickets = order_file.tickets(file.read_text(encoding="utf-8-sig"), lambda: order_id(user, None))
    except (OrderFileError, UnicodeDecodeError) as exc:
        raise typer.BadParameter(f"{file}: {exc}", param_hint="FILE") from None

    async def act(client: InvestorClient) -> None:
        message_ids = await client.place_orders(tickets)
        rows = [
            [ticket.client_order_id, ticket.side.value, ticket.issue_code, ticket.quantity, message_id]
            for ticket, message_id in zip(tickets, message_ids, strict=True)
        ]
        print(render.table(["client order id", "side", "issue", "qty", "message id"], rows, indent=""))
        print(f"{len(tickets)} orders queued; `kabuto investor orders --as {user}` shows the exchange's answers")

    acting(user, act)


@app.command()
def cancel(
    user: As,
    client_order_id: Annotated[str, typer.Argument(help="the order's client order id", show_default=False)],
    no_wait: NoWait = False,
    timeout: Timeout = WAIT,
) -> None:
    """Cancel an order by client order id."""

    async def act(client: InvestorClient) -> int:
        message_id = await client.cancel_order(client_order_id)
        sent = sent_to(message_id, "exchange", answer_repo.cancel(user, client_order_id, message_id))
        return await waiting.report(
            client, sent, f"cancel of {client_order_id} queued", no_wait=no_wait, timeout=timeout
        )

    acting(user, act)


@app.command()
def replace(
    user: As,
    client_order_id: Annotated[str, typer.Argument(help="the order to replace", show_default=False)],
    new_client_order_id: Annotated[str, typer.Argument(help="the replacing order's id", show_default=False)],
    quantity: Annotated[int, typer.Option(help="the new quantity", show_default=False)],
    limit: Annotated[Decimal | None, typer.Option(parser=decimal, help="the new limit price")] = None,
    no_wait: NoWait = False,
    timeout: Timeout = WAIT,
) -> None:
    """Cancel-replace an order."""

    async def act(client: InvestorClient) -> int:
        message_id = await client.replace_order(client_order_id, new_client_order_id, quantity, limit)
        sent = sent_to(message_id, "exchange", answer_repo.order(user, new_client_order_id))
        queued = f"replace of {client_order_id} by {new_client_order_id} queued"
        return await waiting.report(client, sent, queued, no_wait=no_wait, timeout=timeout)

    acting(user, act)


@app.command(context_settings=SIGNED_ARGUMENTS)
def status(
    user: As,
    acceptance_number: Annotated[int, typer.Argument(help="the order acceptance number (OAN)", show_default=False)],
    no_wait: NoWait = False,
    timeout: Timeout = WAIT,
) -> None:
    """Ask the exchange for an order's status by acceptance number."""

    async def act(client: InvestorClient) -> int:
        message_id = await client.ask_order_status(acceptance_number)
        sent = sent_to(message_id, "exchange", answer_repo.order_status(user, acceptance_number, message_id))
        queued = "status inquiry queued; the answer appears in `kabuto investor orders`"
        return await waiting.report(client, sent, queued, no_wait=no_wait, timeout=timeout)

    acting(user, act)


@app.command()
def orders(user: As) -> None:
    """Orders and their state."""

    async def act(client: InvestorClient) -> None:
        _print_orders(await client.orders())

    acting(user, act)


@app.command()
def executions(user: As) -> None:
    """Executions and their name transfers."""

    async def act(client: InvestorClient) -> None:
        fills = await client.executions()
        print(render.table(list(fills[0]) if fills else ["executions"], [list(f.values()) for f in fills], indent=""))

    acting(user, act)


def _print_orders(orders: list) -> None:  # type: ignore[type-arg]
    print(
        render.table(
            ["client order id", "OAN", "side", "issue", "qty", "price", "filled", "status", "reason"],
            [
                [
                    o.client_order_id,
                    o.acceptance_number,
                    o.side,
                    o.issue_code,
                    o.quantity,
                    o.price or "market",
                    o.filled,
                    o.status,
                    o.reason,
                ]
                for o in orders
            ],
            indent="",
        )
    )
