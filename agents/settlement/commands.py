"""``kabuto settlement …``: accounts, deposits, withdrawals and statements, for operators."""

from __future__ import annotations

import argparse
import functools
from datetime import date

from agents import render
from agents.cli_types import decimal
from agents.settlement import app, instruction_desk, mandates
from agents.settlement.domain import AccountKind
from agents.settlement.instructions import Instruction
from broker.runtime import run_as
from broker.settings import Settings
from schemas.dvp import DvpReason
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
    _add_dvp_parsers(st)


def _add_dvp_parsers(st: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Issue 11: settlement instructions (delivery versus payment) and mandates."""
    listing = st.add_parser("instructions", help="settlement instructions with their three-part status")
    listing.add_argument("--live", action="store_true", help="only those still to settle")
    show = st.add_parser("instruction", help="one instruction, its attempts and their reasons")
    show.add_argument("matching_number", type=int)
    cancel = st.add_parser("cancel", help="cancel an instruction on both parties' behalf (nothing moves)")
    cancel.add_argument("matching_number", type=int)
    recycle = st.add_parser("recycle", help="attempt pending instructions again; fail those past their cut-off")
    recycle.add_argument("--as-of", type=date.fromisoformat, help="the business day (default: today, UTC)")
    recycle.add_argument("--days", type=int, default=None, help="days after the settlement date before the cut-off")
    mandate = st.add_parser("mandate", help="record an owner's written consent that an agent may post on the account")
    mandate.add_argument("account")
    mandate.add_argument("--agent", required=True)


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
        case "instructions" | "instruction" | "cancel" | "recycle" | "mandate":
            return await _run_dvp(args, settings)
    return 0


async def _run_dvp(args: argparse.Namespace, settings: Settings) -> int:
    as_settlement = functools.partial(run_as, settings, "settlement", SETTLEMENT_ID)
    match args.settlement_command:
        case "instructions":
            found = await as_settlement(instruction_desk.list_instructions(args.live))
            print(render.table(_HEADINGS, [_row(i) for i in found], indent=""))
        case "instruction":
            view = await as_settlement(instruction_desk.show_instruction(args.matching_number))
            print(render.table(_HEADINGS, [_row(view.instruction)], indent=""))
            print(f"detail: {view.instruction.detail or '-'}")
            columns = ["attempt", "quantity", "amount", "from_cover", "status", "reason", "entry_id"]
            print(render.table(columns, [[a[c] for c in columns] for a in view.attempts], indent=""))
        case "cancel":
            outcome = await as_settlement(instruction_desk.cancel_instruction(args.matching_number))
            if isinstance(outcome, DvpReason):
                print(f"instruction {args.matching_number} not cancelled: {outcome.value}")
                return 1
            print(f"instruction {args.matching_number}: {outcome.processing.value}, {outcome.settlement.value}")
        case "recycle":
            days = args.days or settings.settlement_recycle_days
            recycled = await as_settlement(instruction_desk.recycle(args.as_of, days))
            print(", ".join(f"{k} {v}" for k, v in recycled.items()))
        case "mandate":
            await as_settlement(mandates.grant(args.account, args.agent))
            print(f"{args.agent} may post on {args.account}")
    return 0


_HEADINGS = [
    "OMN",
    "ISD",
    "issue",
    "qty",
    "price",
    "buyer",
    "seller",
    "processing",
    "matching",
    "settlement",
    "reason",
    "settled",
    "attempt",
]


def _row(i: Instruction) -> list[object]:
    return [
        i.matching_number,
        i.intended_settlement_date,
        i.issue_code,
        i.quantity,
        i.price,
        f"{i.buyer_user_id} ({i.buyer_account})",
        f"{i.seller_user_id} ({i.seller_account})",
        i.processing.value,
        i.matching.value,
        i.settlement.value,
        i.reason.value if i.reason else "",
        i.settled_quantity,
        i.attempt,
    ]
