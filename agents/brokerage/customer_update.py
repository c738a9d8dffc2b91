"""``kabuto brokerage customer-update``: correct a registered customer — a new PIN, or its account
list replaced — validated as at registration (issue 10). ``account`` is also how ``brokerage
customer`` reads its ``--account`` values."""

from __future__ import annotations

from typing import Annotated

import typer

from agents.brokerage import operators
from agents.brokerage.customers import CustomerAccount
from agents.cli_runtime import run
from agents.cli_types import split
from broker.runtime import run_as
from broker.settings import Settings

ACCOUNT_SHAPE = "ACCOUNT:INSTITUTION:bank|fund:PRIORITY"


def account(text: str) -> CustomerAccount:
    account_id, institution, kind, priority = split(text, 4, ACCOUNT_SHAPE)
    try:
        return CustomerAccount(account_id, institution, kind, int(priority))
    except ValueError as exc:
        raise typer.BadParameter(f"expected {ACCOUNT_SHAPE} with a whole-number PRIORITY, got {text!r}") from exc


def customer_update(
    customer_id: Annotated[str, typer.Argument(help="the customer", show_default=False)],
    pin: Annotated[str | None, typer.Option(help="a new PIN")] = None,
    accounts: Annotated[
        list[CustomerAccount] | None,
        typer.Option(
            "--account",
            parser=account,
            metavar="ACCOUNT:INSTITUTION:KIND:PRIORITY",
            help=f"{ACCOUNT_SHAPE} (repeat); replaces every account of the customer",
        ),
    ] = None,
) -> None:
    """Correct a customer: a new PIN, or its accounts replaced."""

    async def body(settings: Settings) -> None:
        await run_as(settings, "brokerage", "brokerage", operators.update_customer(customer_id, pin, accounts))
        changed = [*(["PIN"] if pin else []), *([f"{len(accounts)} account(s)"] if accounts else [])]
        print(f"customer {customer_id} updated: {', '.join(changed)}")

    run(body)
