"""``kabuto investor present-notice|cancel-instruction|mandate|instructions|account``: the investor's
settlement account and its delivery versus payment instructions (R-001-42)."""

from __future__ import annotations

from typing import Annotated

import typer

from agents import render, waiting
from agents.cli_types import SIGNED_ARGUMENTS, As
from agents.investor import answer_repo
from agents.investor.client import InvestorClient
from agents.investor.commands.params import WAIT, NoWait, Number, Timeout, acting, sent_to

app = typer.Typer()


@app.command("present-notice", context_settings=SIGNED_ARGUMENTS)
def present_notice(user: As, matching_number: Number) -> None:
    """Present a trade completion notice (37) to settlement (R-001-42)."""

    async def act(client: InvestorClient) -> None:
        await client.present_notice(matching_number)
        print(f"notice of trade {matching_number} presented; `kabuto investor instructions` shows the answer")

    acting(user, act)


@app.command("cancel-instruction", context_settings=SIGNED_ARGUMENTS)
def cancel_instruction(user: As, matching_number: Number) -> None:
    """Ask settlement to cancel a trade's instruction (both parties must)."""

    async def act(client: InvestorClient) -> None:
        await client.cancel_instruction(matching_number)
        print(f"cancel of instruction {matching_number} queued")

    acting(user, act)


@app.command()
def mandate(
    user: As,
    account: Annotated[str, typer.Argument(help="your settlement account", show_default=False)],
    agent: Annotated[str, typer.Option("--to", help="the agent (the brokerage)", show_default=False)],
    revoke: Annotated[bool, typer.Option("--revoke", help="withdraw the mandate")] = False,
) -> None:
    """Let an agent (the brokerage) post on your settlement account."""

    async def act(client: InvestorClient) -> None:
        await client.mandate(account, agent, revoke=revoke)
        print(f"mandate for {agent} on {account} {'revoked' if revoke else 'granted'}; queued")

    acting(user, act)


@app.command()
def instructions(user: As) -> None:
    """What settlement said about your instructions, notices and mandates."""

    async def act(client: InvestorClient) -> None:
        said = await client.settlement_messages()
        print(
            render.table(
                ["received", "type", "trade", "content"],
                [[m["received_at"], m["message_type"], m["matching_number"], m["body"]] for m in said],
                indent="",
            )
        )

    acting(user, act)


@app.command("account")
def account_inquiry(
    user: As,
    account: Annotated[str, typer.Argument(help="your settlement account", show_default=False)],
    no_wait: NoWait = False,
    timeout: Timeout = WAIT,
) -> None:
    """Ask settlement for an account and show the latest statement."""

    async def act(client: InvestorClient) -> int:
        message_id = await client.inquire_account(account)
        sent = sent_to(message_id, "settlement", answer_repo.statement(user, account, message_id))
        code = await waiting.report(client, sent, f"inquiry about {account} queued", no_wait=no_wait, timeout=timeout)
        _print_statement(await client.statement(account), account)
        return code

    acting(user, act)


def _print_statement(statement: object, account: str) -> None:
    if statement is None:
        print(f"inquiry about {account} queued; no statement received yet — run this again shortly")
        return
    print(f"latest statement received for {account}:")
    print(statement.model_dump_json(indent=2))  # type: ignore[attr-defined]
