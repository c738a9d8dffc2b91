"""``kabuto custody …``: safekeeping accounts, deposits and withdrawals, positions, locks and
statements, for custody's operators."""

from __future__ import annotations

import argparse
from uuid import UUID

from agents import render
from agents.custody import deposits, operators, withdrawals
from broker.runtime import run_as
from broker.settings import Settings
from schemas.custody import PositionView

CUSTODY_ID = "custody"


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cu = sub.add_parser("custody", help="custody: safekeeping accounts, positions and locks").add_subparsers(
        dest="custody_command", required=True, metavar="CUSTODY_COMMAND"
    )
    listing = cu.add_parser("accounts", help="safekeeping accounts")
    listing.add_argument("--client")
    opening = cu.add_parser("open-account", help="open a safekeeping account for a client")
    opening.add_argument("account")
    opening.add_argument("--client", required=True, help="the client's participant id")
    opening.add_argument("--custodian", default=CUSTODY_ID, help="the custodian (institution) that keeps it")
    deposit = cu.add_parser("deposit", help="claim a certificate a client handed to custody, for its account")
    deposit.add_argument("handover_id", type=UUID)
    deposit.add_argument("--account", required=True)
    cu.add_parser("deposits", help="certificates handed to custody and what became of them")
    withdraw = cu.add_parser("withdraw", help="hand a client a certificate for shares out of its position")
    withdraw.add_argument("account")
    withdraw.add_argument("issue")
    withdraw.add_argument("quantity", type=int)
    cu.add_parser("withdrawals", help="withdrawals and their state")
    positions = cu.add_parser("positions", help="positions with their four sub-balances")
    positions.add_argument("--client")
    positions.add_argument("--custodian")
    locks = cu.add_parser("locks", help="active locks")
    locks.add_argument("--client")
    statement = cu.add_parser("statement", help="a client's holdings statement")
    statement.add_argument("client")


async def run(args: argparse.Namespace, settings: Settings) -> int:
    command = args.custody_command
    match command:
        case "accounts":
            found = await run_as(settings, CUSTODY_ID, CUSTODY_ID, operators.accounts(args.client))
            print(
                render.table(
                    ["account", "client", "custodian", "status"],
                    [[a.account_id, a.client, a.custodian, a.status] for a in found],
                    indent="",
                )
            )
        case "open-account":
            account = await run_as(
                settings, CUSTODY_ID, CUSTODY_ID, operators.open_account(args.account, args.client, args.custodian)
            )
            print(f"opened safekeeping account {account.account_id} for {account.client} at {account.custodian}")
        case "deposit":
            await run_as(settings, CUSTODY_ID, CUSTODY_ID, deposits.deposit_into(args.handover_id, args.account))
            print(f"hand-over {args.handover_id} claimed for {args.account}: pending receipt until registered")
        case "deposits":
            rows = [
                [
                    d.handover_id,
                    d.transferor,
                    d.issue_code or "—",
                    d.shares or "—",
                    d.account_id or "—",
                    d.status,
                    d.reason or "",
                ]
                for d in await run_as(settings, CUSTODY_ID, CUSTODY_ID, operators.deposits())
            ]
            print(
                render.table(["hand-over", "from", "issue", "shares", "account", "status", "reason"], rows, indent="")
            )
        case "withdraw":
            wid = await run_as(
                settings, CUSTODY_ID, CUSTODY_ID, withdrawals.withdraw(args.account, args.issue, args.quantity)
            )
            print(f"withdrawal {wid}: {args.quantity} {args.issue} pending delivery from {args.account}")
        case "withdrawals":
            rows = [
                [w.withdrawal_id, w.account_id, w.issue_code, w.quantity, w.status, w.cert_id or "—"]
                for w in await run_as(settings, CUSTODY_ID, CUSTODY_ID, operators.withdrawals())
            ]
            print(render.table(["withdrawal", "account", "issue", "quantity", "status", "CertID"], rows, indent=""))
        case "positions":
            views = await run_as(settings, CUSTODY_ID, CUSTODY_ID, operators.positions(args.client, args.custodian))
            print(_positions(views))
        case "locks":
            views = await run_as(settings, CUSTODY_ID, CUSTODY_ID, operators.positions(args.client))
            rows = [
                [
                    lock.lock_id,
                    v.account,
                    lock.issue_code,
                    lock.quantity,
                    lock.lock_holder,
                    lock.reason,
                    lock.obligation_reference,
                ]
                for v in views
                for lock in v.locks
            ]
            print(
                render.table(
                    ["lock", "account", "issue", "quantity", "holder", "reason", "obligation"], rows, indent=""
                )
            )
        case "statement":
            st = await run_as(settings, CUSTODY_ID, CUSTODY_ID, operators.statement(args.client))
            print(f"holdings statement for {st.client} (cursor {st.cursor})")
            print(_positions(st.positions))
    return 0


def _positions(views: list[PositionView]) -> str:
    rows = [
        [
            v.account,
            v.custodian,
            v.issue_code,
            v.balances.available,
            v.balances.locked,
            v.balances.pending_delivery,
            v.balances.pending_receipt,
        ]
        for v in views
    ]
    return render.table(
        ["account", "custodian", "issue", "available", "locked", "pending delivery", "pending receipt"], rows, indent=""
    )
