"""The issuer as the securities leg of delivery versus payment (issue 11, docs/dvp.md).

Settlement drives three steps. **Reserve**: every check of a name transfer (seed 001
S105–S113: the issuer's signature, the seller's countersignature for its order, the
exchange's for this execution, the register) and then the CertID is locked to the
instruction — committed to the sell order, so no reissue, hand-over or other transfer can take
it. **Commit**: the name transfer itself (S114–S119), which cannot fail once reserved.
**Release**: the lock goes, the certificate is as it was. The exchange's countersignature
travels inside the leg, so settlement forwards the transfer but cannot invent one.

A reserve that says ``deliver`` (its cash earmarked at settlement and bound to the attempt until
this answer) is committed in the transaction that reserves it and answered
``securities.committed``: one round trip instead of two (docs/dvp.md, "Delivery against
earmarked cash").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from agents.issuer import repo, reservations, transfers
from agents.issuer.register import RegisterRecord, TransferRefused
from broker import logs
from broker.context import Context
from broker.set_based import SetBased
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


async def _on_reserve(requests: Sequence[tuple[SecuritiesReserve, Context]]) -> None:
    """Reserve each request's certificate, or say why not; for a set of requests of distinct
    instructions and CertIDs, the reservations are read, the register rows locked and the
    reservations recorded in one statement each (docs/netting.md)."""
    existing = await reservations.reservations(requests[0][1].connection, [r.instruction for r, _ in requests])
    queue: list[_Checking | tuple[SecuritiesReserve, Context]] = []
    for request, ctx in requests:
        earlier = existing.get(request.instruction)
        if earlier is not None and earlier.status == "committed" and isinstance(request.leg, CertificateLeg):
            await _reserve_and_answer(queue)  # those before it first, as one by one
            queue = []
        with ctx.bound():
            if earlier is not None and earlier.status == "reserved":
                queue.append((request, ctx))  # reserved before: answered again in its place
            elif earlier is not None and earlier.status == "committed" and earlier.attempt == request.attempt:
                _committed(ctx, request.instruction, request.attempt, earlier)  # delivered already
            elif earlier is not None and earlier.status == "committed" and isinstance(request.leg, CertificateLeg):
                if await _reserve_rest(ctx, request, request.leg, earlier):
                    await _answer_reserved([(request, ctx)])
            elif not isinstance(request.leg, CertificateLeg):
                _refuse(ctx, request, DvpReason.SECURITIES_INVALID, _NOT_CERTIFICATES, False)
            elif (verified := _verified(ctx, request, request.leg)) is not None:
                queue.append(verified)
    await _reserve_and_answer(queue)


async def _reserve_and_answer(queue: Sequence[_Checking | tuple[SecuritiesReserve, Context]]) -> None:
    """The checked requests of ``queue`` reserved together; then each request of it that holds
    its reservation answered, or delivered, in its place, as one by one would."""
    made = await _reserve_checked([q for q in queue if isinstance(q, _Checking)])
    await _answer_reserved(
        [
            (q.request, q.ctx) if isinstance(q, _Checking) else q
            for q in queue
            if not isinstance(q, _Checking) or q.request.instruction in made
        ]
    )


async def _answer_reserved(reserved: Sequence[tuple[SecuritiesReserve, Context]]) -> None:
    """Reservations made: each answered ``securities.reserved``, or delivered at once where its
    request says ``deliver``."""
    for request, ctx in reserved:
        if not request.deliver:
            with ctx.bound():
                _reserved(ctx, request)
    await _deliver(
        [_Delivering(request.instruction, request.attempt, ctx) for request, ctx in reserved if request.deliver]
    )


def _rows(request: SecuritiesReserve) -> tuple[object, ...]:
    """What a reservation works on: its instruction and the CertID it would lock."""
    if isinstance(request.leg, CertificateLeg):
        return (request.instruction, request.leg.cert_id)
    return (request.instruction,)


on_reserve = SetBased(_on_reserve, keys=_rows)
_NOT_CERTIFICATES = "the issuer delivers certificates, not book entries"


@dataclass(frozen=True, slots=True)
class _Checking:
    """A reservation whose certificate and countersignatures verified, its register row still to check."""

    ctx: Context
    request: SecuritiesReserve
    leg: CertificateLeg
    transfer: NameTransferRequest
    certificate: ElectronicStockCertificate


def _verified(ctx: Context, request: SecuritiesReserve, leg: CertificateLeg) -> _Checking | None:
    transfer = transfer_request(request, leg)
    try:
        return _Checking(ctx, request, leg, transfer, transfers.verified(transfer, ctx, leg.exchange_id))
    except TransferRefused as refused:
        _refused_transfer(ctx, request, refused)
        return None


async def _reserve_checked(checking: Sequence[_Checking]) -> set[int]:
    """The register rows of verified requests read and locked, checked, and the reservations
    recorded: one statement each for the set. The instructions reserved, still to answer."""
    if not checking:
        return set()
    connection = checking[0].ctx.connection
    records = await repo.records(connection, [c.certificate.cert_id for c in checking])
    reserving: list[tuple[_Checking, reservations.Reserving]] = []
    for c in checking:
        try:
            record = transfers.authorised(
                c.transfer, c.ctx, c.leg.exchange_id, c.certificate, records.get(c.certificate.cert_id)
            )
        except TransferRefused as refused:
            with c.ctx.bound():
                _refused_transfer(c.ctx, c.request, refused)
            continue
        reserving.append((c, reservations.Reserving(c.request, record, c.leg.exchange_id, c.leg.seller_order)))
    others = await reservations.reserve_all(connection, [r for _, r in reserving])
    reserved = set()
    for c, r in reserving:
        with c.ctx.bound():
            if _reserve_taken(c, r, others.get(c.request.instruction)):
                reserved.add(c.request.instruction)
    return reserved


def _reserve_taken(c: _Checking, r: reservations.Reserving, other: int | None) -> bool:
    """Whether a checked reservation was made; refused (and answered) if another instruction holds it."""
    if other is not None:
        _refuse(c.ctx, c.request, DvpReason.LACK_OF_SECURITIES, f"CertID is reserved for instruction {other}", True)
        return False
    log.info("securities_reserved", instruction=c.request.instruction, cert_id=str(r.record.cert_id))
    return True


def _refused_transfer(ctx: Context, request: SecuritiesReserve, refused: TransferRefused) -> None:
    reason = DvpReason.LACK_OF_SECURITIES if refused.reason in _MISSING else DvpReason.SECURITIES_INVALID
    _refuse(ctx, request, reason, f"{refused.reason.value}: {refused.detail}", False)


def _reserved(ctx: Context, request: SecuritiesReserve) -> None:
    assert ctx.sender is not None
    answer = SecuritiesReserved(instruction=request.instruction, attempt=request.attempt, quantity=request.quantity)
    ctx.emit(answer, to=ctx.sender.user_id)


async def _reserve_rest(
    ctx: Context, request: SecuritiesReserve, leg: CertificateLeg, earlier: reservations.Reservation
) -> bool:
    """After a partial settlement the rest of the instruction comes from the seller's remainder:
    the seller's countersignature covered the whole instruction, so it covers the rest too.
    Whether it was reserved; refused (and answered) if not."""
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
        return False
    log.info("securities_reserved", instruction=request.instruction, cert_id=str(record.cert_id), rest=True)
    return True


def _refuse(ctx: Context, request: SecuritiesReserve, reason: DvpReason, detail: str, retryable: bool) -> None:
    assert ctx.sender is not None
    log.info("securities_reservation_refused", instruction=request.instruction, reason=reason.value, detail=detail)
    ctx.emit(
        SecuritiesReservationRefused(
            instruction=request.instruction, attempt=request.attempt, reason=reason, retryable=retryable, detail=detail
        ),
        to=ctx.sender.user_id,
    )


async def _on_commit(requests: Sequence[tuple[SecuritiesCommit, Context]]) -> None:
    await _deliver([_Delivering(request.instruction, request.attempt, ctx) for request, ctx in requests])


@dataclass(frozen=True, slots=True)
class _Delivering:
    """An attempt whose reserved certificate is to be delivered: committed, or asked to deliver at reserve."""

    instruction: int
    attempt: int
    ctx: Context


async def _deliver(deliveries: Sequence[_Delivering]) -> None:
    """The name transfers; a repeated commit gets the same answer, never a second transfer. For a
    set, the reservations are read with their records, the numbers drawn, the transfers recorded
    and the reservations marked in one statement each (docs/netting.md)."""
    if not deliveries:
        return
    connection = deliveries[0].ctx.connection
    held = await reservations.reservations_with_records(connection, [d.instruction for d in deliveries])
    moving: list[tuple[_Delivering, reservations.Reservation, transfers.Transfer]] = []
    for delivering in deliveries:
        found, record = _held(held, delivering.instruction)  # the record was checked and locked at reserve
        leg = found.request.leg
        if found.status != "reserved":
            _committed(delivering.ctx, delivering.instruction, delivering.attempt, found)
        else:
            assert isinstance(leg, CertificateLeg)
            name_transfer = transfer_request(found.request, leg)
            moving.append(
                (delivering, found, transfers.Transfer(name_transfer, delivering.ctx, record, leg.exchange_id))
            )
    done = await transfers.apply_transfers([transfer for *_, transfer in moving])
    delivered = [
        (
            request.instruction,
            CertificateDelivery(
                name_transfer_number=d.name_transfer_number,
                new_cert_id=d.buyer_cert_id,
                remainder=d.remainder,
                register_version=d.register_version,
            ),
        )
        for (request, *_), d in zip(moving, done, strict=True)
    ]
    await reservations.committed_all(connection, delivered)
    for (request, found, transfer), (_, delivery) in zip(moving, delivered, strict=True):
        _committed(transfer.ctx, request.instruction, request.attempt, found, delivery)


on_commit = SetBased(_on_commit, keys=lambda request: (request.instruction,))


def _held(
    held: dict[int, tuple[reservations.Reservation, RegisterRecord]], instruction: int
) -> tuple[reservations.Reservation, RegisterRecord]:
    found = held.get(instruction)
    if found is None or found[0].status == "released":
        # Settlement commits only what was reserved; this is a protocol breach, not a business refusal.
        raise RuntimeError(f"commit of instruction {instruction} that holds no reservation")
    return found


def _committed(
    ctx: Context,
    instruction: int,
    attempt: int,
    found: reservations.Reservation,
    delivery: CertificateDelivery | None = None,
) -> None:
    """``delivery``, or the one ``found`` recorded when it was committed before."""
    delivery = delivery or found.delivery
    assert ctx.sender is not None and delivery is not None
    answer = SecuritiesCommitted(
        instruction=instruction, attempt=attempt, quantity=found.request.quantity, delivery=delivery
    )
    ctx.emit(answer, to=ctx.sender.user_id)


async def on_release(request: SecuritiesRelease, ctx: Context) -> None:
    released = await reservations.release(ctx.connection, request.instruction)
    log.info("securities_released", instruction=request.instruction, released=released)
