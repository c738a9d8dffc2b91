"""``kabuto investor identify|broker-order|brokered``: the customer terminal at the brokerage (seeds 000
and 002)."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

import typer

from agents import waiting
from agents.cli_types import SIGNED_ARGUMENTS, As, split
from agents.investor import answer_repo, brokered_view
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
from schemas.brokerage import FundingLeg, MismatchRule, SettlementType

app = typer.Typer()

Pin = Annotated[str, typer.Option(help="the customer's PIN", show_default=False)]
Customer = Annotated[str, typer.Argument(help="the customer id at the brokerage", show_default=False)]


@app.command()
def identify(user: As, customer_id: Customer, pin: Pin, no_wait: NoWait = False, timeout: Timeout = WAIT) -> None:
    """Identify to the brokerage; it answers with prices, holdings and accounts."""

    async def act(client: InvestorClient) -> int:
        request_id = await client.identify(customer_id, pin)
        sent = sent_to(request_id, "brokerage", answer_repo.identification(request_id))
        code = await waiting.report(client, sent, "identification sent", no_wait=no_wait, timeout=timeout)
        shown = await client.customer_view()
        if shown:
            print("latest view received:")
            print(shown.model_dump_json(indent=2))
        return code

    acting(user, act)


@app.command("broker-order", context_settings=SIGNED_ARGUMENTS)
def broker_order(
    user: As,
    customer_id: Customer,
    side: SideArgument,
    issue_code: Issue,
    quantity: Quantity,
    pin: Pin,
    company: Annotated[str, typer.Option(help="the securities company to order through", show_default=False)],
    funding: Annotated[
        list[FundingLeg],
        typer.Option(
            "--fund",
            parser=_fund,
            metavar="ACCOUNT:AMOUNT:PRIORITY",
            help="an account, how much it pays or receives, and its priority (repeat)",
            show_default=False,
        ),
    ],
    limit: Limit = None,
    rule: Annotated[MismatchRule | None, typer.Option(help="how a mismatch is adjusted")] = None,
    regular: Annotated[bool, typer.Option("--regular", help="regular (4th-day) settlement")] = False,
    client_order_id: OrderId = None,
    no_wait: NoWait = False,
    timeout: Timeout = WAIT,
) -> None:
    """Order through the brokerage with an account indication (seed 000 claim 1)."""
    settlement = SettlementType.REGULAR if regular else SettlementType.IMMEDIATE

    async def act(client: InvestorClient) -> int:
        coid = order_id(user, client_order_id)
        message_id = await client.broker_order(
            coid, customer_id, pin, company, issue_code, side, quantity, funding, limit, rule, settlement
        )
        queued = f"brokered order {coid} queued; `kabuto investor brokered --as {user}` shows it"
        sent = sent_to(message_id, "brokerage", answer_repo.brokered_order(user, coid))
        return await waiting.report(client, sent, queued, no_wait=no_wait, timeout=timeout)

    acting(user, act)


@app.command()
def brokered(user: As) -> None:
    """Brokered orders, their statements and settlement."""

    async def act(client: InvestorClient) -> None:
        placed = await client.brokered_orders()
        print("\n".join(line for o in placed for line in brokered_view.lines(o)) or "(no brokered orders)")

    acting(user, act)


def _fund(text: str) -> FundingLeg:
    account, amount, priority = split(text, 3, "ACCOUNT:AMOUNT:PRIORITY")
    try:
        return FundingLeg(account=account, amount=Decimal(amount), priority=int(priority))
    except (ValueError, ArithmeticError) as exc:  # pydantic's ValidationError is a ValueError
        raise typer.BadParameter(f"expected ACCOUNT:AMOUNT:PRIORITY, got {text!r}: {exc}") from exc
