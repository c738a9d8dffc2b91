"""Idempotent client order ids: an order sent again is answered, not accepted twice.

A client that lost its reply (a timeout, a reconnect) sends its order again, often in a new
envelope with a new message id, which the inbox cannot recognise. The exchange therefore
keeps the SHA-256 of each accepted order's payload (its sealed account aside). An order whose (user, client order id)
is already on the books is answered again with the original acceptance number when its
payload is the same, and refused with ``client_order_id_conflict`` when it is not; either
way nothing new enters the book.
"""

from __future__ import annotations

import hashlib

from broker import logs
from broker.context import Context
from schemas.trading import OrderAccepted, OrderRefusal, OrderRejected, RejectedRequest, SubmitOrder

log = logs.get("kabuto.exchange")


def payload_digest(request: SubmitOrder) -> str:
    """The same order always serialises to the same bytes, whatever envelope carried it.

    The sealed account is left out: sealing the same account twice gives two different boxes
    (a fresh key each time), and the exchange cannot open them to compare. An order sent again
    is the same order, with the account of the one first accepted (R-001-06, docs/security.md)."""
    comparable = request.model_copy(update={"settlement_account": "sealed"})
    return hashlib.sha256(comparable.model_dump_json().encode()).hexdigest()


def answered(ctx: Context, request: SubmitOrder, existing: tuple[int, str | None] | None) -> bool:
    """Answer a resubmitted client order id; False when the id is new (or names someone else).

    ``existing``: the acceptance number and payload digest of the order already on the books
    under the request's user and client order id (``order_repo.acceptance_view``).
    """
    assert ctx.sender is not None and ctx.digest is not None
    if request.user_id != ctx.sender.user_id:
        return False  # acceptance refuses it as user_mismatch
    if existing is None:
        return False
    oan, recorded = existing
    if recorded == payload_digest(request):
        log.info("order_resubmitted", acceptance_number=oan)
        ctx.emit(
            OrderAccepted(client_order_id=request.client_order_id, acceptance_number=oan, request_hash=ctx.digest),
            to=request.user_id,
        )
        return True
    log.info("order_id_conflict", acceptance_number=oan)
    ctx.emit(
        OrderRejected(
            client_order_id=request.client_order_id,
            request=RejectedRequest.ORDER,
            reason=OrderRefusal.CLIENT_ORDER_ID_CONFLICT,
            detail=f"client order id {request.client_order_id} names another order (acceptance {oan})",
            request_hash=ctx.digest,
        ),
        to=request.user_id,
    )
    return True
