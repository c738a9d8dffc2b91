"""``kabuto investor …``: an investor's requests, orders, wallet and account, from the shell.

Every sub-command acts as ``--as USER`` through the investor client library
(``agents.investor.client``), so the shell and an importing system behave the same.
"""

from __future__ import annotations

import argparse
import uuid
from decimal import Decimal
from uuid import UUID

from agents import render, waiting
from agents.cli_types import decimal
from agents.investor import answer_repo, brokered_view
from agents.investor.app import IssuanceOrder
from agents.investor.client import InvestorClient
from agents.investor.domain import Dividend
from agents.investor.trading import OrderTicket
from broker.awaiting import Probe, Sent
from broker.settings import Settings
from broker.stock_certificates import CertificateInvalid
from schemas.brokerage import FundingLeg, MismatchRule, SettlementType
from schemas.certificates import ShareClass
from schemas.issuance import DividendMethod
from schemas.lifecycle import ReissueKind
from schemas.trading import Side, TimeInForce

# The commands that send a message: they wait for its answer unless --no-wait (agents/waiting.py).
SENDING = frozenset(
    {
        "request-certificates",
        "order",
        "cancel",
        "replace",
        "status",
        "account",
        "hand-over",
        "claim",
        "holdings",
        "reissue",
        "identify",
        "broker-order",
    }
)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    inv = sub.add_parser("investor", help="an investor's wallet, orders and account").add_subparsers(
        dest="investor_command", required=True, metavar="INVESTOR_COMMAND"
    )

    def command(name: str, help_: str) -> argparse.ArgumentParser:
        parser = inv.add_parser(name, help=help_)
        parser.add_argument("--as", dest="user", required=True, help="the investor's user id")
        if name in SENDING:
            waiting.add_arguments(parser)
        return parser

    req = command("request-certificates", "subscribe to a new issue (seed 001 message 32)")
    req.add_argument("issue_code")
    req.add_argument("--shares", type=int, required=True)
    req.add_argument("--class", dest="share_class", default="common", choices=[c.value for c in ShareClass])
    req.add_argument("--name", required=True, help="holder of record")
    req.add_argument("--address", required=True)
    req.add_argument("--dividend-account", required=True)

    order = command("order", "place a buy or sell order (seed 001 message 33)")
    order.add_argument("side", choices=[s.value for s in Side])
    order.add_argument("issue_code")
    order.add_argument("quantity", type=int)
    order.add_argument("--limit", type=decimal, help="limit price; omit for a market order")
    order.add_argument("--tif", default="day", choices=[t.value for t in TimeInForce])
    order.add_argument("--account", required=True, help="settlement account")
    order.add_argument("--certificate", type=UUID, help="CertID to sell from (sell orders)")
    order.add_argument("--name", help="holder of record (buy orders)")
    order.add_argument("--address", help="holder's address (buy orders)")
    order.add_argument("--id", dest="client_order_id", help="client order id (default: generated)")
    order.add_argument("--safekeeping-account", help="trade book-entry from/into this custody account (no certificate)")

    present = command("present-notice", "present a trade completion notice (37) to settlement (R-001-42)")
    present.add_argument("matching_number", type=int)
    cancel_instruction = command(
        "cancel-instruction", "ask settlement to cancel a trade's instruction (both parties must)"
    )
    cancel_instruction.add_argument("matching_number", type=int)
    mandate = command("mandate", "let an agent (the brokerage) post on your settlement account")
    mandate.add_argument("account")
    mandate.add_argument("--to", dest="agent", required=True)
    mandate.add_argument("--revoke", action="store_true")
    command("instructions", "what settlement said about your instructions, notices and mandates")

    cancel = command("cancel", "cancel an order by client order id")
    cancel.add_argument("client_order_id")
    replace = command("replace", "cancel-replace an order")
    replace.add_argument("client_order_id")
    replace.add_argument("new_client_order_id")
    replace.add_argument("--quantity", type=int, required=True)
    replace.add_argument("--limit", type=decimal)
    status = command("status", "ask the exchange for an order's status by acceptance number")
    status.add_argument("acceptance_number", type=int)
    account = command("account", "ask settlement for an account and show the latest statement")
    account.add_argument("account")
    give = command("hand-over", "hand a certificate to another investor (seed 001 P3.1)")
    give.add_argument("cert_id", type=UUID)
    give.add_argument("--to", required=True, help="the transferee's user id")
    give.add_argument("--note", default="")
    command("handovers", "certificates handed to you, and what became of them")
    claim = command("claim", "ask the issuer to register a handed-over certificate to you (message 41)")
    claim.add_argument("handover_id", type=UUID)
    claim.add_argument("--name", required=True)
    claim.add_argument("--address", required=True)
    claim.add_argument("--dividend-account", required=True)
    holdings = command("holdings", "ask the issuer what its register holds for you (message 44)")
    holdings.add_argument("issue_code", nargs="?")
    again = command("reissue", "replace a lost certificate, or split or merge certificates (message 46)")
    again.add_argument("kind", choices=[k.value for k in ReissueKind])
    again.add_argument("cert_ids", type=UUID, nargs="+")
    again.add_argument("--into", type=int, nargs="*", default=[], help="share counts of a split")
    ident = command("identify", "identify to the brokerage; it answers with prices, holdings and accounts")
    ident.add_argument("customer_id")
    ident.add_argument("--pin", required=True)
    bo = command("broker-order", "order through the brokerage with an account indication (seed 000 claim 1)")
    bo.add_argument("customer_id")
    bo.add_argument("side", choices=[s.value for s in Side])
    bo.add_argument("issue_code")
    bo.add_argument("quantity", type=int)
    bo.add_argument("--pin", required=True)
    bo.add_argument("--company", required=True, help="the securities company to order through")
    bo.add_argument("--limit", type=decimal, help="limit price; omit for a market order")
    bo.add_argument(
        "--fund",
        action="append",
        required=True,
        metavar="ACCOUNT:AMOUNT:PRIORITY",
        help="an account, how much it pays or receives, and its priority (repeat)",
    )
    bo.add_argument("--rule", choices=[r.value for r in MismatchRule])
    bo.add_argument("--regular", action="store_true", help="regular (4th-day) settlement")
    bo.add_argument("--id", dest="client_order_id")
    command("brokered", "brokered orders, their statements and settlement")
    command("orders", "orders and their state")
    command("executions", "executions and their name transfers")
    command("wallet", "the certificates held, verified again")
    command("requests", "certificate requests and their outcome")


async def run(args: argparse.Namespace, settings: Settings) -> int:
    async with InvestorClient.connect(settings, args.user) as client:
        return await _run(args, client)


async def _run(args: argparse.Namespace, client: InvestorClient) -> int:
    match args.investor_command:
        case "request-certificates":
            request_id = await client.request_certificates(_issuance(args))
            queued = f"request {request_id} queued; `kabuto investor requests --as {args.user}` shows its outcome"
            return await waiting.report(
                args, client, _sent(request_id, "issuer", answer_repo.request(request_id)), queued
            )
        case "order":
            ticket = _ticket(args)
            sent = _sent(
                await client.place_order(ticket), "exchange", answer_repo.order(args.user, ticket.client_order_id)
            )
            queued = f"order {ticket.client_order_id} queued; `kabuto investor orders --as {args.user}` shows it"
            return await waiting.report(args, client, sent, queued)
        case "present-notice":
            await client.present_notice(args.matching_number)
            print(f"notice of trade {args.matching_number} presented; `kabuto investor instructions` shows the answer")
        case "cancel-instruction":
            await client.cancel_instruction(args.matching_number)
            print(f"cancel of instruction {args.matching_number} queued")
        case "mandate":
            await client.mandate(args.account, args.agent, revoke=args.revoke)
            print(f"mandate for {args.agent} on {args.account} {'revoked' if args.revoke else 'granted'}; queued")
        case "instructions":
            said = await client.settlement_messages()
            print(
                render.table(
                    ["received", "type", "trade", "content"],
                    [[m["received_at"], m["message_type"], m["matching_number"], m["body"]] for m in said],
                    indent="",
                )
            )
        case "cancel":
            message_id = await client.cancel_order(args.client_order_id)
            probe = answer_repo.cancel(args.user, args.client_order_id, message_id)
            return await waiting.report(
                args, client, _sent(message_id, "exchange", probe), f"cancel of {args.client_order_id} queued"
            )
        case "replace":
            message_id = await client.replace_order(
                args.client_order_id, args.new_client_order_id, args.quantity, args.limit
            )
            sent = _sent(message_id, "exchange", answer_repo.order(args.user, args.new_client_order_id))
            queued = f"replace of {args.client_order_id} by {args.new_client_order_id} queued"
            return await waiting.report(args, client, sent, queued)
        case "status":
            message_id = await client.ask_order_status(args.acceptance_number)
            probe = answer_repo.order_status(args.user, args.acceptance_number, message_id)
            queued = "status inquiry queued; the answer appears in `kabuto investor orders`"
            return await waiting.report(args, client, _sent(message_id, "exchange", probe), queued)
        case "account":
            message_id = await client.inquire_account(args.account)
            probe = answer_repo.statement(args.user, args.account, message_id)
            code = await waiting.report(
                args, client, _sent(message_id, "settlement", probe), f"inquiry about {args.account} queued"
            )
            _print_statement(await client.statement(args.account), args.account)
            return code
        case "hand-over":
            handover_id = await client.hand_over(args.cert_id, args.to, args.note)
            queued = f"hand-over {handover_id} of {args.cert_id} to {args.to} queued"
            return await waiting.report(
                args, client, _sent(handover_id, "investor", answer_repo.handover(handover_id)), queued
            )
        case "handovers":
            rows = [
                [h.handover_id, h.transferor, h.cert_id, h.shares, h.status, h.reason] for h in await client.handovers()
            ]
            print(render.table(["hand-over", "from", "CertID", "shares", "status", "reason"], rows, indent=""))
        case "claim":
            dividend = Dividend(method=DividendMethod.SETTLEMENT_ACCOUNT, account=args.dividend_account)
            request_id = await client.claim_handover(args.handover_id, args.name, args.address, dividend)
            queued = f"name-transfer request {request_id} queued; `kabuto investor requests` shows its outcome"
            return await waiting.report(
                args, client, _sent(request_id, "issuer", answer_repo.request(request_id)), queued
            )
        case "holdings":
            message_id = await client.inquire_holdings(args.issue_code)
            probe = answer_repo.holdings(args.user, message_id)
            code = await waiting.report(args, client, _sent(message_id, "issuer", probe), "inquiry queued")
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
        case "reissue":
            request_id = await client.reissue(ReissueKind(args.kind), tuple(args.cert_ids), tuple(args.into))
            queued = f"reissue request {request_id} queued; `kabuto investor requests` shows its outcome"
            return await waiting.report(
                args, client, _sent(request_id, "issuer", answer_repo.request(request_id)), queued
            )
        case "identify":
            request_id = await client.identify(args.customer_id, args.pin)
            sent = _sent(request_id, "brokerage", answer_repo.identification(request_id))
            code = await waiting.report(args, client, sent, "identification sent")
            shown = await client.customer_view()
            if shown:
                print("latest view received:")
                print(shown.model_dump_json(indent=2))
            return code
        case "broker-order":
            coid = args.client_order_id or f"{args.user}-{uuid.uuid4().hex[:12]}"
            message_id = await client.broker_order(
                coid,
                args.customer_id,
                args.pin,
                args.company,
                args.issue_code,
                Side(args.side),
                args.quantity,
                [_fund(f) for f in args.fund],
                args.limit,
                MismatchRule(args.rule) if args.rule else None,
                SettlementType.REGULAR if args.regular else SettlementType.IMMEDIATE,
            )
            queued = f"brokered order {coid} queued; `kabuto investor brokered --as {args.user}` shows it"
            return await waiting.report(
                args, client, _sent(message_id, "brokerage", answer_repo.brokered_order(args.user, coid)), queued
            )
        case "brokered":
            placed = await client.brokered_orders()
            print("\n".join(line for order in placed for line in brokered_view.lines(order)) or "(no brokered orders)")
        case "orders":
            _print_orders(await client.orders())
        case "executions":
            fills = await client.executions()
            print(
                render.table(list(fills[0]) if fills else ["executions"], [list(f.values()) for f in fills], indent="")
            )
        case "wallet":
            _print_wallet(await client.wallet())
        case "requests":
            reqs = await client.requests()
            print(
                render.table(
                    ["request", "kind", "issue", "shares", "status", "reason", "CertID"],
                    [[r.request_id, r.kind, r.issue_code, r.shares, r.status, r.reason, r.cert_id] for r in reqs],
                    indent="",
                )
            )
    return 0


def _sent(message_id: UUID, recipient: str, probe: Probe) -> Sent:
    return Sent("investor", message_id, recipient, probe)


def _fund(text: str) -> FundingLeg:
    try:
        account, amount, priority = text.split(":")
        return FundingLeg(account=account, amount=Decimal(amount), priority=int(priority))
    except (ValueError, ArithmeticError) as exc:
        raise ValueError(f"--fund expects ACCOUNT:AMOUNT:PRIORITY, got {text!r}") from exc


def _issuance(args: argparse.Namespace) -> IssuanceOrder:
    return IssuanceOrder(
        issue_code=args.issue_code,
        share_class=ShareClass(args.share_class),
        shares=args.shares,
        holder_name=args.name,
        holder_address=args.address,
        dividend_delivery=Dividend(method=DividendMethod.SETTLEMENT_ACCOUNT, account=args.dividend_account),
    )


def _ticket(args: argparse.Namespace) -> OrderTicket:
    return OrderTicket(
        client_order_id=args.client_order_id or f"{args.user}-{uuid.uuid4().hex[:12]}",
        issue_code=args.issue_code,
        side=Side(args.side),
        quantity=args.quantity,
        settlement_account=args.account,
        price=args.limit,
        time_in_force=TimeInForce(args.tif),
        cert_id=args.certificate,
        holder_name=args.name,
        holder_address=args.address,
        safekeeping_account=args.safekeeping_account,
    )


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
