"""The settlement instruction the exchange sends for one execution (docs/dvp.md): the same trade
details for every trade, whatever its securities leg — a certificate at the issuer or a position
at custody. Exchange trades settle on the trade date.

Both accounts are the boxes the parties sealed to settlement in their orders (R-001-06); the
exchange forwards them unopened. An order stored before accounts were sealed still holds its
account in clear: it is sealed here, on its way out, so no instruction carries one in clear.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from uuid import UUID

from agents.exchange.order_repo import Match, OrderRecord
from agents.exchange.reports import TradeReport
from broker.sealed_box import seal_account
from broker.trust import TrustStore
from schemas.dvp import BookEntryLeg, CertificateLeg, SettlementInstruction
from schemas.sealed import is_sealed


def for_execution(
    match: Match,
    buy: OrderRecord,
    sell: OrderRecord,
    today: date,
    securities: CertificateLeg | BookEntryLeg,
    trust: TrustStore,
) -> SettlementInstruction:
    return _instruction(
        match.matching_number,
        today,
        match.issue_code,
        match.shares,
        match.price,
        (match.buyer_user_id, buy.settlement_account),
        (match.seller_user_id, sell.settlement_account),
        securities,
        trust,
        cover_id=buy.cover_id,
    )


def for_report(
    matching_number: int, report: TradeReport, today: date, securities: CertificateLeg, trust: TrustStore
) -> SettlementInstruction:
    """A trade reported off the order book (agents/exchange/reporting.py): no order, so no cover;
    settlement checks the buyer's cash itself."""
    return _instruction(
        matching_number,
        today,
        report.issue_code,
        report.quantity,
        report.price,
        (report.buyer_user_id, report.buyer_account),
        (report.seller_user_id, report.seller_account),
        securities,
        trust,
        cover_id=None,
    )


def _instruction(
    matching_number: int,
    today: date,
    issue_code: str,
    quantity: int,
    price: Decimal,
    buyer: tuple[str, str],
    seller: tuple[str, str],
    securities: CertificateLeg | BookEntryLeg,
    trust: TrustStore,
    *,
    cover_id: UUID | None,
) -> SettlementInstruction:
    """``buyer`` and ``seller``: each party and its account as stored, sealed here if it is not."""
    return SettlementInstruction(
        matching_number=matching_number,
        trade_date=today,
        intended_settlement_date=today,  # exchange trades settle the same day
        issue_code=issue_code,
        quantity=quantity,
        price=price,
        amount=price * quantity,
        buyer_user_id=buyer[0],
        buyer_account=sealed_account(trust, *buyer),
        seller_user_id=seller[0],
        seller_account=sealed_account(trust, *seller),
        cover_id=cover_id,
        securities=securities,
    )


def sealed_account(trust: TrustStore, user_id: str, stored: str) -> str:
    """The stored box, or a clear account of an order from before sealing, sealed now."""
    return stored if is_sealed(stored) else seal_account(trust, user_id, stored)
