"""Trades reported off the order book, the investor's side (docs/dvp.md, "Reported trades").

A hosted participant signs a report's terms — the seller its certificate for a sale
(``sign_sale``), the buyer the seller's countersignature for a purchase (``sign_purchase``) —
and the agent keeps what it signed. When the exchange says the trade settled
(``trade.report_settled``), the buyer's agent asks the issuer for the new certificate (39) and
the seller's gives up the old one, as both do on a matched trade's completion notice (37).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from uuid import UUID

from agents.investor import order_repo, repo, report_repo
from agents.investor.order_answers import ask_certificate
from broker import group_commit, logs, trade_reports
from broker.consumer import Handler
from broker.context import Context
from broker.errors import Reason, SecurityRejected
from broker.sealed_box import seal_account
from broker.stock_certificates import CertificateInvalid, content_of, verify_certificate, verify_endorsement
from broker.trade_reports import ReportTerms
from schemas.catalogue import Message
from schemas.certificates import EndorsedCertificate, Endorsement
from schemas.issuance import DividendMethod
from schemas.trading import ReportSettled, Side

log = logs.get("kabuto.investor")


class ReportError(ValueError):
    """A report the participant will not sign; nothing is kept."""


@dataclass(frozen=True, slots=True)
class Sale:
    """The seller's part of a report: its certificate countersigned for the terms, its account sealed."""

    certificate: EndorsedCertificate
    account: str


@dataclass(frozen=True, slots=True)
class Purchase:
    """The buyer's part of a report: its countersignature of the sale, its account sealed."""

    consent: Endorsement
    account: str


def sign_sale(terms: ReportTerms, cert_id: UUID, settlement_account: str) -> Callable[[Context], Awaitable[Sale]]:
    """The seller countersigns a certificate of its wallet for a sale on ``terms``."""

    async def action(ctx: Context) -> Sale:
        user = ctx.identity.user_id
        if terms.seller_user_id != user:
            raise ReportError(f"the terms name {terms.seller_user_id} as the seller, not {user}")
        held = await order_repo.committable_all(ctx.connection, user, [cert_id])
        if cert_id not in held:  # the sell orders' own check (B87): a certificate backs one sale
            raise ReportError(f"CertID {cert_id} is not in {user}'s wallet, or backs a sell order")
        certificate = content_of(held[cert_id])
        if (certificate.issue_code, certificate.share_class) != (terms.issue_code, terms.share_class):
            raise ReportError(f"CertID {cert_id} is of {certificate.issue_code} {certificate.share_class.value}")
        if terms.quantity > certificate.shares:
            raise ReportError(f"selling {terms.quantity} against a certificate of {certificate.shares} shares")
        _same_terms(terms, await report_repo.signed(ctx.connection, terms, Side.SELL, cert_id, settlement_account))
        log.info("report_signed", side="sell", report_id=terms.report_id, cert_id=str(cert_id))
        sold = trade_reports.sold(ctx.identity, held[cert_id], terms)
        return Sale(sold, seal_account(ctx.trust, user, settlement_account))

    return action


def sign_purchase(
    terms: ReportTerms,
    sold: EndorsedCertificate,
    settlement_account: str,
    holder: tuple[str, str],
    dividend: tuple[DividendMethod, str] | None = None,
) -> Callable[[Context], Awaitable[Purchase]]:
    """The buyer countersigns the seller's sale on ``terms``, once it has checked it is the
    seller's, for these terms, of a certificate its issuer signed; ``holder`` is the name and
    address the new certificate will carry, ``dividend`` where its dividends go (default: the
    settlement account)."""

    async def action(ctx: Context) -> Purchase:
        user = ctx.identity.user_id
        if terms.buyer_user_id != user:
            raise ReportError(f"the terms name {terms.buyer_user_id} as the buyer, not {user}")
        if not all(holder):
            raise ReportError("the new certificate needs its holder's name and address (Fig. 12)")
        try:
            certificate = verify_certificate(sold.certificate, ctx.trust)
            seller, context = terms.seller_user_id, terms.context(terms.seller_user_id)
            verify_endorsement(sold, 0, ctx.trust, endorser=seller, purpose="sell_order", context=context, now=ctx.now)
        except CertificateInvalid as exc:
            raise ReportError(f"the sale does not hold: {exc.detail}") from exc
        if len(sold.endorsements) != 1:
            raise ReportError("the sale carries other countersignatures than the seller's")
        if certificate.holder_user_id != terms.seller_user_id:
            raise ReportError(f"the certificate sold is {certificate.holder_user_id}'s, not the seller's")
        if (certificate.issue_code, certificate.share_class) != (terms.issue_code, terms.share_class):
            raise ReportError(f"the certificate sold is of {certificate.issue_code} {certificate.share_class.value}")
        if certificate.shares < terms.quantity:
            raise ReportError(f"the certificate sold holds {certificate.shares} shares, not {terms.quantity}")
        method, account = dividend or (DividendMethod.SETTLEMENT_ACCOUNT, settlement_account)
        details = (holder[0], holder[1], method.value, account)
        kept = await report_repo.signed(
            ctx.connection, terms, Side.BUY, certificate.cert_id, settlement_account, details
        )
        _same_terms(terms, kept)
        log.info("report_signed", side="buy", report_id=terms.report_id, seller=terms.seller_user_id)
        consent = trade_reports.bought(ctx.identity, sold, terms)
        return Purchase(consent, seal_account(ctx.trust, user, settlement_account))

    return action


def _same_terms(terms: ReportTerms, kept: str) -> None:
    """Signing a report again signs the same terms (a retried command), never others under its id."""
    if kept != terms.digest():
        raise ReportError(f"report {terms.report_id} of {terms.seller_user_id} was signed with other terms")


async def on_report_settled(message: ReportSettled, ctx: Context) -> None:
    """The buyer asks for its certificate by NTN (39); the seller's certificate is surrendered.
    Acted on once, and only for a report the participant signed on the terms the notice names
    (found by review: a notice of other shares was acted on, and the real one then ignored)."""
    user = ctx.identity.user_id
    party = message.buyer_user_id if message.side is Side.BUY else message.seller_user_id
    if party != user:
        raise SecurityRejected(Reason.UNSOLICITED, f"a {message.side.value} notice of {party}'s trade sent to {user}")
    key = (user, message.seller_user_id, message.report_id, message.side)
    report = await report_repo.signed_report(ctx.connection, *key)
    if report is None:
        raise SecurityRejected(
            Reason.UNSOLICITED, f"{user} signed no {message.side.value} of report {message.report_id}"
        )
    said = (message.transferred_cert_id, message.issue_code, message.quantity, message.price)
    if said != (report.cert_id, report.issue_code, report.quantity, report.price):
        raise SecurityRejected(Reason.UNSOLICITED, f"report {message.report_id} was signed on other terms")
    if report.status == "settled":
        log.info("report_settled_before", report_id=message.report_id)  # the notice again: done once
        return
    await report_repo.settled(ctx.connection, *key)
    if message.side is Side.SELL:
        await order_repo.surrender_all(ctx.connection, [report.cert_id])
    else:
        request = ask_certificate(ctx, report, message.name_transfer_number, report.issue_code, report.quantity)
        await group_commit.ride_or_write(ctx.connection, repo.requests_recorded([request]))
    log.info("report_settled", side=message.side.value, report_id=message.report_id, ntn=message.name_transfer_number)


HANDLERS: dict[type[Message], Handler] = {ReportSettled: on_report_settled}
