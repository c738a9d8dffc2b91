"""The settlement instruction the exchange sends for one execution (docs/dvp.md): the same trade
details for every trade, whatever its securities leg — a certificate at the issuer or a position
at custody. Exchange trades settle on the trade date."""

from __future__ import annotations

from datetime import date

from agents.exchange.order_repo import Match, OrderRecord
from schemas.dvp import BookEntryLeg, CertificateLeg, SettlementInstruction


def for_execution(
    match: Match, buy: OrderRecord, sell: OrderRecord, today: date, securities: CertificateLeg | BookEntryLeg
) -> SettlementInstruction:
    return SettlementInstruction(
        matching_number=match.matching_number,
        trade_date=today,
        intended_settlement_date=today,  # exchange trades settle the same day
        issue_code=match.issue_code,
        quantity=match.shares,
        price=match.price,
        amount=match.price * match.shares,
        buyer_user_id=match.buyer_user_id,
        buyer_account=buy.settlement_account,
        seller_user_id=match.seller_user_id,
        seller_account=sell.settlement_account,
        cover_id=buy.cover_id,
        securities=securities,
    )
