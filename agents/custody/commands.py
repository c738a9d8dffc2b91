"""``kabuto custody …``: safekeeping accounts, deposits and withdrawals, positions, locks and
statements, for custody's operators."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar
from uuid import UUID

import typer

from agents import render
from agents.cli_runtime import run
from agents.cli_types import SIGNED_ARGUMENTS
from agents.custody import deposits as vault_deposits
from agents.custody import operators
from agents.custody import withdrawals as vault_withdrawals
from broker.context import Context
from broker.runtime import run_as
from broker.settings import Settings
from schemas.custody import PositionView

T = TypeVar("T")
CUSTODY_ID = "custody"
app = typer.Typer(help="Custody: safekeeping accounts, positions and locks.", no_args_is_help=True)

Client = Annotated[str | None, typer.Option(help="only this client")]
Account = Annotated[str, typer.Argument(help="the safekeeping account", show_default=False)]


async def _as_custody(settings: Settings, action: Callable[[Context], Awaitable[T]]) -> T:
    return await run_as(settings, CUSTODY_ID, CUSTODY_ID, action)


@app.command()
def accounts(client: Client = None) -> None:
    """Safekeeping accounts."""

    async def body(settings: Settings) -> None:
        found = await _as_custody(settings, operators.accounts(client))
        print(
            render.table(
                ["account", "client", "custodian", "status"],
                [[a.account_id, a.client, a.custodian, a.status] for a in found],
                indent="",
            )
        )

    run(body)


@app.command("open-account")
def open_account(
    account: Account,
    client: Annotated[str, typer.Option(help="the client's participant id", show_default=False)],
    custodian: Annotated[str, typer.Option(help="the custodian (institution) that keeps it")] = CUSTODY_ID,
) -> None:
    """Open a safekeeping account for a client."""

    async def body(settings: Settings) -> None:
        opened = await _as_custody(settings, operators.open_account(account, client, custodian))
        print(f"opened safekeeping account {opened.account_id} for {opened.client} at {opened.custodian}")

    run(body)


@app.command()
def deposit(
    handover_id: Annotated[UUID, typer.Argument(help="the hand-over to custody", show_default=False)],
    account: Annotated[str, typer.Option(help="the client's safekeeping account", show_default=False)],
) -> None:
    """Claim a certificate a client handed to custody, for its account."""

    async def body(settings: Settings) -> None:
        await _as_custody(settings, vault_deposits.deposit_into(handover_id, account))
        print(f"hand-over {handover_id} claimed for {account}: pending receipt until registered")

    run(body)


@app.command()
def deposits() -> None:
    """Certificates handed to custody and what became of them."""

    async def body(settings: Settings) -> None:
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
            for d in await _as_custody(settings, operators.deposits())
        ]
        print(render.table(["hand-over", "from", "issue", "shares", "account", "status", "reason"], rows, indent=""))

    run(body)


@app.command(context_settings=SIGNED_ARGUMENTS)
def withdraw(
    account: Account,
    issue: Annotated[str, typer.Argument(help="the issue code", show_default=False)],
    quantity: Annotated[int, typer.Argument(help="shares", show_default=False)],
) -> None:
    """Hand a client a certificate for shares out of its position."""

    async def body(settings: Settings) -> None:
        wid = await _as_custody(settings, vault_withdrawals.withdraw(account, issue, quantity))
        print(f"withdrawal {wid}: {quantity} {issue} pending delivery from {account}")

    run(body)


@app.command()
def withdrawals() -> None:
    """Withdrawals and their state."""

    async def body(settings: Settings) -> None:
        rows = [
            [w.withdrawal_id, w.account_id, w.issue_code, w.quantity, w.status, w.cert_id or "—"]
            for w in await _as_custody(settings, operators.withdrawals())
        ]
        print(render.table(["withdrawal", "account", "issue", "quantity", "status", "CertID"], rows, indent=""))

    run(body)


@app.command()
def positions(
    client: Client = None, custodian: Annotated[str | None, typer.Option(help="only this custodian")] = None
) -> None:
    """Positions with their four sub-balances."""

    async def body(settings: Settings) -> None:
        print(_positions(await _as_custody(settings, operators.positions(client, custodian))))

    run(body)


@app.command()
def locks(client: Client = None) -> None:
    """Active locks."""

    async def body(settings: Settings) -> None:
        views = await _as_custody(settings, operators.positions(client))
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
        print(render.table(["lock", "account", "issue", "quantity", "holder", "reason", "obligation"], rows, indent=""))

    run(body)


@app.command()
def statement(client: Annotated[str, typer.Argument(help="the client", show_default=False)]) -> None:
    """A client's holdings statement."""

    async def body(settings: Settings) -> None:
        st = await _as_custody(settings, operators.statement(client))
        print(f"holdings statement for {st.client} (cursor {st.cursor})")
        print(_positions(st.positions))

    run(body)


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
