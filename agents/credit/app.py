"""The credit agent: two institutions with their own books and keys (docs/credit.md).

``card-issuer`` is seed 003's FI server 300 (card accounts, authorisations, repayment);
``credit`` is the securities-backed line, the HIHI server 200 (holdings, valuation, locks,
obligations, default). They talk to each other only by signed messages, as two institutions
would; the catalogue's roles keep each message to the one it is meant for.
"""

from __future__ import annotations

from uuid import UUID

from agents.credit import afterwards, card_issuer, jobs, line, prices
from broker import logs
from broker.consumer import Handler
from broker.context import Context
from broker.runtime import AgentDefinition
from schemas.brokerage import BrokeredSettlementFailed, BrokeredSettlementPosted
from schemas.catalogue import Message
from schemas.credit import (
    AdditionalCreditDecision,
    AdditionalCreditInquiry,
    CapturePurchase,
    ObligationLapsed,
    PurchaseRequest,
    RepaymentReported,
    ShortagePaid,
    WithdrawalFailed,
)
from schemas.custody import (
    HoldingsDeltas,
    LockPlaced,
    LockRefused,
    LockReleased,
    ReleaseRefused,
    SaleCompleted,
    SaleRefused,
)
from schemas.identity import CARD_ISSUER_ID, CREDIT_ID, Role
from schemas.prices import PriceUpdate

log = logs.get("kabuto.credit")


async def on_posted(posted: BrokeredSettlementPosted, ctx: Context) -> None:
    await _posting(ctx, posted.order_id, True, f"entry {posted.entry_id}")


async def on_post_failed(failed: BrokeredSettlementFailed, ctx: Context) -> None:
    await _posting(ctx, failed.order_id, False, f"{failed.reason}: {failed.detail}")


async def _posting(ctx: Context, reference: UUID, posted: bool, detail: str) -> None:
    """Settlement answered one of our cash moves; whose it is follows from its id."""
    if ctx.identity.user_id == CARD_ISSUER_ID:
        if not await card_issuer.repayment_posted(ctx, reference, posted, detail):
            await card_issuer.capture_posted(ctx, reference, posted, detail)
    elif not await afterwards.advance_posted(ctx, reference, posted, detail):
        # The surplus returned after a forced sale: the obligation already records it.
        (log.info if posted else log.error)("surplus_posting", reference=str(reference), posted=posted, detail=detail)


HANDLERS: dict[type[Message], Handler] = {
    # the card issuer
    PurchaseRequest: card_issuer.on_purchase,
    AdditionalCreditDecision: card_issuer.on_decision,
    CapturePurchase: card_issuer.on_capture,
    ShortagePaid: card_issuer.on_shortage_paid,
    # the line
    AdditionalCreditInquiry: line.on_inquiry,
    HoldingsDeltas: line.on_deltas,
    LockPlaced: line.on_lock_placed,
    LockRefused: line.on_lock_refused,
    LockReleased: afterwards.on_released,
    ReleaseRefused: afterwards.on_release_refused,
    ObligationLapsed: afterwards.on_lapsed,
    RepaymentReported: afterwards.on_repayment,
    WithdrawalFailed: afterwards.on_withdrawal_failed,
    SaleCompleted: afterwards.on_sale_completed,
    SaleRefused: afterwards.on_sale_refused,
    PriceUpdate: prices.on_price_update,
    # both
    BrokeredSettlementPosted: on_posted,
    BrokeredSettlementFailed: on_post_failed,
}

AGENT = AgentDefinition(
    id=CREDIT_ID,
    role=Role.CREDIT,
    handlers=HANDLERS,
    background=(jobs.housekeeping,),
    participants=(CREDIT_ID, CARD_ISSUER_ID),
)
