"""Demo flow 4, delivery versus payment (issue 11, docs/dvp.md): an uncovered buy order refused
before it can trade, and a trade whose buyer could not pay on the day — pending for lack of cash,
both sides as they were — recycled and settled, both legs at once, once the buyer is funded."""

from __future__ import annotations

import asyncio
import secrets
from uuid import UUID

import asyncpg

from agents import render
from agents.demo.issuance import Say, held_certificate
from agents.exchange import report_repo, reporting, reports
from agents.exchange.reports import ReportedTrade, ReportTerms, TradeReport
from agents.investor import order_repo
from agents.investor import repo as investor_repo
from agents.investor.app import IssuanceOrder, request_certificates
from agents.investor.domain import Dividend
from agents.investor.trading import OrderTicket, place_order
from agents.issuer.domain import Offering
from agents.settlement import app as settlement
from agents.settlement import dvp_repo, instruction_desk
from broker.runtime import AgentRuntime
from broker.sealed_box import seal_account
from broker.stock_certificates import content_of
from schemas.certificates import SignedCertificate
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
    price = offering.offer_price
    terms = ReportTerms(
        f"negotiated-{certificate.cert_id}", offering.issue_code, offering.share_class, 100, price, alice, bob
    )
    by_alice = reports.sold(investor.identities[alice], signed, terms)  # each party signs the terms
    trade = TradeReport(
        report_id=terms.report_id,
        issue_code=offering.issue_code,
        share_class=offering.share_class,
        quantity=100,
        price=price,
        seller_user_id=alice,
        seller_account=seal_account(investor.trust, alice, accounts[0]),  # and seals its own account (R-001-06)
        buyer_user_id=bob,
        buyer_account=seal_account(investor.trust, bob, accounts[1]),
        buyer_name=bob.capitalize(),
        buyer_address=f"2-2 Kabuto-cho, Tokyo ({bob})",
        certificate=by_alice,
        buyer_consent=reports.bought(investor.identities[bob], by_alice, terms),
    )
    reported = await exchange.command(EXCHANGE_ID, lambda ctx: reporting.report(ctx, trade))
    number = reported.matching_number
    await ledger.outcomes.wait_for(reported.instruction_id, timeout=30)
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
    ended = await _ended_at_exchange(exchange, number)
    say(
        f"  The exchange kept the reported trade ({ended.status}) and moved its CertID list: {ended.new_cert_id} "
        f"is listed for {bob}, {ended.cert_id} of {alice} is retired."
    )


async def _ended_at_exchange(exchange: AgentRuntime, number: int, timeout: float = 30.0) -> ReportedTrade:
    """The reported trade once settlement's last status has reached the exchange."""
    async with asyncio.timeout(timeout):
        while True:
            trade = await exchange.query(lambda c: report_repo.reported(c, number))
            if trade is not None and trade.status != "transfer_requested":
                return trade
            await asyncio.sleep(0.05)


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
