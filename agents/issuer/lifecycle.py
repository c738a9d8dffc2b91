"""The issuer's handlers for the certificate lifecycle off the exchange (seed 001 Phases 3 and 4):
off-exchange name transfer 41 → 42 (then 43, handled like 39), holdings inquiry 44 → 45,
and reissue 46 for a lost certificate, a split or a merge. Each change to the register sends
the exchange the CertID list change (R-001-53), so a dead CertID is dead there too."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from agents.issuer import domain, repo
from agents.issuer.register import RegisterRecord, transfer
from agents.issuer.reissue import Refused, check_holdings, check_request, plan
from agents.issuer.transfers import issue_certificate
from broker import logs
from broker.context import Context
from broker.stock_certificates import CertificateInvalid, verify_certificate, verify_endorsement
from schemas.certificates import ElectronicStockCertificate, TransferRestriction
from schemas.identity import EXCHANGE_ID
from schemas.issuance import CertIdEntry, CertIdListUpdated
from schemas.lifecycle import (
    CertificatesReissued,
    Holding,
    HoldingsInquiry,
    HoldingsStatement,
    LifecycleRefusal,
    OffExchangeTransferRefused,
    OffExchangeTransferRegistered,
    OffExchangeTransferRequest,
    ReissueRefused,
    ReissueRequest,
)

log = logs.get("kabuto.issuer")


async def on_off_exchange_transfer(request: OffExchangeTransferRequest, ctx: Context) -> None:
    """P3.4–P3.7 (R-001-50/51): check like a transfer on the exchange, register, answer with the NTN."""
    assert ctx.sender is not None and ctx.message_id is not None
    try:
        certificate = _verified_handover(request, ctx)
        record = await repo.record(ctx.connection, certificate.cert_id)
        check_holdings(certificate.holder_user_id, [certificate.cert_id], [record])
        assert record is not None
        if record.shares != certificate.shares:
            raise Refused(LifecycleRefusal.NOT_REGISTERED, "the certificate's share count is not the register's")
    except Refused as refused:
        log.info("off_exchange_transfer_refused", reason=refused.reason.value, detail=refused.detail)
        ctx.emit(
            OffExchangeTransferRefused(request_id=ctx.message_id, reason=refused.reason, detail=refused.detail),
            to=ctx.sender.user_id,
        )
        return
    change = transfer(
        record,
        shares=record.shares,
        buyer_user_id=request.user_id,
        buyer_name=request.holder_name,
        buyer_address=request.holder_address,
        buyer_cert_id=uuid.uuid4(),
        remainder_cert_id=uuid.uuid4(),
        new_number=record.certificate_number,
        today=ctx.now.date(),
        commit_remainder=None,
    )
    await repo.retire(ctx.connection, record.cert_id)
    ntn = await repo.record_transfer(
        ctx.connection,
        buyer=change.buyer,
        seller_user_id=record.holder_user_id,
        old_cert_id=record.cert_id,
        remainder_cert_id=None,
        matching_number=None,
    )
    log.info("off_exchange_transfer_registered", ntn=ntn, old_cert_id=str(record.cert_id))
    ctx.emit(
        OffExchangeTransferRegistered(
            request_id=ctx.message_id, name_transfer_number=ntn, new_cert_id=change.buyer.cert_id
        ),
        to=ctx.sender.user_id,
    )
    await _tell_exchange(ctx, [record], [change.buyer])


def _verified_handover(request: OffExchangeTransferRequest, ctx: Context) -> ElectronicStockCertificate:
    """The issuer's signature, then the transferor's countersignature for this transferee."""
    assert ctx.sender is not None
    if request.user_id != ctx.sender.user_id:
        raise Refused(LifecycleRefusal.BAD_REQUEST, f"request names {request.user_id}, signed by {ctx.sender.user_id}")
    endorsed = request.certificate
    try:
        certificate = verify_certificate(endorsed.certificate, ctx.trust)
    except CertificateInvalid as exc:
        raise Refused(LifecycleRefusal.CERTIFICATE_SIGNATURE_INVALID, exc.detail) from exc
    if certificate.cert_id != request.cert_id:
        raise Refused(
            LifecycleRefusal.CONTENT_MISMATCH, f"request names {request.cert_id}, certificate is {certificate.cert_id}"
        )
    if certificate.holder_user_id == request.user_id:
        raise Refused(LifecycleRefusal.BAD_REQUEST, "a holder cannot transfer a certificate to itself")
    if certificate.transfer_restriction is not TransferRestriction.NONE:  # the rule the exchange applies too
        raise Refused(
            LifecycleRefusal.TRANSFER_RESTRICTED,
            f"the shares are {certificate.transfer_restriction.value.replace('_', ' ')}",
        )
    try:
        if len(endorsed.endorsements) != 1:
            raise CertificateInvalid("a hand-over carries exactly the transferor's countersignature")
        verify_endorsement(
            endorsed,
            0,
            ctx.trust,
            endorser=certificate.holder_user_id,
            purpose="transfer",
            context=f"transfer:{request.user_id}",
            now=ctx.now,
        )
    except CertificateInvalid as exc:
        raise Refused(LifecycleRefusal.ENDORSEMENT_INVALID, exc.detail) from exc
    return certificate


async def on_holdings_inquiry(inquiry: HoldingsInquiry, ctx: Context) -> None:
    """P4.2 (R-001-54): the register searched by the requester's user id, and nobody else's."""
    assert ctx.sender is not None and ctx.message_id is not None
    holdings: list[Holding] = []
    if inquiry.user_id == ctx.sender.user_id:
        holdings = await repo.holdings(ctx.connection, inquiry.user_id, inquiry.issue_code)
    ctx.emit(HoldingsStatement(inquiry_id=ctx.message_id, holdings=tuple(holdings)), to=ctx.sender.user_id)


async def on_reissue(request: ReissueRequest, ctx: Context) -> None:
    """P4.4–P4.6 (R-001-56): check, retire, register the new CertIDs, sign and send."""
    assert ctx.sender is not None and ctx.message_id is not None
    conn = ctx.connection
    try:
        if request.user_id != ctx.sender.user_id:
            raise Refused(LifecycleRefusal.NOT_HOLDER, f"request names {request.user_id}")
        found = [await repo.record(conn, cert_id) for cert_id in sorted(request.cert_ids)]
        check_holdings(request.user_id, sorted(request.cert_ids), found)
        old = [r for r in found if r is not None]
        needed = check_request(request, old)
    except Refused as refused:
        log.info("reissue_refused", reason=refused.reason.value, detail=refused.detail)
        ctx.emit(
            ReissueRefused(request_id=ctx.message_id, reason=refused.reason, detail=refused.detail),
            to=ctx.sender.user_id,
        )
        return
    issue = old[0].issue_code
    numbers = [domain.certificate_number(issue, await repo.next_certificate_number(conn, issue)) for _ in range(needed)]
    new = plan(request, old, iter(numbers).__next__)
    offering = await repo.offering(conn, issue)
    assert offering is not None
    for record in old:
        await repo.retire(conn, record.cert_id)
    signed = []
    for record in new:
        await repo.insert_record(conn, record)
        signed.append(await issue_certificate(ctx, offering, record))
    await repo.record_reissue(
        conn, ctx.message_id, request.user_id, request.kind.value, [r.cert_id for r in old], [r.cert_id for r in new]
    )
    log.info("certificates_reissued", kind=request.kind.value, retired=len(old), created=len(new))
    ctx.emit(
        CertificatesReissued(
            request_id=ctx.message_id, retired=tuple(r.cert_id for r in old), certificates=tuple(signed)
        ),
        to=ctx.sender.user_id,
    )
    await _tell_exchange(ctx, old, new)


async def _tell_exchange(ctx: Context, retired: Sequence[RegisterRecord], valid: Sequence[RegisterRecord]) -> None:
    """R-001-53: the exchange's CertID list follows every change to the register."""
    issue = retired[0].issue_code
    version = await repo.next_register_version(ctx.connection, issue)
    ctx.emit(
        CertIdListUpdated(
            list_id=uuid.uuid4(),
            issue_code=issue,
            share_class=retired[0].share_class,
            version=version,
            kind="change",
            valid=tuple(CertIdEntry(cert_id=r.cert_id, user_id=r.holder_user_id, shares=r.shares) for r in valid),
            retired=tuple(r.cert_id for r in retired),
        ),
        to=EXCHANGE_ID,
    )
