"""Reported trades at the exchange (agents/exchange/reports.py, docs/dvp.md "Reported trades"):
the command that instructs settlement for one, and what the exchange does when it ends.

A reported trade takes a matching number from the exchange's own sequence, so settlement,
the issuer and the parties see it as any exchange trade; its statuses come back to the
exchange, which keeps them (``agents.exchange.settling`` sends them here when no match of the
order book has the number) and moves the CertID list when it settles (S127).
"""

from __future__ import annotations

import asyncpg

from agents.exchange import instructions, order_repo, repo, report_repo
from agents.exchange.acceptance import Refused
from agents.exchange.reports import ReportedTrade, TradeReport, check
from broker import logs
from broker.context import Context
from broker.stock_certificates import content_of, endorse, verify_certificate
from schemas.dvp import CertificateDelivery, CertificateLeg
from schemas.identity import SETTLEMENT_ID
from schemas.trading import OrderRefusal, ReportSettled, Side

log = logs.get("kabuto.exchange")
# What a unique constraint of reported_trades (migration 0083) stands for, as a refusal.
_CONSTRAINTS = {
    "reported_trades_seller_user_id_report_id_key": OrderRefusal.DUPLICATE_CLIENT_ORDER_ID,
    "reported_trades_one_live_per_certificate": OrderRefusal.CERTIFICATE_NOT_LISTED,
}


async def report(ctx: Context, trade: TradeReport) -> ReportedTrade:
    """Check a reported trade and instruct settlement for it; raises ``Refused`` (nothing kept,
    nothing sent) when a check fails."""
    try:
        cert_id = content_of(trade.certificate).cert_id
    except ValueError as exc:
        raise Refused(OrderRefusal.CERTIFICATE_SIGNATURE_INVALID, "the certificate's content is not readable") from exc
    books = await report_repo.books(ctx.connection, trade, cert_id)
    certificate = check(trade, books, ctx.trust, ctx.now)
    number = await order_repo.next_matching_number(ctx.connection)
    leg = CertificateLeg(
        agent=certificate.issuing_agent_id,
        exchange_id=ctx.identity.user_id,
        cert_id=cert_id,
        share_class=certificate.share_class,
        certificate=endorse(ctx.identity, trade.certificate, "name_transfer", f"omn:{number}"),  # S95
        buyer_name=trade.buyer_name,
        buyer_address=trade.buyer_address,
        seller_order=number,  # no order: the matching number stands for it, and no remainder stays committed
        seller_order_open=False,
    )
    sealed = ctx.emit(instructions.for_report(number, trade, ctx.now.date(), leg, ctx.trust), to=SETTLEMENT_ID)
    try:
        kept = await report_repo.kept(ctx.connection, number, trade, cert_id, sealed)
    except asyncpg.UniqueViolationError as exc:  # the lock above orders reports; kept as a second guard
        raise Refused(
            _CONSTRAINTS.get(exc.constraint_name or "", OrderRefusal.CERTIFICATE_NOT_LISTED), str(exc)
        ) from exc
    log.info("trade_reported", matching_number=number, report_id=trade.report_id, cert_id=str(cert_id))
    return kept


async def settled(ctx: Context, trade: ReportedTrade, delivery: CertificateDelivery) -> None:
    """S127: the seller's CertID retired, the buyer's new one (and the seller's remainder) valid."""
    valid = [(delivery.new_cert_id, trade.buyer_user_id, trade.shares)]
    if delivery.remainder is not None:
        remainder = verify_certificate(delivery.remainder, ctx.trust)
        valid.append((remainder.cert_id, remainder.holder_user_id, remainder.shares))
    await repo.transferred(ctx.connection, trade.issue_code, trade.cert_id, delivery.register_version, valid)
    await report_repo.ended(
        ctx.connection, trade.matching_number, "completed", delivery.name_transfer_number, delivery.new_cert_id
    )
    for party, side in ((trade.buyer_user_id, Side.BUY), (trade.seller_user_id, Side.SELL)):
        ctx.emit(_settled_notice(trade, delivery, side), to=party)
    log.info("reported_trade_settled", matching_number=trade.matching_number, ntn=delivery.name_transfer_number)


def _settled_notice(trade: ReportedTrade, delivery: CertificateDelivery, side: Side) -> ReportSettled:
    return ReportSettled(
        matching_number=trade.matching_number,
        name_transfer_number=delivery.name_transfer_number,
        report_id=trade.report_id,
        seller_user_id=trade.seller_user_id,
        buyer_user_id=trade.buyer_user_id,
        side=side,
        issue_code=trade.issue_code,
        price=trade.price,
        quantity=trade.shares,
        amount=trade.price * trade.shares,
        transferred_cert_id=trade.cert_id,
    )


async def failed(ctx: Context, trade: ReportedTrade, reason: str, certificate_dead: bool) -> None:
    """Neither leg happened: the certificate is listed again, unless it will never deliver."""
    if certificate_dead:
        await repo.invalidated(ctx.connection, trade.cert_id)
    else:
        await repo.transfer_abandoned(ctx.connection, trade.cert_id)
    await report_repo.ended(ctx.connection, trade.matching_number, "failed")
    log.info("reported_trade_failed", matching_number=trade.matching_number, reason=reason)
