"""``kabuto brokerage customer-update``: correct a registered customer — a new PIN, or its account
list replaced — validated as at registration (issue 10). One function declares the command and
one runs it, so it moves to a CLI library as it is."""

from __future__ import annotations

import argparse

from agents.brokerage import operators
from agents.brokerage.customers import CustomerAccount
from broker.runtime import run_as
from broker.settings import Settings


def account(text: str) -> CustomerAccount:
    try:
        account, institution, kind, priority = text.split(":")
        return CustomerAccount(account, institution, kind, int(priority))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected ACCOUNT:INSTITUTION:bank|fund:PRIORITY, got {text!r}") from exc


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    update = sub.add_parser("customer-update", help="correct a customer: a new PIN, or its accounts replaced")
    update.add_argument("customer_id")
    update.add_argument("--pin")
    update.add_argument(
        "--account",
        type=account,
        action="append",
        help="ACCOUNT:INSTITUTION:bank|fund:PRIORITY (repeat); replaces every account of the customer",
    )


async def run(args: argparse.Namespace, settings: Settings) -> int:
    action = operators.update_customer(args.customer_id, args.pin, args.account)
    await run_as(settings, "brokerage", "brokerage", action)
    changed = [*(["PIN"] if args.pin else []), *([f"{len(args.account)} account(s)"] if args.account else [])]
    print(f"customer {args.customer_id} updated: {', '.join(changed)}")
    return 0
