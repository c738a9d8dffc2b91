"""``kabuto brokerage …``: contracts, customers, price information, fees and orders, for operators."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Annotated, NamedTuple

import typer

from agents import contracts, render
from agents.brokerage import customer_update, deferred, operators
from agents.brokerage.customers import CustomerAccount
from agents.brokerage.fees import DEFAULT_FEES, AllowancePolicy, FeeSchedule
from agents.brokerage.ledger_legs import Design
from agents.cli_runtime import run
from agents.cli_types import SIGNED_ARGUMENTS, decimal, split
from broker.context import Context
from broker.runtime import run_as
from broker.settings import Settings
from schemas.brokerage import MismatchRule, TransactionConditions
from schemas.trading import OrderType, Side

BROKERAGE_ID = "brokerage"
app = typer.Typer(help="The brokerage intermediary's books.", no_args_is_help=True)
app.command("customer-update")(customer_update.customer_update)

Rate = Annotated[Decimal, typer.Option(parser=decimal)]


class CommissionBand(NamedTuple):
    """One row of the commission table: consideration up to ``up_to`` pays ``commission``."""

    up_to: Decimal
    commission: Decimal


def _band(text: str) -> CommissionBand:
    up_to, commission = split(text, 2, "CONSIDERATION_UP_TO:COMMISSION")
    return CommissionBand(decimal(up_to), decimal(commission))


@app.command()
def company(
    company_id: Annotated[str, typer.Argument(help="the securities company", show_default=False)],
    name: Annotated[str, typer.Option(help="its name", show_default=False)],
    design: Annotated[
        Design,
        typer.Option(help="who settles on whose account (seed 002 §8.2 means 23, §8.4 means 40)", show_default=False),
    ],
    capital: Annotated[
        Decimal | None, typer.Option(parser=decimal, help="fund the company's clearing account with this much (once)")
    ] = None,
) -> None:
    """An intermediation contract with a securities company."""

    async def body(settings: Settings) -> None:
        accounts = await contracts.open_contract(settings, company_id, name, design, capital)
        names = (
            accounts.clearing,
            accounts.commission,
            accounts.tax,
            accounts.im_account_at_sc,
            accounts.im_cash,
            accounts.sc_account_at_im,
            accounts.im_fees,
        )
        print(f"contract with {company_id} ({design.value}); settlement accounts opened: {', '.join(names)}")

    run(body)


@app.command()
def customer(
    customer_id: Annotated[str, typer.Argument(help="the customer's id", show_default=False)],
    user: Annotated[str, typer.Option(help="the investor participant the customer's terminal signs as")],
    pin: Annotated[str, typer.Option(help="the customer's PIN", show_default=False)],
    accounts: Annotated[
        list[CustomerAccount],
        typer.Option(
            "--account",
            parser=customer_update.account,
            metavar="ACCOUNT:INSTITUTION:KIND:PRIORITY",
            help=f"{customer_update.ACCOUNT_SHAPE} (repeat; INSTITUTION is 'intermediary' or a company)",
            show_default=False,
        ),
    ],
    allowed_issues: Annotated[
        list[str] | None, typer.Option("--allowed-issue", help="an issue the customer may trade (repeat)")
    ] = None,
    max_order_value: Annotated[Decimal | None, typer.Option(parser=decimal, help="the largest order value")] = None,
    order_types: Annotated[str, typer.Option(help="comma-separated: limit, market")] = "limit,market",
    sides: Annotated[str, typer.Option(help="comma-separated: buy, sell")] = "buy,sell",
    rule: Annotated[MismatchRule, typer.Option(help="how a mismatch is adjusted")] = MismatchRule.PROTECT_HIGH_PRIORITY,
) -> None:
    """Register a customer with its accounts and conditions."""

    async def body(settings: Settings) -> None:
        conditions = TransactionConditions(
            allowed_issues=tuple(allowed_issues or ()),
            max_order_value=max_order_value,
            allowed_order_types=tuple(OrderType(t) for t in order_types.split(",")),
            allowed_sides=tuple(Side(s) for s in sides.split(",")),
            mismatch_rule=rule,
        )
        registration = operators.register_customer(customer_id, user, pin, accounts, conditions)
        await run_as(settings, BROKERAGE_ID, BROKERAGE_ID, registration)
        print(f"registered customer {customer_id} ({user}) with {len(accounts)} account(s)")

    run(body)


@app.command(context_settings=SIGNED_ARGUMENTS)
def price(
    issue_code: Annotated[str, typer.Argument(help="the issue code", show_default=False)],
    reference: Annotated[Decimal, typer.Argument(parser=decimal, help="the previous close", show_default=False)],
) -> None:
    """An issue's reference price (previous close) for price limits."""

    async def body(settings: Settings) -> None:
        await run_as(settings, BROKERAGE_ID, BROKERAGE_ID, operators.set_reference_price(issue_code, reference))
        print(f"{issue_code} reference price {reference}")

    run(body)


@app.command()
def fees(
    bands: Annotated[
        list[CommissionBand] | None,
        typer.Option(
            "--band",
            parser=_band,
            metavar="UP_TO:COMMISSION",
            help="CONSIDERATION_UP_TO:COMMISSION (repeat; default: the standard table)",
        ),
    ] = None,
    above_rate: Rate = DEFAULT_FEES.above_rate,
    tax_rate: Rate = DEFAULT_FEES.consumption_tax_rate,
    fee_share: Rate = DEFAULT_FEES.intermediary_share,
    allowance_factor: Rate = Decimal(1),
    regular_share: Rate = Decimal("0.5"),
) -> None:
    """The commission table, tax rate, fee share and allowance policy."""
    schedule = FeeSchedule(
        bands=tuple(bands) if bands else DEFAULT_FEES.bands,
        above_rate=above_rate,
        consumption_tax_rate=tax_rate,
        intermediary_share=fee_share,
    )
    policy = AllowancePolicy(factor=allowance_factor, regular_share=regular_share)

    async def body(settings: Settings) -> None:
        await run_as(settings, BROKERAGE_ID, BROKERAGE_ID, operators.set_fee_schedule(schedule, policy))
        print("fee schedule saved")

    run(body)


@app.command()
def orders() -> None:
    """Brokered orders and where each stands."""

    async def body(settings: Settings) -> None:
        rows = await run_as(settings, BROKERAGE_ID, BROKERAGE_ID, _orders)
        headings = ["client order", "customer", "company", "issue", "side", "qty", "price", "settles", "status"]
        print(render.table([*headings, "reason", "owed"], rows, indent=""))

    run(body)


async def _orders(ctx: Context) -> list[list[object]]:
    rows = await ctx.connection.fetch(
        """SELECT client_order_id, customer_id, company_id, issue_code, side, quantity, price,
                  settlement_date, status, coalesce(fail_reason, reason), fail_amount
           FROM orders ORDER BY created_at"""
    )
    return [list(r.values()) for r in rows]


@app.command("settle-due")
def settle_due(
    as_of: Annotated[date | None, typer.Option(help="the business date (YYYY-MM-DD); today (UTC) by default")] = None,
) -> None:
    """Post the regular trades' customer legs due on a date (issue 11)."""

    async def body(settings: Settings) -> None:
        day = as_of or datetime.now(UTC).date()
        sent = await run_as(settings, BROKERAGE_ID, BROKERAGE_ID, lambda ctx: deferred.settle_due(ctx, day))
        print(f"{sent} customer settlement(s) due on {day.isoformat()} sent for posting")

    run(body)
