"""The issuer's name-transfer handlers (seed 001 S101–S119, S141–S150, R-001-31..36, 44–46).

A transfer on the exchange arrives as the securities leg of a settlement instruction
(``delivery.py``, issue 11): the certificate countersigned by the seller for its sell order
(or, for a remainder the seller already committed to that order, by the exchange alone) and by
the exchange for this execution. The issuer checks signatures, contents and register at the
reservation, and on commit retires the old CertID, registers the buyer (and the seller's
remainder) under new CertIDs and records the history. The buyer then asks
for its certificate with 39, quoting the name-transfer number; the seller's remainder
certificate is pushed at once, since nothing about its holder changed.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from agents.issuer import domain, repo
from agents.issuer.register import RegisterRecord, TransferRefused, check_transfer, committed_to, transfer
from broker import logs, trade_reports
from broker.context import Context
from broker.set_based import SetBased
from broker.stock_certificates import (
    CertificateInvalid,
    sign_certificate,
    verify_certificate,
    verify_endorsement,
)
from schemas.certificates import ElectronicStockCertificate, SignedCertificate
from schemas.issuance import CertificateIssuanceRefused, CertificateIssued, IssuanceRefusal
from schemas.trading import (
    CertificateRelease,
    CertificateRequestAfterTransfer,
    NameTransferRequest,
    RemainderCertificate,
    TransferRefusal,
)

log = logs.get("kabuto.issuer")


def _verified(request: NameTransferRequest, ctx: Context, exchange: str | None = None) -> ElectronicStockCertificate:
    """S105–S107: the issuer's signature, then the exchange's countersignature for this execution."""
    assert ctx.sender is not None
    exchange = exchange or ctx.sender.user_id
    endorsed = request.certificate
    try:
        certificate = verify_certificate(endorsed.certificate, ctx.trust)
    except CertificateInvalid as exc:
        raise TransferRefused(TransferRefusal.CERTIFICATE_SIGNATURE_INVALID, exc.detail) from exc
    try:
        verify_endorsement(
            endorsed,
            len(endorsed.endorsements) - 1,
            ctx.trust,
            endorser=exchange,
            purpose="name_transfer",
            context=f"omn:{request.matching_number}",
            now=ctx.now,
        )
    except CertificateInvalid as exc:
        raise TransferRefused(TransferRefusal.ENDORSEMENT_INVALID, exc.detail) from exc
    return certificate


def _check_authority(
    request: NameTransferRequest, ctx: Context, record: RegisterRecord, exchange: str | None = None
) -> None:
    """The seller agreed to sell this certificate: its countersignature for a sell order, or an
    earlier commitment of this remainder to the same exchange order."""
    assert ctx.sender is not None
    if committed_to(record, exchange or ctx.sender.user_id, request.seller_order):
        return
    endorsed = request.certificate
    try:
        context = verify_endorsement(
            endorsed,
            0,
            ctx.trust,
            endorser=request.seller_user_id,
            purpose="sell_order",
            context=None,
            now=ctx.now,
        )
    except CertificateInvalid as exc:
        raise TransferRefused(TransferRefusal.NOT_AUTHORISED, exc.detail) from exc
    # A sell order's countersignature, or a reported trade's (agents/exchange/reports.py): the
    # exchange that countersigned for the match checked it was made for that order or those terms.
    sale = context.startswith((f"order:{request.seller_user_id}:", f"{trade_reports.PREFIX}{request.seller_user_id}:"))
    if not sale or len(endorsed.endorsements) != 2:
        raise TransferRefused(TransferRefusal.NOT_AUTHORISED, "the seller did not countersign a sale")
    if record.committed_by is not None:
        raise TransferRefused(TransferRefusal.NOT_AUTHORISED, f"CertID is committed to order {record.committed_order}")


@dataclass(frozen=True, slots=True)
class Transferred:
    """What a name transfer did: the NTN, the buyer's CertID, the seller's remainder, the register version."""

    name_transfer_number: int
    buyer_cert_id: uuid.UUID
    remainder: SignedCertificate | None
    register_version: int


@dataclass(frozen=True, slots=True)
class Transfer:
    """A name transfer to apply: the request, its context, the register record it retires (locked
    and checked at reservation) and the exchange whose order a remainder stays committed to."""

    request: NameTransferRequest
    ctx: Context
    old: RegisterRecord
    exchange: str


async def apply_transfers(transfers: Sequence[Transfer]) -> list[Transferred]:
    """S114–S118 for several transfers of distinct CertIDs, in order: the old CertIDs retired, the
    buyers (and remainders) registered, the history recorded — the numbers drawn and the transfers
    recorded in one statement each for the set (docs/netting.md); a seller's remainder certificate
    is pushed to the seller at once."""
    if not transfers:
        return []
    conn, today = transfers[0].ctx.connection, transfers[0].ctx.now.date()
    draws = await repo.draw_for_transfers(conn, [t.old for t in transfers])  # retires the old CertIDs
    recorded: list[repo.NameTransfer] = []
    remainders: list[SignedCertificate | None] = []
    for t, drawn in zip(transfers, draws, strict=True):
        assert drawn is not None
        request, old = t.request, t.old
        change = transfer(
            old,
            shares=request.shares,
            buyer_user_id=request.buyer_user_id,
            buyer_name=request.buyer_name,
            buyer_address=request.buyer_address,
            buyer_cert_id=uuid.uuid4(),
            remainder_cert_id=uuid.uuid4(),
            new_number=domain.certificate_number(old.issue_code, drawn.certificate_sequence),
            today=today,
            commit_remainder=(t.exchange, request.seller_order) if request.seller_order_open else None,
        )
        remainders.append(await _register_remainder(t.ctx, drawn.offering, change.remainder))
        remainder_cert_id = change.remainder.cert_id if change.remainder else None
        recorded.append(
            repo.NameTransfer(
                change.buyer, request.seller_user_id, old.cert_id, remainder_cert_id, request.matching_number
            )
        )
    numbers = await repo.record_transfers(conn, recorded)
    done = []
    for t, drawn, record, remainder, ntn in zip(transfers, draws, recorded, remainders, numbers, strict=True):
        assert drawn is not None
        with t.ctx.bound():
            log.info("name_transferred", ntn=ntn, old_cert_id=str(t.old.cert_id), buyer=t.request.buyer_user_id)
        if remainder is not None:
            t.ctx.emit(
                RemainderCertificate(name_transfer_number=ntn, replaces_cert_id=t.old.cert_id, certificate=remainder),
                to=t.request.seller_user_id,
            )
        done.append(Transferred(ntn, record.buyer.cert_id, remainder, drawn.register_version))
    return done


async def _register_remainder(
    ctx: Context, offering: domain.Offering, record: RegisterRecord | None
) -> SignedCertificate | None:
    if record is None:
        return None
    await repo.insert_record(ctx.connection, record)
    return await issue_certificate(ctx, offering, record)


async def issue_certificate(ctx: Context, offering: domain.Offering, record: RegisterRecord) -> SignedCertificate:
    """S149–S150: the certificate drawn up from the register record, signed and kept."""
    signed = drawn_up(ctx, offering, record)
    await repo.record_signed(ctx.connection, record.cert_id, signed)
    return signed


def drawn_up(ctx: Context, offering: domain.Offering, record: RegisterRecord) -> SignedCertificate:
    """S149–S150: the certificate drawn up from the register record and signed."""
    certificate = domain.certificate(
        offering,
        cert_id=record.cert_id,
        number=record.certificate_number,
        shares=record.shares,
        holder_name=record.holder_name,
        holder_user_id=record.holder_user_id,
        today=ctx.now.date(),
        agent=domain.issuing_agent(ctx.identity.user_id),
    )
    return sign_certificate(ctx.identity, certificate)


async def _on_requests_after_transfer(items: Sequence[tuple[CertificateRequestAfterTransfer, Context]]) -> None:
    """S141–S150 (R-001-44..46): each transferee's certificate, by name-transfer number — in a
    set (broker.set_based): the transfers read and locked in one statement, the records
    completed in one, the certificates drawn up and signed each, and kept in one. A buyer asks
    as soon as its trade completes, one request a trade (docs/performance.md, stop 28)."""
    connection = items[0][1].connection
    found = await repo.transferred_set(connection, [request.name_transfer_number for request, _ in items])
    first: list[tuple[CertificateRequestAfterTransfer, Context, repo.Transferred]] = []
    for request, ctx in items:
        assert ctx.sender is not None and ctx.message_id is not None
        transferred = found.get(request.name_transfer_number)
        if transferred is None or not _transferee(transferred, ctx.sender.user_id):
            ctx.emit(
                CertificateIssuanceRefused(
                    request_id=ctx.message_id,
                    reason=IssuanceRefusal.UNKNOWN_TRANSFER,
                    detail=f"no name transfer {request.name_transfer_number} to {ctx.sender.user_id} "
                    "whose CertID is still valid",
                ),
                to=ctx.sender.user_id,
            )
        elif transferred.signed is None:  # first request: complete the record (S148) and issue
            first.append((request, ctx, transferred))
        else:  # a repeated request gets the same certificate again, byte for byte: no second CertID
            ctx.emit(
                CertificateIssued(request_id=ctx.message_id, certificate=transferred.signed), to=ctx.sender.user_id
            )
    if first:
        await _issue_first(connection, first)


def _transferee(found: repo.Transferred, sender: str) -> bool:
    """S146: the sender is the transfer's buyer and still holds the CertID it created, valid
    (reissued or transferred on since, that CertID is dead)."""
    return (
        found.transfer.buyer_user_id == sender
        and found.record.status == "valid"
        and found.record.holder_user_id == sender
    )


async def _issue_first(
    connection: asyncpg.Connection, first: Sequence[tuple[CertificateRequestAfterTransfer, Context, repo.Transferred]]
) -> None:
    holders = [
        (
            found.record.cert_id,
            request.holder_name,
            request.holder_address,
            request.dividend_delivery.method.value,
            request.dividend_delivery.account,
        )
        for request, _, found in first
    ]
    records = await repo.complete_holders(connection, holders)
    offerings = await repo.offerings_of(connection, {record.issue_code for record in records.values()})
    issued = []
    for _, ctx, found in first:
        assert ctx.sender is not None and ctx.message_id is not None
        record = records[found.record.cert_id]
        signed = drawn_up(ctx, offerings[record.issue_code], record)
        issued.append((record.cert_id, signed))
        ctx.emit(CertificateIssued(request_id=ctx.message_id, certificate=signed), to=ctx.sender.user_id)
    await repo.record_signed_all(connection, issued)


# Keyed by name-transfer number: a repeated request after the first in one set must find the
# certificate the first issued.
on_request_after_transfer: SetBased[CertificateRequestAfterTransfer] = SetBased(
    _on_requests_after_transfer, keys=lambda request: (request.name_transfer_number,)
)


async def _on_releases(items: Sequence[tuple[CertificateRelease, Context]]) -> None:
    """The sell orders closed: the remainders committed to them are their holders' again, in one
    statement for a set (the exchange sends one release at each trade's end)."""
    releases = []
    for release, ctx in items:
        assert ctx.sender is not None
        releases.append((ctx.sender.user_id, release.seller_order, release.seller_user_id))
    freed = await repo.release_all(items[0][1].connection, releases)
    for (release, ctx), count in zip(items, freed, strict=True):
        with ctx.bound():
            log.info("remainder_released", seller_order=release.seller_order, certificates=count)


# Keyed by sell order: the register rows a release frees are those committed to its order.
on_release: SetBased[CertificateRelease] = SetBased(_on_releases, keys=lambda release: (release.seller_order,))


def verified(request: NameTransferRequest, ctx: Context, exchange: str) -> ElectronicStockCertificate:
    """S105–S107 for a transfer the exchange countersigned, before the register is read: the
    certificate; ``TransferRefused`` if its signature or the exchange's countersignature fails."""
    return _verified(request, ctx, exchange)


def authorised(
    request: NameTransferRequest,
    ctx: Context,
    exchange: str,
    certificate: ElectronicStockCertificate,
    record: RegisterRecord | None,
) -> RegisterRecord:
    """S108–S113: the register ``record`` (read locked) of the ``verified`` certificate, checked
    against the request and the seller's authority; ``TransferRefused`` if they disagree."""
    check_transfer(request, certificate, record)
    assert record is not None
    _check_authority(request, ctx, record, exchange)
    return record
