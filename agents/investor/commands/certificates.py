"""``kabuto investor request-certificates|hand-over|handovers|claim|holdings|reissue|wallet|requests``:
certificates — subscribed, handed over, claimed, reissued, held (seed 001 Phases 1, 3 and 4)."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

import typer

from agents import render, waiting
from agents.cli_types import As
from agents.investor import answer_repo
from agents.investor.app import IssuanceOrder
from agents.investor.client import InvestorClient
from agents.investor.commands.params import (
    WAIT,
    Address,
    DividendAccount,
    HolderName,
    Issue,
    NoWait,
    Timeout,
    acting,
    dividend,
    sent_to,
)
from broker.stock_certificates import CertificateInvalid
from schemas.certificates import ShareClass
from schemas.lifecycle import ReissueKind

app = typer.Typer()


@app.command("request-certificates")
def request_certificates(
    user: As,
    issue_code: Issue,
    shares: Annotated[int, typer.Option(help="how many shares", show_default=False)],
    name: HolderName,
    address: Address,
    dividend_account: DividendAccount,
    share_class: Annotated[ShareClass, typer.Option("--class", help="the class of shares")] = ShareClass.COMMON,
    no_wait: NoWait = False,
    timeout: Timeout = WAIT,
) -> None:
    """Subscribe to a new issue (seed 001 message 32)."""

    async def act(client: InvestorClient) -> int:
        order = IssuanceOrder(
            issue_code=issue_code,
            share_class=share_class,
            shares=shares,
            holder_name=name,
            holder_address=address,
            dividend_delivery=dividend(dividend_account),
        )
        request_id = await client.request_certificates(order)
        queued = f"request {request_id} queued; `kabuto investor requests --as {user}` shows its outcome"
        sent = sent_to(request_id, "issuer", answer_repo.request(request_id))
        return await waiting.report(client, sent, queued, no_wait=no_wait, timeout=timeout)

    acting(user, act)


@app.command("hand-over")
def hand_over(
    user: As,
    cert_id: Annotated[UUID, typer.Argument(help="the certificate's CertID", show_default=False)],
    to: Annotated[str, typer.Option(help="the transferee's user id", show_default=False)],
    note: Annotated[str, typer.Option(help="a note for the transferee")] = "",
    no_wait: NoWait = False,
    timeout: Timeout = WAIT,
) -> None:
    """Hand a certificate to another investor (seed 001 P3.1)."""

    async def act(client: InvestorClient) -> int:
        handover_id = await client.hand_over(cert_id, to, note)
        queued = f"hand-over {handover_id} of {cert_id} to {to} queued"
        sent = sent_to(handover_id, "investor", answer_repo.handover(handover_id))
        return await waiting.report(client, sent, queued, no_wait=no_wait, timeout=timeout)

    acting(user, act)


@app.command()
def handovers(user: As) -> None:
    """Certificates handed to you, and what became of them."""

    async def act(client: InvestorClient) -> None:
        rows = [
            [h.handover_id, h.transferor, h.cert_id, h.shares, h.status, h.reason] for h in await client.handovers()
        ]
        print(render.table(["hand-over", "from", "CertID", "shares", "status", "reason"], rows, indent=""))

    acting(user, act)


@app.command()
def claim(
    user: As,
    handover_id: Annotated[UUID, typer.Argument(help="the hand-over", show_default=False)],
    name: HolderName,
    address: Address,
    dividend_account: DividendAccount,
    no_wait: NoWait = False,
    timeout: Timeout = WAIT,
) -> None:
    """Ask the issuer to register a handed-over certificate to you (message 41)."""

    async def act(client: InvestorClient) -> int:
        request_id = await client.claim_handover(handover_id, name, address, dividend(dividend_account))
        queued = f"name-transfer request {request_id} queued; `kabuto investor requests` shows its outcome"
        sent = sent_to(request_id, "issuer", answer_repo.request(request_id))
        return await waiting.report(client, sent, queued, no_wait=no_wait, timeout=timeout)

    acting(user, act)


@app.command()
def holdings(
    user: As,
    issue_code: Annotated[str | None, typer.Argument(help="one issue (default: all)")] = None,
    no_wait: NoWait = False,
    timeout: Timeout = WAIT,
) -> None:
    """Ask the issuer what its register holds for you (message 44)."""

    async def act(client: InvestorClient) -> int:
        message_id = await client.inquire_holdings(issue_code)
        sent = sent_to(message_id, "issuer", answer_repo.holdings(user, message_id))
        code = await waiting.report(client, sent, "inquiry queued", no_wait=no_wait, timeout=timeout)
        statement = await client.holdings()
        if statement:
            print("latest statement received:")
            print(
                render.table(
                    ["issue", "certificate number", "CertID", "shares", "issued", "committed to"],
                    [
                        [h.issue_code, h.certificate_number, h.cert_id, h.shares, h.issued, h.committed_order]
                        for h in statement.holdings
                    ],
                    indent="",
                )
            )
        return code

    acting(user, act)


@app.command()
def reissue(
    user: As,
    kind: Annotated[ReissueKind, typer.Argument(help="lost, split or merge", show_default=False)],
    cert_ids: Annotated[list[UUID], typer.Argument(help="the certificates' CertIDs", show_default=False)],
    into: Annotated[list[int] | None, typer.Option(help="share count of one part of a split (repeat)")] = None,
    no_wait: NoWait = False,
    timeout: Timeout = WAIT,
) -> None:
    """Replace a lost certificate, or split or merge certificates (message 46)."""

    async def act(client: InvestorClient) -> int:
        request_id = await client.reissue(kind, tuple(cert_ids), tuple(into or ()))
        queued = f"reissue request {request_id} queued; `kabuto investor requests` shows its outcome"
        sent = sent_to(request_id, "issuer", answer_repo.request(request_id))
        return await waiting.report(client, sent, queued, no_wait=no_wait, timeout=timeout)

    acting(user, act)


@app.command()
def wallet(user: As) -> None:
    """The certificates held, verified again."""

    async def act(client: InvestorClient) -> None:
        _print_wallet(await client.wallet())

    acting(user, act)


@app.command()
def requests(user: As) -> None:
    """Certificate requests and their outcome."""

    async def act(client: InvestorClient) -> None:
        reqs = await client.requests()
        print(
            render.table(
                ["request", "kind", "issue", "shares", "status", "reason", "CertID"],
                [[r.request_id, r.kind, r.issue_code, r.shares, r.status, r.reason, r.cert_id] for r in reqs],
                indent="",
            )
        )

    acting(user, act)


def _print_wallet(wallet: list) -> None:  # type: ignore[type-arg]
    for item in wallet:
        if isinstance(item, CertificateInvalid):
            print(f"  INVALID certificate: {item.detail}")
        else:
            print(render.certificate(item) + "\n")
    if not wallet:
        print("  (no certificates)")
