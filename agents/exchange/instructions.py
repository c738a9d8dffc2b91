"""The settlement instruction the exchange sends for one execution (docs/dvp.md): the same trade
details for every trade, whatever its securities leg — a certificate at the issuer or a position
at custody. Exchange trades settle on the trade date.

Both accounts are the boxes the parties sealed to settlement in their orders (R-001-06); the
exchange forwards them unopened. An order stored before accounts were sealed still holds its
account in clear: it is sealed here, on its way out, so no instruction carries one in clear.
"""

from __future__ import annotations

from datetime import date

from agents.exchange.order_repo import Match, OrderRecord
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
    return SettlementInstruction(
        matching_number=match.matching_number,
        trade_date=today,
        intended_settlement_date=today,  # exchange trades settle the same day
        issue_code=match.issue_code,
        quantity=match.shares,
        price=match.price,
        amount=match.price * match.shares,
        buyer_user_id=match.buyer_user_id,
        buyer_account=sealed_account(trust, match.buyer_user_id, buy.settlement_account),
        seller_user_id=match.seller_user_id,
        seller_account=sealed_account(trust, match.seller_user_id, sell.settlement_account),
        cover_id=buy.cover_id,
        securities=securities,
    )


def sealed_account(trust: TrustStore, user_id: str, stored: str) -> str:
    """The stored box, or a clear account of an order from before sealing, sealed now."""
    return stored if is_sealed(stored) else seal_account(trust, user_id, stored)
