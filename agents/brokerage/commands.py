"""``kabuto brokerage …``: contracts, customers, price information, fees and orders, for operators."""

from __future__ import annotations

import argparse
from datetime import UTC, date, datetime
from decimal import Decimal

from agents import contracts, render
from agents.brokerage import customer_update, deferred, operators
from agents.brokerage.fees import DEFAULT_FEES, AllowancePolicy, FeeSchedule
from agents.brokerage.ledger_legs import Design
from agents.cli_types import decimal
from broker.runtime import run_as
from broker.settings import Settings
from schemas.brokerage import MismatchRule, TransactionConditions
from schemas.trading import OrderType, Side

BROKERAGE_ID = "brokerage"


def _band(text: str) -> tuple[Decimal, Decimal]:
    try:
        up_to, commission = text.split(":")
        return Decimal(up_to), Decimal(commission)
    except (ValueError, ArithmeticError) as exc:
        raise argparse.ArgumentTypeError(f"expected CONSIDERATION_UP_TO:COMMISSION, got {text!r}") from exc


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    bk = sub.add_parser("brokerage", help="the brokerage intermediary's books").add_subparsers(
        dest="brokerage_command", required=True, metavar="BROKERAGE_COMMAND"
    )
    company = bk.add_parser("company", help="an intermediation contract with a securities company")
    company.add_argument("company_id")
    company.add_argument("--name", required=True)
    company.add_argument(
        "--design",
        required=True,
        choices=[d.value for d in Design],
        help="who settles on whose account (seed 002 §8.2 means 23, §8.4 means 40)",
    )
    company.add_argument("--capital", type=decimal, help="fund the company's clearing account with this much (once)")
    customer = bk.add_parser("customer", help="register a customer with its accounts and conditions")
    customer.add_argument("customer_id")
    customer.add_argument("--user", required=True, help="the investor participant the customer's terminal signs as")
    customer.add_argument("--pin", required=True)
    customer.add_argument(
        "--account",
        type=customer_update.account,
        action="append",
        required=True,
        help="ACCOUNT:INSTITUTION:bank|fund:PRIORITY (INSTITUTION is 'intermediary' or a company)",
    )
    customer.add_argument("--allowed-issue", action="append", default=[])
    customer.add_argument("--max-order-value", type=decimal)
    customer.add_argument("--order-types", default="limit,market")
    customer.add_argument("--sides", default="buy,sell")
    customer.add_argument(
        "--rule", default=MismatchRule.PROTECT_HIGH_PRIORITY.value, choices=[r.value for r in MismatchRule]
    )
    customer_update.add_parser(bk)
    price = bk.add_parser("price", help="an issue's reference price (previous close) for price limits")
    price.add_argument("issue_code")
    price.add_argument("reference", type=decimal)
    fees = bk.add_parser("fees", help="the commission table, tax rate, fee share and allowance policy")
    fees.add_argument("--band", type=_band, action="append", help="CONSIDERATION_UP_TO:COMMISSION (repeat)")
    fees.add_argument("--above-rate", type=decimal, default=DEFAULT_FEES.above_rate)
    fees.add_argument("--tax-rate", type=decimal, default=DEFAULT_FEES.consumption_tax_rate)
    fees.add_argument("--fee-share", type=decimal, default=DEFAULT_FEES.intermediary_share)
    fees.add_argument("--allowance-factor", type=decimal, default=Decimal(1))
    fees.add_argument("--regular-share", type=decimal, default=Decimal("0.5"))
    bk.add_parser("orders", help="brokered orders and where each stands")
    due = bk.add_parser("settle-due", help="post the regular trades' customer legs due on a date (issue 11)")
    due.add_argument("--as-of", type=date.fromisoformat, help="the business date (YYYY-MM-DD); today (UTC) by default")


async def run(args: argparse.Namespace, settings: Settings) -> int:
    match args.brokerage_command:
        case "company":
            accounts = await contracts.open_contract(
                settings, args.company_id, args.name, Design(args.design), args.capital
            )
            names = (
                accounts.clearing,
                accounts.commission,
                accounts.tax,
                accounts.im_account_at_sc,
                accounts.im_cash,
                accounts.sc_account_at_im,
                accounts.im_fees,
            )
            print(f"contract with {args.company_id} ({args.design}); settlement accounts opened: {', '.join(names)}")
        case "customer":
            conditions = TransactionConditions(
                allowed_issues=tuple(args.allowed_issue),
                max_order_value=args.max_order_value,
                allowed_order_types=tuple(OrderType(t) for t in args.order_types.split(",")),
                allowed_sides=tuple(Side(s) for s in args.sides.split(",")),
                mismatch_rule=MismatchRule(args.rule),
            )
            await run_as(
                settings,
                BROKERAGE_ID,
                BROKERAGE_ID,
                operators.register_customer(args.customer_id, args.user, args.pin, args.account, conditions),
            )
            print(f"registered customer {args.customer_id} ({args.user}) with {len(args.account)} account(s)")
        case "customer-update":
            return await customer_update.run(args, settings)
        case "price":
            await run_as(
                settings, BROKERAGE_ID, BROKERAGE_ID, operators.set_reference_price(args.issue_code, args.reference)
            )
            print(f"{args.issue_code} reference price {args.reference}")
        case "fees":
            schedule = FeeSchedule(
                bands=tuple(args.band) if args.band else DEFAULT_FEES.bands,
                above_rate=args.above_rate,
                consumption_tax_rate=args.tax_rate,
                intermediary_share=args.fee_share,
            )
            policy = AllowancePolicy(factor=args.allowance_factor, regular_share=args.regular_share)
            await run_as(settings, BROKERAGE_ID, BROKERAGE_ID, operators.set_fee_schedule(schedule, policy))
            print("fee schedule saved")
        case "orders":
            rows = await run_as(
                settings,
                BROKERAGE_ID,
                BROKERAGE_ID,
                lambda ctx: ctx.connection.fetch(
                    """SELECT client_order_id, customer_id, company_id, issue_code, side, quantity, price,
                          settlement_date, status, coalesce(fail_reason, reason), fail_amount
                       FROM orders ORDER BY created_at"""
                ),
            )
            print(
                render.table(
                    [
                        "client order",
                        "customer",
                        "company",
                        "issue",
                        "side",
                        "qty",
                        "price",
                        "settles",
                        "status",
                        "reason",
                        "owed",
                    ],
                    [list(r.values()) for r in rows],
                    indent="",
                )
            )
        case "settle-due":
            as_of = args.as_of or datetime.now(UTC).date()
            sent = await run_as(settings, BROKERAGE_ID, BROKERAGE_ID, lambda ctx: deferred.settle_due(ctx, as_of))
            print(f"{sent} customer settlement(s) due on {as_of.isoformat()} sent for posting")
    return 0
