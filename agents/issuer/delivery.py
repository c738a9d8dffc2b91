"""The issuer as the securities leg of delivery versus payment (issue 11, docs/dvp.md).

Settlement drives three steps. **Reserve**: every check of a name transfer (seed 001
S105–S113: the issuer's signature, the seller's countersignature for its order, the
exchange's for this execution, the register) and then the CertID is locked to the
instruction — committed to the sell order, so no reissue, hand-over or other transfer can take
it. **Commit**: the name transfer itself (S114–S119), which cannot fail once reserved.
**Release**: the lock goes, the certificate is as it was. The exchange's countersignature
travels inside the leg, so settlement forwards the transfer but cannot invent one.
"""

from __future__ import annotations

from agents.issuer import repo, reservations, transfers
from agents.issuer.register import TransferRefused
from broker import logs
from broker.context import Context
from schemas.certificates import ElectronicStockCertificate
from schemas.dvp import (
    CertificateDelivery,
    CertificateLeg,
    DvpReason,
    SecuritiesCommit,
    SecuritiesCommitted,
    SecuritiesRelease,
    SecuritiesReservationRefused,
    SecuritiesReserve,
    SecuritiesReserved,
)
from schemas.trading import NameTransferRequest, TransferRefusal

log = logs.get("kabuto.issuer")

# The certificate will never deliver for these; anything else is about its contents or signatures.
_MISSING = {TransferRefusal.NOT_REGISTERED, TransferRefusal.QUANTITY_EXCEEDS_CERTIFICATE}


def transfer_request(request: SecuritiesReserve, leg: CertificateLeg) -> NameTransferRequest:
    """The name transfer (seed 001 message 35) this reservation stands for."""
    return NameTransferRequest(
        matching_number=request.instruction,
        issue_code=request.issue_code,
        share_class=leg.share_class,
        cert_id=leg.cert_id,
        shares=request.quantity,
        buyer_user_id=request.receiver,
        buyer_name=leg.buyer_name,
        buyer_address=leg.buyer_address,
        seller_user_id=request.deliverer,
        certificate=leg.certificate,
        seller_order=leg.seller_order,
        seller_order_open=leg.seller_order_open,
    )


async def on_reserve(request: SecuritiesReserve, ctx: Context) -> None:
    assert ctx.sender is not None
    to = ctx.sender.user_id
    existing = await reservations.reservation(ctx.connection, request.instruction)
    if existing is not None and existing.status == "reserved":
        ctx.emit(
            SecuritiesReserved(instruction=request.instruction, attempt=request.attempt, quantity=request.quantity),
            to=to,
        )
        return
    if existing is not None and existing.status == "committed" and isinstance(request.leg, CertificateLeg):
        await _reserve_rest(ctx, request, request.leg, existing)
        return
    if not isinstance(request.leg, CertificateLeg):
        _refuse(ctx, request, DvpReason.SECURITIES_INVALID, "the issuer delivers certificates, not book entries", False)
        return
    leg = request.leg
    try:
        record = await transfers.checked(transfer_request(request, leg), ctx, leg.exchange_id)
    except TransferRefused as refused:
        reason = DvpReason.LACK_OF_SECURITIES if refused.reason in _MISSING else DvpReason.SECURITIES_INVALID
        _refuse(ctx, request, reason, f"{refused.reason.value}: {refused.detail}", False)
        return
    other = await reservations.reserve(ctx.connection, request, record, leg.exchange_id, leg.seller_order)
    if other is not None:
        _refuse(ctx, request, DvpReason.LACK_OF_SECURITIES, f"CertID is reserved for instruction {other}", True)
        return
    log.info("securities_reserved", instruction=request.instruction, cert_id=str(record.cert_id))
    ctx.emit(
        SecuritiesReserved(instruction=request.instruction, attempt=request.attempt, quantity=request.quantity), to=to
    )


async def _reserve_rest(
    ctx: Context, request: SecuritiesReserve, leg: CertificateLeg, earlier: reservations.Reservation
) -> None:
    """After a partial settlement the rest of the instruction comes from the seller's remainder:
    the seller's countersignature covered the whole instruction, so it covers the rest too."""
    remainder = earlier.delivery.remainder if earlier.delivery else None
    cert_id = ElectronicStockCertificate.model_validate_json(remainder.content).cert_id if remainder else None
    record = await repo.record(ctx.connection, cert_id) if cert_id else None
    if (
        record is None
        or record.status != "valid"
        or record.holder_user_id != request.deliverer
        or record.shares < request.quantity
        # the last check writes: it reserves unless another instruction holds the CertID
        or await reservations.reserve(ctx.connection, request, record, leg.exchange_id, leg.seller_order) is not None
    ):
        _refuse(ctx, request, DvpReason.LACK_OF_SECURITIES, "the seller's remainder no longer covers the rest", False)
        return
    log.info("securities_reserved", instruction=request.instruction, cert_id=str(record.cert_id), rest=True)
    assert ctx.sender is not None
    ctx.emit(
        SecuritiesReserved(instruction=request.instruction, attempt=request.attempt, quantity=request.quantity),
        to=ctx.sender.user_id,
    )


def _refuse(ctx: Context, request: SecuritiesReserve, reason: DvpReason, detail: str, retryable: bool) -> None:
    assert ctx.sender is not None
    log.info("securities_reservation_refused", instruction=request.instruction, reason=reason.value, detail=detail)
    ctx.emit(
        SecuritiesReservationRefused(
            instruction=request.instruction, attempt=request.attempt, reason=reason, retryable=retryable, detail=detail
        ),
        to=ctx.sender.user_id,
    )


async def on_commit(request: SecuritiesCommit, ctx: Context) -> None:
    """The name transfer; a repeated commit gets the same answer, never a second transfer."""
    assert ctx.sender is not None
    held = await reservations.reservation_with_record(ctx.connection, request.instruction)
    if held is None or held[0].status == "released":
        # Settlement commits only what was reserved; this is a protocol breach, not a business refusal.
        raise RuntimeError(f"commit of instruction {request.instruction} that holds no reservation")
    found, record = held  # the record was checked and locked at reserve
    delivery = found.delivery
    if found.status == "reserved":
        leg = found.request.leg
        assert isinstance(leg, CertificateLeg)
        transfer = transfer_request(found.request, leg)
        done = await transfers.apply_transfer(transfer, ctx, record, leg.exchange_id)
        delivery = CertificateDelivery(
            name_transfer_number=done.name_transfer_number,
            new_cert_id=done.buyer_cert_id,
            remainder=done.remainder,
            register_version=done.register_version,
        )
        await reservations.committed(ctx.connection, request.instruction, delivery)
    assert delivery is not None
    ctx.emit(
        SecuritiesCommitted(
            instruction=request.instruction, attempt=request.attempt, quantity=found.request.quantity, delivery=delivery
        ),
        to=ctx.sender.user_id,
    )


async def on_release(request: SecuritiesRelease, ctx: Context) -> None:
    released = await reservations.release(ctx.connection, request.instruction)
    log.info("securities_released", instruction=request.instruction, released=released)
