"""``kabuto settlement …``: accounts, deposits, withdrawals and statements, for operators."""

from __future__ import annotations

import argparse

from agents import render
from agents.cli_types import decimal
from agents.settlement import app
from agents.settlement.domain import AccountKind
from broker.runtime import run_as
from broker.settings import Settings
from schemas.identity import SETTLEMENT_ID


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    st = sub.add_parser("settlement", help="the settlement ledger").add_subparsers(
        dest="settlement_command", required=True, metavar="SETTLEMENT_COMMAND"
    )
    opening = st.add_parser("open-account", help="open a customer's settlement account")
    opening.add_argument("account")
    opening.add_argument("--owner", required=True, help="the investor's user id")
    opening.add_argument("--currency", default="JPY")
    opening.add_argument(
        "--kind",
        default="customer",
        choices=["customer", "institution"],
        help="institution: an intermediary's or securities company's own account (may run negative)",
    )
    opening.add_argument("--institution", default="settlement", help="where it is held: 'intermediary' or a company")
    for name, help_ in (("deposit", "money arrives for an account"), ("withdraw", "money leaves an account")):
        move = st.add_parser(name, help=help_)
        move.add_argument("account")
        move.add_argument("amount", type=decimal)
        move.add_argument("--reference", required=True, help="the bank's reference; posts only once")
    statement = st.add_parser("statement", help="an account's balance and recent postings")
    statement.add_argument("account")
    statement.add_argument("--entries", type=int, default=20)


async def run(args: argparse.Namespace, settings: Settings) -> int:
    match args.settlement_command:
        case "open-account":
            account = await run_as(
                settings,
                "settlement",
                SETTLEMENT_ID,
                app.open_account(
                    args.account, args.owner, args.currency, kind=AccountKind(args.kind), institution=args.institution
                ),
            )
            print(f"opened {account.account_id} for {args.owner} in {args.currency}")
        case "deposit" | "withdraw":
            command = app.deposit if args.settlement_command == "deposit" else app.withdraw
            posted = await run_as(
                settings, "settlement", SETTLEMENT_ID, command(args.account, args.amount, args.reference)
            )
            print(f"entry {posted.entry_id}: {args.account} balance {posted.balance}")
        case "statement":
            st = await run_as(settings, "settlement", SETTLEMENT_ID, app.statement(args.account, args.entries))
            print(
                f"{st.account.account_id} ({st.account.owner_user_id}, {st.account.currency}) "
                f"deposits {st.deposits} withdrawals {st.withdrawals}"
            )
            print(
                render.table(
                    ["entry", "posted", "kind", "reference", "amount", "balance"],
                    [[p.entry_id, p.posted_at, p.kind, p.reference, p.amount, p.balance_after] for p in st.postings],
                    indent="",
                )
            )
    return 0
