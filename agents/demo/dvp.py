"""Demo flow 4, delivery versus payment (issue 11, docs/dvp.md): an uncovered buy order refused
before it can trade, and a trade whose buyer could not pay on the day — pending for lack of cash,
both sides as they were — recycled and settled, both legs at once, once the buyer is funded."""

from __future__ import annotations

import secrets
from datetime import date
from decimal import Decimal
from uuid import UUID

import asyncpg

from agents import render
from agents.demo.issuance import Say, held_certificate
from agents.exchange import order_repo as exchange_orders
from agents.investor import order_repo
from agents.investor import repo as investor_repo
from agents.investor.app import IssuanceOrder, request_certificates
from agents.investor.domain import Dividend
from agents.investor.trading import OrderTicket, place_order
from agents.issuer.domain import Offering
from agents.settlement import app as settlement
from agents.settlement import dvp_repo, instruction_desk
from broker.context import Context
from broker.runtime import AgentRuntime
from broker.sealed_box import seal_account
from broker.stock_certificates import content_of, endorse
from schemas.certificates import EndorsedCertificate, SignedCertificate
from schemas.dvp import CertificateLeg, SettlementInstruction
from schemas.identity import EXCHANGE_ID, SETTLEMENT_ID
from schemas.issuance import DividendMethod
from schemas.trading import Side


async def dvp(runtimes: dict[str, AgentRuntime], offering: Offering, alice: str, bob: str, say: Say) -> None:
    say("\nFlow 4 — delivery versus payment (issue 11)")
    run = secrets.token_hex(3)
    ledger = runtimes[SETTLEMENT_ID]
    empty, alice_cash = f"{bob}-empty-{run}", f"{alice}-dvp-{run}"
    await ledger.command(SETTLEMENT_ID, settlement.open_account(empty, bob))
    await ledger.command(SETTLEMENT_ID, settlement.open_account(alice_cash, alice))
    await _uncovered(runtimes, offering, bob, empty, say)
    await _uncovered(runtimes, offering, bob, alice_cash, say)
    await _recycled(runtimes, offering, alice, bob, (alice_cash, empty), say)


async def _uncovered(runtimes: dict[str, AgentRuntime], offering: Offering, bob: str, account: str, say: Say) -> None:
    """R-001-23: settlement must hold the order's worst case on the buyer's own account first."""
    investor = runtimes["investor"]
    ticket = OrderTicket(
        f"uncovered-{secrets.token_hex(3)}",
        offering.issue_code,
        Side.BUY,
        100,
        account,
        offering.offer_price,
        holder_name=bob.capitalize(),
        holder_address=f"2-2 Kabuto-cho, Tokyo ({bob})",
    )
    sent = await investor.command(bob, place_order(ticket))
    await investor.outcomes.reply("order.rejected", sent, timeout=30)
    record = await investor.query(lambda c: order_repo.order(c, bob, ticket.client_order_id))
    assert record is not None
    say(
        f"  {bob} bids for 100 {offering.issue_code} at {offering.offer_price:,} paying from {account}: refused "
        f"before it could trade, {record.reason} — {record.detail}. Nothing moved."
    )


async def _recycled(
    runtimes: dict[str, AgentRuntime],
    offering: Offering,
    alice: str,
    bob: str,
    accounts: tuple[str, str],
    say: Say,
) -> None:
    investor, exchange, ledger = runtimes["investor"], runtimes[EXCHANGE_ID], runtimes[SETTLEMENT_ID]
    bob_cash = accounts[1]
    request = await investor.command(alice, request_certificates(_order(offering, alice)))
    await investor.outcomes.reply("certificate.issued", request, timeout=30)
    certificate = await held_certificate(investor, alice, offering.issue_code, 100)
    signed = await investor.query(lambda c: _signed(c, alice, certificate.cert_id))
    by_alice = endorse(
        investor.identities[alice], signed, "sell_order", f"order:{alice}:negotiated-{certificate.cert_id}"
    )
    price = offering.offer_price
    number, sent = await exchange.command(
        EXCHANGE_ID, lambda ctx: _report(ctx, offering, certificate.cert_id, by_alice, price, (alice, bob), accounts)
    )
    await ledger.outcomes.wait_for(sent, timeout=30)
    say(
        f"  {alice} and {bob} agree 100 shares at {price:,} off the order book; the exchange reports the trade "
        f"for settlement (instruction {number}). Such a trade has no order cover, so settlement checks {bob}'s "
        f"cash itself:"
    )
    await _show(ledger, number, say)
    say(
        f"  {alice}'s certificate is untouched at the issuer and {bob} paid nothing. Then {bob} is funded and "
        "settlement recycles its pending instructions:"
    )
    await ledger.command(SETTLEMENT_ID, settlement.deposit(bob_cash, price * 100, f"dvp-{number}"))
    await ledger.command(SETTLEMENT_ID, instruction_desk.recycle())
    # The recycled attempt's reserve opens a conversation that the commit answer closes.
    reserve = await ledger.query(
        lambda c: c.fetchval(
            "SELECT message_id FROM outbox_messages WHERE message_type = 'securities.reserve'"
            " ORDER BY seq DESC, place DESC LIMIT 1"
        )
    )
    await ledger.outcomes.reply("securities.committed", reserve, timeout=30)
    await _show(ledger, number, say)
    rows = []
    for account in accounts:
        statement = await ledger.command(SETTLEMENT_ID, settlement.statement(account))
        rows.append([account, statement.account.owner_user_id, f"{statement.account.balance:,.0f}"])
    say("  Both legs at once: the issuer registered the 100 shares to " + bob + ", and the cash moved:")
    say(render.table(["account", "owner", "balance JPY"], rows, indent="    "))


async def _report(
    ctx: Context,
    offering: Offering,
    cert_id: UUID,
    by_alice: EndorsedCertificate,
    price: Decimal,
    parties: tuple[str, str],
    accounts: tuple[str, str],
) -> tuple[int, UUID]:
    """The exchange instructs settlement for a negotiated trade: a matching number of its own, the
    certificate countersigned for it, and each party's account sealed for settlement (R-001-06), as
    the parties hand them over."""
    number = await exchange_orders.next_matching_number(ctx.connection)
    certificate = endorse(ctx.identity, by_alice, "name_transfer", f"omn:{number}")
    today = ctx.now.date()
    sealed = (seal_account(ctx.trust, parties[0], accounts[0]), seal_account(ctx.trust, parties[1], accounts[1]))
    instruction = _instruction(number, today, offering, cert_id, certificate, price, parties, sealed)
    return number, ctx.emit(instruction, to=SETTLEMENT_ID).envelope.message_id


def _instruction(
    number: int,
    today: date,
    offering: Offering,
    cert_id: UUID,
    certificate: EndorsedCertificate,
    price: Decimal,
    parties: tuple[str, str],
    accounts: tuple[str, str],
) -> SettlementInstruction:
    (seller, buyer), (seller_account, buyer_account) = parties, accounts
    return SettlementInstruction(
        matching_number=number,
        trade_date=today,
        intended_settlement_date=today,
        issue_code=offering.issue_code,
        quantity=100,
        price=price,
        amount=price * 100,
        buyer_user_id=buyer,
        buyer_account=buyer_account,
        seller_user_id=seller,
        seller_account=seller_account,
        securities=CertificateLeg(
            agent="issuer",
            exchange_id=EXCHANGE_ID,
            cert_id=cert_id,
            share_class=offering.share_class,
            certificate=certificate,
            buyer_name=buyer.capitalize(),
            buyer_address=f"2-2 Kabuto-cho, Tokyo ({buyer})",
            seller_order=number,
            seller_order_open=False,
        ),
    )


async def _show(ledger: AgentRuntime, number: int, say: Say) -> None:
    i = await ledger.query(lambda c: dvp_repo.instruction(c, number))
    assert i is not None
    say(
        render.table(
            ["instruction", "processing", "matching", "settlement", "reason", "settled", "attempt"],
            [
                [
                    number,
                    i.processing.value,
                    i.matching.value,
                    i.settlement.value,
                    i.reason.value if i.reason else "",
                    f"{i.settled_quantity}/{i.quantity}",
                    i.attempt,
                ]
            ],
            indent="    ",
        )
    )


async def _signed(connection: asyncpg.Connection, holder: str, cert_id: UUID) -> SignedCertificate:
    return next(s for s in await investor_repo.held(connection, holder) if content_of(s).cert_id == cert_id)


def _order(offering: Offering, user: str) -> IssuanceOrder:
    return IssuanceOrder(
        issue_code=offering.issue_code,
        share_class=offering.share_class,
        shares=100,
        holder_name=user.capitalize(),
        holder_address=f"1-1 Kabuto-cho, Nihonbashi, Chuo-ku, Tokyo ({user})",
        dividend_delivery=Dividend(method=DividendMethod.SETTLEMENT_ACCOUNT, account=f"settlement:{user}"),
    )
