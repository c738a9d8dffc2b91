"""The investor client's handlers and commands."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from uuid import UUID

from agents.investor import brokered, credit_notices, domain, instructions, lifecycle, repo, reported, standing, trading
from broker import logs
from broker.context import Context
from broker.errors import Reason, SecurityRejected
from broker.runtime import AgentDefinition
from broker.sealed_box import sealed_dividend
from broker.set_based import SetBased
from broker.stock_certificates import CertificateInvalid, verify_certificate
from schemas.certificates import ElectronicStockCertificate, ShareClass, SignedCertificate
from schemas.identity import ISSUER_ID, Role
from schemas.issuance import (
    CertificateIssuanceRefused,
    CertificateIssuanceRequest,
    CertificateIssued,
)

log = logs.get("kabuto.investor")


@dataclass(frozen=True, slots=True)
class IssuanceOrder:
    """What an investor fills in to subscribe to a new issue (seed 001 Fig. 5)."""

    issue_code: str
    share_class: ShareClass
    shares: int
    holder_name: str
    holder_address: str
    dividend_delivery: domain.Dividend
    issuer: str = ISSUER_ID


def request_certificates(order: IssuanceOrder) -> Callable[[Context], Awaitable[UUID]]:
    """A command: sign and send request 32 to the issuer (R-001-14); returns the request id."""

    async def action(ctx: Context) -> UUID:
        request = CertificateIssuanceRequest(
            user_id=ctx.identity.user_id,
            holder_name=order.holder_name,
            holder_address=order.holder_address,
            issue_code=order.issue_code,
            share_class=order.share_class,
            shares=order.shares,
            dividend_delivery=sealed_dividend(
                ctx.trust, ctx.identity.user_id, order.dividend_delivery.method, order.dividend_delivery.account
            ),  # R-001-06: only settlement reads the account
        )
        sealed = ctx.emit(request, to=order.issuer)
        request_id = sealed.envelope.message_id
        await repo.record_request(
            ctx.connection, request_id, ctx.identity.user_id, "issuance", order.issue_code, order.shares
        )
        return request_id

    return action


async def _on_certificates_issued(items: Sequence[tuple[CertificateIssued, Context]]) -> None:
    """Verify each delivered certificate, then keep it in the wallet (R-001-18): a set's requests
    marked fulfilled in one statement and its certificates kept in one (a buyer is delivered one
    certificate a trade, docs/performance.md, stop 28). A certificate that answers no pending
    request refuses the set; run again one at a time, it is refused alone."""
    delivered: list[tuple[UUID, ElectronicStockCertificate, SignedCertificate]] = []
    for message, ctx in items:
        assert ctx.sender is not None
        certificate = verify_certificate(message.certificate, ctx.trust)
        domain.check_delivered(
            certificate, holder=ctx.identity.user_id, delivered_by=ctx.sender.user_id, today=ctx.now.date()
        )
        delivered.append((message.request_id, certificate, message.certificate))
    connection = items[0][1].connection
    fulfilled = await repo.fulfil_requests(connection, [(request_id, c) for request_id, c, _ in delivered])
    for (request_id, _, _), done in zip(delivered, fulfilled, strict=True):
        if not done:
            raise SecurityRejected(Reason.UNSOLICITED, f"no pending request {request_id} for this certificate")
    await repo.keep_all(connection, [(c, signed) for _, c, signed in delivered])
    for (_, certificate, _), (_, ctx) in zip(delivered, items, strict=True):
        with ctx.bound():
            log.info("certificate_kept", cert_id=str(certificate.cert_id), shares=certificate.shares)


# Keyed by the request it answers: a repeat is the next set's, and finds it answered. Two
# requests answered with one CertID collide in the wallet, which fails the set: run again one
# at a time, the second fails alone, as it did before sets (retried, then dead-lettered).
on_certificate_issued: SetBased[CertificateIssued] = SetBased(
    _on_certificates_issued, keys=lambda message: (message.request_id,)
)


async def on_issuance_refused(message: CertificateIssuanceRefused, ctx: Context) -> None:
    if not await repo.refuse_request(
        ctx.connection, message.request_id, ctx.identity.user_id, message.reason.value, message.detail
    ):
        raise SecurityRejected(Reason.UNSOLICITED, f"no pending request {message.request_id}")
    log.info("issuance_refused", reason=message.reason.value, detail=message.detail)


async def verified_wallet(ctx: Context) -> list[ElectronicStockCertificate | CertificateInvalid]:
    """Every held certificate, verified again from its stored bytes."""
    results: list[ElectronicStockCertificate | CertificateInvalid] = []
    for signed in await repo.held(ctx.connection, ctx.identity.user_id):
        try:
            results.append(verify_certificate(signed, ctx.trust))
        except CertificateInvalid as exc:
            results.append(exc)
    return results


AGENT = AgentDefinition(
    id="investor",
    role=Role.INVESTOR,
    handlers={
        CertificateIssued: on_certificate_issued,
        CertificateIssuanceRefused: on_issuance_refused,
        **trading.HANDLERS,
        **lifecycle.HANDLERS,
        **brokered.HANDLERS,
        **credit_notices.HANDLERS,
        **instructions.HANDLERS,
        **standing.HANDLERS,
        **reported.HANDLERS,
    },
)
