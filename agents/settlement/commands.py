"""``kabuto settlement …``: accounts, deposits, withdrawals and statements, and the delivery versus
payment desk (instructions, cancel, recycle, mandates), for operators."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import date
from decimal import Decimal
from typing import Annotated, Literal, TypeVar

import typer

from agents import render
from agents.cli_runtime import run
from agents.cli_types import SIGNED_ARGUMENTS, decimal
from agents.settlement import app as ledger
from agents.settlement import instruction_desk, mandates
from agents.settlement.domain import AccountKind, Posted
from agents.settlement.instructions import Instruction
from broker.context import Context
from broker.runtime import run_as
from broker.settings import Settings
from schemas.dvp import DvpReason
from schemas.identity import SETTLEMENT_ID

T = TypeVar("T")
app = typer.Typer(help="The settlement ledger.", no_args_is_help=True)

Account = Annotated[str, typer.Argument(help="the settlement account", show_default=False)]
Amount = Annotated[Decimal, typer.Argument(parser=decimal, help="how much", show_default=False)]
Reference = Annotated[str, typer.Option(help="the bank's reference; posts only once", show_default=False)]
Number = Annotated[int, typer.Argument(help="the trade's matching number (OMN)", show_default=False)]


async def _as_settlement(settings: Settings, action: Callable[[Context], Awaitable[T]]) -> T:
    return await run_as(settings, "settlement", SETTLEMENT_ID, action)


@app.command("open-account")
def open_account(
    account: Account,
    owner: Annotated[str, typer.Option(help="the investor's user id", show_default=False)],
    currency: str = "JPY",
    kind: Annotated[
        Literal["customer", "institution"],
        typer.Option(help="institution: an intermediary's or securities company's own account (may run negative)"),
    ] = "customer",
    institution: Annotated[str, typer.Option(help="where it is held: 'intermediary' or a company")] = "settlement",
) -> None:
    """Open a customer's settlement account."""

    async def body(settings: Settings) -> None:
        opening = ledger.open_account(account, owner, currency, kind=AccountKind(kind), institution=institution)
        opened = await _as_settlement(settings, opening)
        print(f"opened {opened.account_id} for {owner} in {currency}")

    run(body)


@app.command(context_settings=SIGNED_ARGUMENTS)
def deposit(account: Account, amount: Amount, reference: Reference) -> None:
    """Money arrives for an account."""
    run(lambda settings: _post(settings, ledger.deposit(account, amount, reference), account))


@app.command(context_settings=SIGNED_ARGUMENTS)
def withdraw(account: Account, amount: Amount, reference: Reference) -> None:
    """Money leaves an account."""
    run(lambda settings: _post(settings, ledger.withdraw(account, amount, reference), account))


async def _post(settings: Settings, posting: Callable[[Context], Awaitable[Posted]], account: str) -> None:
    posted = await _as_settlement(settings, posting)
    print(f"entry {posted.entry_id}: {account} balance {posted.balance}")


@app.command()
def statement(account: Account, entries: Annotated[int, typer.Option(help="recent postings to show")] = 20) -> None:
    """An account's balance and recent postings."""

    async def body(settings: Settings) -> None:
        st = await _as_settlement(settings, ledger.statement(account, entries))
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

    run(body)


# Issue 11: settlement instructions (delivery versus payment) and mandates.


@app.command()
def instructions(live: Annotated[bool, typer.Option("--live", help="only those still to settle")] = False) -> None:
    """Settlement instructions with their three-part status."""

    async def body(settings: Settings) -> None:
        found = await _as_settlement(settings, instruction_desk.list_instructions(live))
        print(render.table(_HEADINGS, [_row(i) for i in found], indent=""))

    run(body)


@app.command(context_settings=SIGNED_ARGUMENTS)
def instruction(matching_number: Number) -> None:
    """One instruction, its attempts and their reasons."""

    async def body(settings: Settings) -> None:
        view = await _as_settlement(settings, instruction_desk.show_instruction(matching_number))
        print(render.table(_HEADINGS, [_row(view.instruction)], indent=""))
        print(f"detail: {view.instruction.detail or '-'}")
        columns = ["attempt", "quantity", "amount", "from_cover", "status", "reason", "entry_id"]
        print(render.table(columns, [[a[c] for c in columns] for a in view.attempts], indent=""))

    run(body)


@app.command(context_settings=SIGNED_ARGUMENTS)
def cancel(matching_number: Number) -> None:
    """Cancel an instruction on both parties' behalf (nothing moves)."""

    async def body(settings: Settings) -> int:
        outcome = await _as_settlement(settings, instruction_desk.cancel_instruction(matching_number))
        if isinstance(outcome, DvpReason):
            print(f"instruction {matching_number} not cancelled: {outcome.value}")
            return 1
        print(f"instruction {matching_number}: {outcome.processing.value}, {outcome.settlement.value}")
        return 0

    run(body)


@app.command()
def recycle(
    as_of: Annotated[date | None, typer.Option(help="the business day, YYYY-MM-DD (default: today, UTC)")] = None,
    days: Annotated[int | None, typer.Option(help="days after the settlement date before the cut-off")] = None,
) -> None:
    """Attempt pending instructions again; fail those past their cut-off."""

    async def body(settings: Settings) -> None:
        recycled = await _as_settlement(
            settings, instruction_desk.recycle(as_of, days or settings.settlement_recycle_days)
        )
        print(", ".join(f"{k} {v}" for k, v in recycled.items()))

    run(body)


@app.command()
def mandate(
    account: Account,
    agent: Annotated[str, typer.Option(help="the agent that may post (the brokerage)", show_default=False)],
) -> None:
    """Record an owner's written consent that an agent may post on the account."""

    async def body(settings: Settings) -> None:
        await _as_settlement(settings, mandates.grant(account, agent))
        print(f"{agent} may post on {account}")

    run(body)


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
