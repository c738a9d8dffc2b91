"""``kabuto investor …``: an investor's requests, orders, wallet and account, from the shell.

Every command acts as ``--as USER`` through the investor client library
(``agents.investor.client``), so the shell and an importing system behave the same. The commands
that send a message wait for its answer unless ``--no-wait`` (``agents.waiting``).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Annotated
from uuid import UUID

import typer

from agents import render, waiting
from agents.cli_runtime import run
from agents.cli_types import SIGNED_ARGUMENTS, As, decimal, split
from agents.investor import answer_repo, brokered_view
from agents.investor.app import IssuanceOrder
from agents.investor.client import InvestorClient
from agents.investor.trading import OrderTicket
from broker.awaiting import Probe, Sent
from broker.settings import Settings
from broker.stock_certificates import CertificateInvalid
from schemas.brokerage import FundingLeg, MismatchRule, SettlementType
from schemas.certificates import ShareClass
from schemas.issuance import DividendDelivery, DividendMethod
from schemas.lifecycle import ReissueKind
from schemas.trading import Side, TimeInForce

app = typer.Typer(help="An investor's wallet, orders and account.", no_args_is_help=True)

Act = Callable[[InvestorClient], Awaitable[int | None]]
NoWait = waiting.NoWait
Timeout = waiting.Timeout
WAIT = waiting.DEFAULT_TIMEOUT

Issue = Annotated[str, typer.Argument(help="the issue code", show_default=False)]
Quantity = Annotated[int, typer.Argument(help="shares", show_default=False)]
Limit = Annotated[Decimal | None, typer.Option(parser=decimal, help="limit price; omit for a market order")]
SideArgument = Annotated[Side, typer.Argument(help="buy or sell", show_default=False)]
Number = Annotated[int, typer.Argument(help="the trade's matching number (OMN)", show_default=False)]
HolderName = Annotated[str, typer.Option("--name", help="holder of record", show_default=False)]
Address = Annotated[str, typer.Option(help="the holder's address", show_default=False)]
DividendAccount = Annotated[str, typer.Option(help="where dividends are paid", show_default=False)]
Pin = Annotated[str, typer.Option(help="the customer's PIN", show_default=False)]
Customer = Annotated[str, typer.Argument(help="the customer id at the brokerage", show_default=False)]
OrderId = Annotated[str | None, typer.Option("--id", help="client order id (default: generated)")]


def _acting(user: str, act: Act) -> None:
    """Run ``act`` with the investor client of ``user``."""

    async def body(settings: Settings) -> int | None:
        async with InvestorClient.connect(settings, user) as client:
            return await act(client)

    run(body)


def _dividend(account: str) -> DividendDelivery:
    return DividendDelivery(method=DividendMethod.SETTLEMENT_ACCOUNT, account=account)


def _order_id(user: str, given: str | None) -> str:
    return given or f"{user}-{uuid.uuid4().hex[:12]}"


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
            dividend_delivery=_dividend(dividend_account),
        )
        request_id = await client.request_certificates(order)
        queued = f"request {request_id} queued; `kabuto investor requests --as {user}` shows its outcome"
        sent = _sent(request_id, "issuer", answer_repo.request(request_id))
        return await waiting.report(client, sent, queued, no_wait=no_wait, timeout=timeout)

    _acting(user, act)


@app.command(context_settings=SIGNED_ARGUMENTS)
def order(
    user: As,
    side: SideArgument,
    issue_code: Issue,
    quantity: Quantity,
    account: Annotated[str, typer.Option(help="settlement account", show_default=False)],
    limit: Limit = None,
    tif: Annotated[TimeInForce, typer.Option(help="time in force")] = TimeInForce.DAY,
    certificate: Annotated[UUID | None, typer.Option(help="CertID to sell from (sell orders)")] = None,
    name: Annotated[str | None, typer.Option(help="holder of record (buy orders)")] = None,
    address: Annotated[str | None, typer.Option(help="holder's address (buy orders)")] = None,
    client_order_id: OrderId = None,
    safekeeping_account: Annotated[
        str | None, typer.Option(help="trade book-entry from/into this custody account (no certificate)")
    ] = None,
    no_wait: NoWait = False,
    timeout: Timeout = WAIT,
) -> None:
    """Place a buy or sell order (seed 001 message 33)."""

    async def act(client: InvestorClient) -> int:
        ticket = OrderTicket(
            client_order_id=_order_id(user, client_order_id),
            issue_code=issue_code,
            side=side,
            quantity=quantity,
            settlement_account=account,
            price=limit,
            time_in_force=tif,
            cert_id=certificate,
            holder_name=name,
            holder_address=address,
            safekeeping_account=safekeeping_account,
        )
        sent = _sent(await client.place_order(ticket), "exchange", answer_repo.order(user, ticket.client_order_id))
        queued = f"order {ticket.client_order_id} queued; `kabuto investor orders --as {user}` shows it"
        return await waiting.report(client, sent, queued, no_wait=no_wait, timeout=timeout)

    _acting(user, act)


@app.command("present-notice", context_settings=SIGNED_ARGUMENTS)
def present_notice(user: As, matching_number: Number) -> None:
    """Present a trade completion notice (37) to settlement (R-001-42)."""

    async def act(client: InvestorClient) -> None:
        await client.present_notice(matching_number)
        print(f"notice of trade {matching_number} presented; `kabuto investor instructions` shows the answer")

    _acting(user, act)


@app.command("cancel-instruction", context_settings=SIGNED_ARGUMENTS)
def cancel_instruction(user: As, matching_number: Number) -> None:
    """Ask settlement to cancel a trade's instruction (both parties must)."""

    async def act(client: InvestorClient) -> None:
        await client.cancel_instruction(matching_number)
        print(f"cancel of instruction {matching_number} queued")

    _acting(user, act)


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

    _acting(user, act)


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

    _acting(user, act)


@app.command()
def cancel(
    user: As,
    client_order_id: Annotated[str, typer.Argument(help="the order's client order id", show_default=False)],
    no_wait: NoWait = False,
    timeout: Timeout = WAIT,
) -> None:
    """Cancel an order by client order id."""

    async def act(client: InvestorClient) -> int:
        message_id = await client.cancel_order(client_order_id)
        sent = _sent(message_id, "exchange", answer_repo.cancel(user, client_order_id, message_id))
        return await waiting.report(
            client, sent, f"cancel of {client_order_id} queued", no_wait=no_wait, timeout=timeout
        )

    _acting(user, act)


@app.command()
def replace(
    user: As,
    client_order_id: Annotated[str, typer.Argument(help="the order to replace", show_default=False)],
    new_client_order_id: Annotated[str, typer.Argument(help="the replacing order's id", show_default=False)],
    quantity: Annotated[int, typer.Option(help="the new quantity", show_default=False)],
    limit: Annotated[Decimal | None, typer.Option(parser=decimal, help="the new limit price")] = None,
    no_wait: NoWait = False,
    timeout: Timeout = WAIT,
) -> None:
    """Cancel-replace an order."""

    async def act(client: InvestorClient) -> int:
        message_id = await client.replace_order(client_order_id, new_client_order_id, quantity, limit)
        sent = _sent(message_id, "exchange", answer_repo.order(user, new_client_order_id))
        queued = f"replace of {client_order_id} by {new_client_order_id} queued"
        return await waiting.report(client, sent, queued, no_wait=no_wait, timeout=timeout)

    _acting(user, act)


@app.command(context_settings=SIGNED_ARGUMENTS)
def status(
    user: As,
    acceptance_number: Annotated[int, typer.Argument(help="the order acceptance number (OAN)", show_default=False)],
    no_wait: NoWait = False,
    timeout: Timeout = WAIT,
) -> None:
    """Ask the exchange for an order's status by acceptance number."""

    async def act(client: InvestorClient) -> int:
        message_id = await client.ask_order_status(acceptance_number)
        sent = _sent(message_id, "exchange", answer_repo.order_status(user, acceptance_number, message_id))
        queued = "status inquiry queued; the answer appears in `kabuto investor orders`"
        return await waiting.report(client, sent, queued, no_wait=no_wait, timeout=timeout)

    _acting(user, act)


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
        sent = _sent(message_id, "settlement", answer_repo.statement(user, account, message_id))
        code = await waiting.report(client, sent, f"inquiry about {account} queued", no_wait=no_wait, timeout=timeout)
        _print_statement(await client.statement(account), account)
        return code

    _acting(user, act)


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
        sent = _sent(handover_id, "investor", answer_repo.handover(handover_id))
        return await waiting.report(client, sent, queued, no_wait=no_wait, timeout=timeout)

    _acting(user, act)


@app.command()
def handovers(user: As) -> None:
    """Certificates handed to you, and what became of them."""

    async def act(client: InvestorClient) -> None:
        rows = [
            [h.handover_id, h.transferor, h.cert_id, h.shares, h.status, h.reason] for h in await client.handovers()
        ]
        print(render.table(["hand-over", "from", "CertID", "shares", "status", "reason"], rows, indent=""))

    _acting(user, act)


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
        request_id = await client.claim_handover(handover_id, name, address, _dividend(dividend_account))
        queued = f"name-transfer request {request_id} queued; `kabuto investor requests` shows its outcome"
        sent = _sent(request_id, "issuer", answer_repo.request(request_id))
        return await waiting.report(client, sent, queued, no_wait=no_wait, timeout=timeout)

    _acting(user, act)


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
        sent = _sent(message_id, "issuer", answer_repo.holdings(user, message_id))
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

    _acting(user, act)


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
        sent = _sent(request_id, "issuer", answer_repo.request(request_id))
        return await waiting.report(client, sent, queued, no_wait=no_wait, timeout=timeout)

    _acting(user, act)


@app.command()
def identify(user: As, customer_id: Customer, pin: Pin, no_wait: NoWait = False, timeout: Timeout = WAIT) -> None:
    """Identify to the brokerage; it answers with prices, holdings and accounts."""

    async def act(client: InvestorClient) -> int:
        request_id = await client.identify(customer_id, pin)
        sent = _sent(request_id, "brokerage", answer_repo.identification(request_id))
        code = await waiting.report(client, sent, "identification sent", no_wait=no_wait, timeout=timeout)
        shown = await client.customer_view()
        if shown:
            print("latest view received:")
            print(shown.model_dump_json(indent=2))
        return code

    _acting(user, act)


@app.command("broker-order", context_settings=SIGNED_ARGUMENTS)
def broker_order(
    user: As,
    customer_id: Customer,
    side: SideArgument,
    issue_code: Issue,
    quantity: Quantity,
    pin: Pin,
    company: Annotated[str, typer.Option(help="the securities company to order through", show_default=False)],
    funding: Annotated[
        list[FundingLeg],
        typer.Option(
            "--fund",
            parser=_fund,
            metavar="ACCOUNT:AMOUNT:PRIORITY",
            help="an account, how much it pays or receives, and its priority (repeat)",
            show_default=False,
        ),
    ],
    limit: Limit = None,
    rule: Annotated[MismatchRule | None, typer.Option(help="how a mismatch is adjusted")] = None,
    regular: Annotated[bool, typer.Option("--regular", help="regular (4th-day) settlement")] = False,
    client_order_id: OrderId = None,
    no_wait: NoWait = False,
    timeout: Timeout = WAIT,
) -> None:
    """Order through the brokerage with an account indication (seed 000 claim 1)."""
    settlement = SettlementType.REGULAR if regular else SettlementType.IMMEDIATE

    async def act(client: InvestorClient) -> int:
        coid = _order_id(user, client_order_id)
        message_id = await client.broker_order(
            coid, customer_id, pin, company, issue_code, side, quantity, funding, limit, rule, settlement
        )
        queued = f"brokered order {coid} queued; `kabuto investor brokered --as {user}` shows it"
        sent = _sent(message_id, "brokerage", answer_repo.brokered_order(user, coid))
        return await waiting.report(client, sent, queued, no_wait=no_wait, timeout=timeout)

    _acting(user, act)


@app.command()
def brokered(user: As) -> None:
    """Brokered orders, their statements and settlement."""

    async def act(client: InvestorClient) -> None:
        placed = await client.brokered_orders()
        print("\n".join(line for o in placed for line in brokered_view.lines(o)) or "(no brokered orders)")

    _acting(user, act)


@app.command()
def orders(user: As) -> None:
    """Orders and their state."""

    async def act(client: InvestorClient) -> None:
        _print_orders(await client.orders())

    _acting(user, act)


@app.command()
def executions(user: As) -> None:
    """Executions and their name transfers."""

    async def act(client: InvestorClient) -> None:
        fills = await client.executions()
        print(render.table(list(fills[0]) if fills else ["executions"], [list(f.values()) for f in fills], indent=""))

    _acting(user, act)


@app.command()
def wallet(user: As) -> None:
    """The certificates held, verified again."""

    async def act(client: InvestorClient) -> None:
        _print_wallet(await client.wallet())

    _acting(user, act)


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

    _acting(user, act)


def _sent(message_id: UUID, recipient: str, probe: Probe) -> Sent:
    return Sent("investor", message_id, recipient, probe)


def _fund(text: str) -> FundingLeg:
    account, amount, priority = split(text, 3, "ACCOUNT:AMOUNT:PRIORITY")
    try:
        return FundingLeg(account=account, amount=Decimal(amount), priority=int(priority))
    except (ValueError, ArithmeticError) as exc:  # pydantic's ValidationError is a ValueError
        raise typer.BadParameter(f"expected ACCOUNT:AMOUNT:PRIORITY, got {text!r}: {exc}") from exc


def _print_orders(orders: list) -> None:  # type: ignore[type-arg]
    print(
        render.table(
            ["client order id", "OAN", "side", "issue", "qty", "price", "filled", "status", "reason"],
            [
                [
                    o.client_order_id,
                    o.acceptance_number,
                    o.side,
                    o.issue_code,
                    o.quantity,
                    o.price or "market",
                    o.filled,
                    o.status,
                    o.reason,
                ]
                for o in orders
            ],
            indent="",
        )
    )


def _print_wallet(wallet: list) -> None:  # type: ignore[type-arg]
    for item in wallet:
        if isinstance(item, CertificateInvalid):
            print(f"  INVALID certificate: {item.detail}")
        else:
            print(render.certificate(item) + "\n")
    if not wallet:
        print("  (no certificates)")


def _print_statement(statement: object, account: str) -> None:
    if statement is None:
        print(f"inquiry about {account} queued; no statement received yet — run this again shortly")
        return
    print(f"latest statement received for {account}:")
    print(statement.model_dump_json(indent=2))  # type: ignore[attr-defined]
