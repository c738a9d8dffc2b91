"""Demo flow 2 (seed 001 Phase 2): alice sells part of her certificate on the exchange to bob
in a partial fill; the issuer transfers the name and issues bob's certificate and alice's
remainder; settlement moves the cash; then alice tries to sell a copy of the certificate she
sold, and the exchange refuses it."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from decimal import Decimal
from uuid import UUID

from agents import render
from agents.demo.issuance import Say, held_certificate
from agents.exchange import order_repo as exchange_orders
from agents.investor import order_repo
from agents.investor.app import verified_wallet
from agents.investor.standing import close_standing_cover, open_standing_cover
from agents.investor.trading import OrderTicket, place_order
from agents.issuer.domain import Offering
from agents.settlement import app as settlement
from broker.consumer import Outcome
from broker.context import Context
from broker.runtime import AgentRuntime
from broker.stock_certificates import CertificateInvalid
from schemas.certificates import ElectronicStockCertificate
from schemas.identity import EXCHANGE_ID, SETTLEMENT_ID
from schemas.trading import Side


async def trading(runtimes: dict[str, AgentRuntime], offering: Offering, alice: str, bob: str, say: Say) -> None:
    investor, exchange, ledger = runtimes["investor"], runtimes[EXCHANGE_ID], runtimes[SETTLEMENT_ID]
    issue, price = offering.issue_code, offering.offer_price
    await exchange.command(
        EXCHANGE_ID,
        lambda ctx: exchange_orders.list_instrument(ctx.connection, issue, offering.share_class.value, price),
    )
    run = secrets.token_hex(3)
    alice_cash, bob_cash = f"{alice}-{run}", f"{bob}-{run}"
    await ledger.command(SETTLEMENT_ID, settlement.open_account(alice_cash, alice))
    await ledger.command(SETTLEMENT_ID, settlement.open_account(bob_cash, bob))
    await ledger.command(SETTLEMENT_ID, settlement.deposit(bob_cash, Decimal(2_000_000), f"demo-{run}"))
    say("\nFlow 2 — exchange trading with certificates (seed 001 Phase 2)")
    say(
        f"  The exchange lists {issue} (reference price {price:,}); settlement opens {alice_cash} and "
        f"{bob_cash}, and 2,000,000 JPY arrives in {bob_cash}."
    )

    certificate = await held_certificate(investor, alice, issue)
    sell = OrderTicket(f"sell-{run}", issue, Side.SELL, 300, alice_cash, price, cert_id=certificate.cert_id)
    await investor.command(alice, place_order(sell))
    say(
        f"  {alice} offers 300 of her {certificate.shares} shares at {price:,}, the certificate countersigned "
        f"for this order."
    )
    cover_id = await investor.command(bob, open_standing_cover(bob_cash, Decimal(1_000_000)))
    await investor.outcomes.wait(lambda s: s.type == "standing_cover.opened", timeout=30)
    say(
        f"  {bob} sets 1,000,000 JPY of {bob_cash} aside as a standing cover: settlement holds it, and his "
        f"buy orders on that account draw their worst case on it at the exchange (docs/dvp.md)."
    )
    buy = OrderTicket(
        f"buy-{run}",
        issue,
        Side.BUY,
        200,
        bob_cash,
        price,
        holder_name=bob.capitalize(),
        holder_address=f"2-2 Kabuto-cho, Tokyo ({bob})",
    )
    order_id = await investor.command(bob, place_order(buy))
    await investor.outcomes.reply("certificate.issued", order_id, timeout=30)
    await investor.outcomes.wait_count(
        lambda s: s.type == "settlement.notice" and s.correlation_id == str(order_id), 2, timeout=30
    )
    await investor.outcomes.wait_count(lambda s: s.type == "certificate.remainder", 1, timeout=30)
    say(
        f"  {bob} bids for 200 at {price:,}: a partial fill of {alice}'s order. The exchange takes the CertID "
        f"off its list, the issuer re-registers 200 shares to {bob} under a new CertID and the other "
        f"{certificate.shares - 200} to {alice} under another (committed to her open order) — delivery versus "
        f"payment: {bob}'s order drew on his standing cover and was booked in the hop that received it (no "
        f"cover request), settlement earmarked the trade's cash from that cover and asked the issuer to deliver "
        f"against it: the issuer checked and transferred the certificate in one step, then settlement posted "
        f"the earmarked cash; {bob} asks for his certificate by name-transfer number."
    )
    await investor.command(bob, close_standing_cover(cover_id))
    closed = await investor.outcomes.wait(lambda s: s.type == "standing_cover.closed", timeout=30)
    assert closed.outcome is Outcome.PROCESSED
    say(f"  {bob} closes the standing cover: it spent {200 * price:,} JPY and settlement frees the rest.\n")
    await _wallets(investor, alice, bob, say)
    await _balances(ledger, (alice_cash, bob_cash), say)
    await _copied(investor, alice, certificate, alice_cash, price, say)


async def _wallets(investor: AgentRuntime, alice: str, bob: str, say: Say) -> None:
    rows = []
    for user in (alice, bob):
        for item in await investor.command(user, verified_wallet):
            if not isinstance(item, CertificateInvalid):
                rows.append([user, item.certificate_number, item.cert_id, item.shares])
    say("  Wallets after the trade (certificates held, each verified again):")
    say(render.table(["holder", "certificate number", "CertID", "shares"], rows, indent="    "))


async def _balances(ledger: AgentRuntime, accounts: tuple[str, ...], say: Say) -> None:
    rows = []
    for account in accounts:
        statement = await ledger.command(SETTLEMENT_ID, settlement.statement(account))
        rows.append([account, statement.account.owner_user_id, f"{statement.account.balance:,.0f}"])
    say("\n  Settlement accounts (double-entry ledger):")
    say(render.table(["account", "owner", "balance JPY"], rows, indent="    "))


async def _copied(
    investor: AgentRuntime,
    alice: str,
    sold: ElectronicStockCertificate,
    account: str,
    price: Decimal,
    say: Say,
) -> None:
    """alice kept a copy of the certificate she sold; the exchange refuses it (R-001-57)."""
    # What a dishonest client could do to its own records: mark the sold certificate held again.
    await investor.command(alice, _mark(sold.cert_id, "held"))
    ticket = OrderTicket(
        f"copy-{secrets.token_hex(3)}", sold.issue_code, Side.SELL, 100, account, price, cert_id=sold.cert_id
    )
    sent = await investor.command(alice, place_order(ticket))
    await investor.outcomes.reply("order.rejected", sent, timeout=30)
    record = await investor.query(lambda c: order_repo.order(c, alice, ticket.client_order_id))
    assert record is not None
    say(
        f"\n  {alice} tries to sell again from her copy of certificate {sold.cert_id}: refused, "
        f"{record.reason} — {record.detail}."
    )
    await investor.command(alice, _mark(sold.cert_id, "surrendered"))


def _mark(cert_id: UUID, status: str) -> Callable[[Context], Awaitable[None]]:
    async def action(ctx: Context) -> None:
        await ctx.connection.execute(
            "UPDATE wallet SET status = $2, committed_order = NULL WHERE cert_id = $1", cert_id, status
        )

    return action
