"""The issuer's handlers: load, decide in the domain, save, emit."""

from __future__ import annotations

import functools
import uuid

from agents.issuer import delivery, domain, lifecycle, repo, transfers
from broker import clear_accounts, logs
from broker.context import Context
from broker.envelope import MAX_MESSAGE_BYTES
from broker.progress import pause
from broker.runtime import AgentDefinition, AgentRuntime
from broker.stock_certificates import sign_certificate
from schemas.dvp import SecuritiesCommit, SecuritiesRelease, SecuritiesReserve
from schemas.identity import EXCHANGE_ID, ISSUER_ID, Role
from schemas.issuance import (
    CertIdEntry,
    CertIdListUpdated,
    CertificateIssuanceCompleted,
    CertificateIssuanceRefused,
    CertificateIssuanceRequest,
    CertificateIssuanceRequestV1,
    CertificateIssued,
)
from schemas.lifecycle import HoldingsInquiry, OffExchangeTransferRequest, ReissueRequest
from schemas.trading import CertificateRelease, CertificateRequestAfterTransfer, CertificateRequestAfterTransferV1

log = logs.get("kabuto.issuer")


async def on_issuance_request_v1(request: CertificateIssuanceRequestV1, ctx: Context) -> None:
    """Before the cut-over 32 may carry its dividend account in clear: sealed at once (R-001-06)."""
    await on_issuance_request(clear_accounts.sealed_issuance_request(ctx.trust, request), ctx)


async def on_request_after_transfer_v1(request: CertificateRequestAfterTransferV1, ctx: Context) -> None:
    """39 likewise (R-001-44); the holder is its sender."""
    assert ctx.sender is not None
    sealed = clear_accounts.sealed_request_after_transfer(ctx.trust, ctx.sender.user_id, request)
    await transfers.on_request_after_transfer(sealed, ctx)


async def on_issuance_request(request: CertificateIssuanceRequest, ctx: Context) -> None:
    """Seed 001 S51–S60 (R-001-15..17): examine, register, sign and send; tell the exchange."""
    assert ctx.sender is not None and ctx.message_id is not None
    offering = await repo.offering_for_update(ctx.connection, request.issue_code)
    refusal = domain.examine(request, ctx.sender, offering)
    if refusal is not None or offering is None:
        assert refusal is not None
        await repo.record_request(
            ctx.connection, ctx.message_id, request, outcome="refused", reason=refusal.reason.value
        )
        log.info("issuance_refused", reason=refusal.reason.value, detail=refusal.detail)
        ctx.emit(
            CertificateIssuanceRefused(request_id=ctx.message_id, reason=refusal.reason, detail=refusal.detail),
            to=ctx.sender.user_id,
        )
        return
    allocation = await repo.allocate(ctx.connection, offering.issue_code, request.shares)
    certificate = domain.new_certificate(
        offering,
        request,
        cert_id=uuid.uuid4(),
        number=domain.certificate_number(offering.issue_code, allocation.certificate_sequence),
        today=ctx.now.date(),
        agent=domain.issuing_agent(ctx.identity.user_id),
    )
    await repo.register(ctx.connection, certificate, request, offering.issuance_conditions or {})
    signed = sign_certificate(ctx.identity, certificate)
    await repo.record_signed(ctx.connection, certificate.cert_id, signed)
    await repo.record_request(ctx.connection, ctx.message_id, request, outcome="issued", cert_id=certificate.cert_id)
    log.info("certificate_issued", cert_id=str(certificate.cert_id), shares=certificate.shares)
    ctx.emit(CertificateIssued(request_id=ctx.message_id, certificate=signed), to=ctx.sender.user_id)
    ctx.emit(
        CertIdListUpdated(
            list_id=uuid.uuid4(),
            issue_code=offering.issue_code,
            share_class=offering.share_class,
            version=allocation.register_version,
            kind="change",
            valid=(
                CertIdEntry(
                    cert_id=certificate.cert_id,
                    user_id=certificate.holder_user_id,
                    shares=certificate.shares,
                ),
            ),
        ),
        to=EXCHANGE_ID,
    )
    ctx.emit(
        CertificateIssuanceCompleted(
            issue_code=certificate.issue_code,
            cert_id=certificate.cert_id,
            certificate_number=certificate.certificate_number,
            holder_user_id=certificate.holder_user_id,
            shares=certificate.shares,
        )
    )


async def publish_certid_lists(ctx: Context, max_message_bytes: int = MAX_MESSAGE_BYTES) -> int:
    """Seed 001 S61–S63 (R-001-19): send the exchange a signed full list of every issue, in
    parts that each fit ``max_message_bytes`` (docs/decisions.md, "CertID snapshots in parts")."""
    snapshots = await repo.certid_snapshots(ctx.connection)
    most = domain.snapshot_part_size(max_message_bytes)
    for snapshot in snapshots:
        for part in domain.snapshot_parts(snapshot.entries, most):
            ctx.emit(
                CertIdListUpdated(
                    list_id=uuid.uuid4(),
                    issue_code=snapshot.issue_code,
                    share_class=snapshot.share_class,
                    version=snapshot.version,
                    kind="snapshot",
                    valid=part.entries,
                    after=part.after,
                    through=part.through,
                ),
                to=EXCHANGE_ID,
            )
    return len(snapshots)


async def periodic_certid_lists(runtime: AgentRuntime) -> None:
    """Publish full CertID lists on a timer, so a lost or late change heals by itself."""
    interval = runtime.settings.certid_list_interval.total_seconds()
    while True:
        await pause(interval)
        async with runtime.round_of(periodic_certid_lists):
            count = await runtime.command(
                ISSUER_ID, functools.partial(publish_certid_lists, max_message_bytes=runtime.settings.max_message_bytes)
            )
        log.info("certid_lists_published", issues=count)


AGENT = AgentDefinition(
    id=ISSUER_ID,
    role=Role.ISSUER,
    handlers={
        CertificateIssuanceRequest: on_issuance_request,
        CertificateIssuanceRequestV1: on_issuance_request_v1,
        SecuritiesReserve: delivery.on_reserve,
        SecuritiesCommit: delivery.on_commit,
        SecuritiesRelease: delivery.on_release,
        CertificateRequestAfterTransfer: transfers.on_request_after_transfer,
        CertificateRequestAfterTransferV1: on_request_after_transfer_v1,
        CertificateRelease: transfers.on_release,
        OffExchangeTransferRequest: lifecycle.on_off_exchange_transfer,
        HoldingsInquiry: lifecycle.on_holdings_inquiry,
        ReissueRequest: lifecycle.on_reissue,
    },
    background=(periodic_certid_lists,),
)
