"""The investor client's certificate lifecycle (seed 001 Phases 3 and 4): handing a certificate
to another investor, claiming one handed over (41, then 43 on the answer 42), holdings inquiry
(44/45) and reissue (46) for a lost certificate, a split or a merge."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from uuid import UUID

from agents.investor import domain, lifecycle_repo, order_repo, repo
from agents.investor.domain import Dividend
from broker import logs
from broker.consumer import Handler
from broker.context import Context
from broker.errors import Reason, SecurityRejected
from broker.sealed_box import sealed_dividend
from broker.stock_certificates import CertificateInvalid, content_of, endorse, verify_certificate, verify_endorsement
from schemas.catalogue import Message
from schemas.identity import ISSUER_ID
from schemas.issuance import DividendMethod
from schemas.lifecycle import (
    CertificateHandover,
    CertificatesReissued,
    HoldingsInquiry,
    HoldingsStatement,
    OffExchangeTransferRefused,
    OffExchangeTransferRegistered,
    OffExchangeTransferRequest,
    ReissueKind,
    ReissueRefused,
    ReissueRequest,
)
from schemas.trading import CertificateRequestAfterTransfer

log = logs.get("kabuto.investor")
Command = Callable[[Context], Awaitable[UUID]]


class LifecycleError(ValueError):
    """A hand-over, claim or reissue the investor client will not send, and why."""


def hand_over(cert_id: UUID, transferee: str, note: str = "") -> Command:
    """P3.1 (R-001-47): countersign a held certificate for ``transferee`` and send it over."""

    async def action(ctx: Context) -> UUID:
        me = ctx.identity.user_id
        signed = await order_repo.committable(ctx.connection, me, cert_id)
        if signed is None or transferee == me:
            raise LifecycleError(f"certificate {cert_id} is not held free of orders, or the transferee is you")
        await lifecycle_repo.mark_handed_over(ctx.connection, me, cert_id)
        handover_id = uuid.uuid4()
        endorsed = endorse(ctx.identity, signed, "transfer", f"transfer:{transferee}")
        # The hand-over is its message: a command waiting on it finds its outbox row by this id.
        hand_over = CertificateHandover(handover_id=handover_id, certificate=endorsed, note=note)
        ctx.emit(hand_over, to=transferee, message_id=handover_id)
        return handover_id

    return action


async def on_handover(handover: CertificateHandover, ctx: Context) -> None:
    """P3.2 (R-001-48): the transferor's countersignature first, then the issuer's; a failed check
    is kept as a rejected hand-over, never claimed (E18)."""
    assert ctx.sender is not None
    me, transferor = ctx.identity.user_id, ctx.sender.user_id
    endorsed = handover.certificate
    try:
        if len(endorsed.endorsements) != 1:
            raise CertificateInvalid("a hand-over carries exactly the transferor's countersignature")
        verify_endorsement(
            endorsed, 0, ctx.trust, endorser=transferor, purpose="transfer", context=f"transfer:{me}", now=ctx.now
        )
        certificate = verify_certificate(endorsed.certificate, ctx.trust)
        domain.check_delivered(
            certificate, holder=transferor, delivered_by=certificate.issuing_agent_id, today=ctx.now.date()
        )
    except CertificateInvalid as exc:
        log.warning("handover_rejected", transferor=transferor, detail=exc.detail)
        await lifecycle_repo.record_handover(
            ctx.connection, handover.handover_id, me, transferor, endorsed, status="rejected", reason=exc.detail
        )
        return
    await lifecycle_repo.record_handover(
        ctx.connection,
        handover.handover_id,
        me,
        transferor,
        endorsed,
        status="received",
        facts=(certificate.cert_id, certificate.issue_code, certificate.shares),
    )


def claim_handover(handover_id: UUID, holder_name: str, holder_address: str, dividend: Dividend) -> Command:
    """P3.3 (R-001-49): ask the issuer to register the handed-over certificate in our name (41)."""

    async def action(ctx: Context) -> UUID:
        me = ctx.identity.user_id
        handover = await lifecycle_repo.handover(ctx.connection, me, handover_id)
        if handover is None or handover.status != "received" or handover.cert_id is None:
            raise LifecycleError(f"no verified hand-over {handover_id} waiting to be claimed")
        sealed = ctx.emit(
            OffExchangeTransferRequest(
                cert_id=handover.cert_id,
                user_id=me,
                holder_name=holder_name,
                holder_address=holder_address,
                certificate=handover.certificate,
            ),
            to=_issuer_of(handover),
        )
        request_id = sealed.envelope.message_id
        await lifecycle_repo.claimed(
            ctx.connection,
            handover_id,
            request_id,
            holder_name,
            holder_address,
            dividend.method.value,
            dividend.account,
        )
        await repo.record_request(
            ctx.connection, request_id, me, "transfer", handover.issue_code or "", handover.shares or 0
        )
        return request_id

    return action


def _issuer_of(handover: lifecycle_repo.Handover) -> str:
    return content_of(handover.certificate).issuing_agent_id


async def on_transfer_registered(answer: OffExchangeTransferRegistered, ctx: Context) -> None:
    """P3.8 (R-001-52): registered; ask for the certificate quoting the NTN (43)."""
    me = ctx.identity.user_id
    handover = await lifecycle_repo.handover_by_request(ctx.connection, answer.request_id)
    if handover is None or not await lifecycle_repo.settle_request(
        ctx.connection, answer.request_id, me, "fulfilled", cert_id=answer.new_cert_id
    ):
        raise SecurityRejected(Reason.UNSOLICITED, f"no pending transfer request {answer.request_id}")
    await lifecycle_repo.handover_status(ctx.connection, handover.handover_id, "registered", None)
    sealed = ctx.emit(
        CertificateRequestAfterTransfer(
            name_transfer_number=answer.name_transfer_number,
            holder_name=handover.holder_name or me,
            holder_address=handover.holder_address or "",
            dividend_delivery=sealed_dividend(  # R-001-44
                ctx.trust,
                me,
                DividendMethod(handover.dividend_method or DividendMethod.SETTLEMENT_ACCOUNT),
                handover.dividend_account or me,
            ),
        ),
        to=ISSUER_ID,
    )
    await repo.record_request(
        ctx.connection,
        sealed.envelope.message_id,
        me,
        "after_transfer",
        handover.issue_code or "",
        handover.shares or 0,
    )


async def on_transfer_refused(answer: OffExchangeTransferRefused, ctx: Context) -> None:
    me = ctx.identity.user_id
    if not await lifecycle_repo.settle_request(
        ctx.connection, answer.request_id, me, "refused", answer.reason.value, answer.detail
    ):
        raise SecurityRejected(Reason.UNSOLICITED, f"no pending transfer request {answer.request_id}")
    handover = await lifecycle_repo.handover_by_request(ctx.connection, answer.request_id)
    if handover is not None:
        await lifecycle_repo.handover_status(ctx.connection, handover.handover_id, "refused", answer.detail)


def inquire_holdings(issue_code: str | None = None) -> Command:
    async def action(ctx: Context) -> UUID:
        inquiry = HoldingsInquiry(user_id=ctx.identity.user_id, issue_code=issue_code)
        return ctx.emit(inquiry, to=ISSUER_ID).envelope.message_id

    return action


async def on_holdings(statement: HoldingsStatement, ctx: Context) -> None:
    await lifecycle_repo.record_holdings(ctx.connection, ctx.identity.user_id, statement.model_dump_json())


def reissue(kind: ReissueKind, cert_ids: tuple[UUID, ...], split_into: tuple[int, ...] = ()) -> Command:
    """P4.3 (R-001-55): ask for a lost certificate again, or to split or merge certificates."""

    async def action(ctx: Context) -> UUID:
        me = ctx.identity.user_id
        request = ReissueRequest(user_id=me, kind=kind, cert_ids=cert_ids, split_into=split_into)
        sealed = ctx.emit(request, to=ISSUER_ID)
        await repo.record_request(ctx.connection, sealed.envelope.message_id, me, f"reissue:{kind.value}", "", 0)
        return sealed.envelope.message_id

    return action


async def on_reissued(answer: CertificatesReissued, ctx: Context) -> None:
    """P4.6: keep the new certificates, give up the old ones."""
    assert ctx.sender is not None
    me = ctx.identity.user_id
    kept = []
    for signed in answer.certificates:
        certificate = verify_certificate(signed, ctx.trust)
        domain.check_delivered(certificate, holder=me, delivered_by=ctx.sender.user_id, today=ctx.now.date())
        kept.append((certificate, signed))
    if not await lifecycle_repo.settle_request(ctx.connection, answer.request_id, me, "fulfilled"):
        raise SecurityRejected(Reason.UNSOLICITED, f"no pending reissue request {answer.request_id}")
    for cert_id in answer.retired:
        await order_repo.surrender(ctx.connection, cert_id)
    for certificate, signed in kept:
        await repo.keep(ctx.connection, certificate, signed)


async def on_reissue_refused(answer: ReissueRefused, ctx: Context) -> None:
    if not await lifecycle_repo.settle_request(
        ctx.connection, answer.request_id, ctx.identity.user_id, "refused", answer.reason.value, answer.detail
    ):
        raise SecurityRejected(Reason.UNSOLICITED, f"no pending reissue request {answer.request_id}")


HANDLERS: dict[type[Message], Handler] = {
    CertificateHandover: on_handover,
    OffExchangeTransferRegistered: on_transfer_registered,
    OffExchangeTransferRefused: on_transfer_refused,
    HoldingsStatement: on_holdings,
    CertificatesReissued: on_reissued,
    ReissueRefused: on_reissue_refused,
}
