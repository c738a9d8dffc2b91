"""Trades agreed off the order book and reported to the exchange for settlement (docs/dvp.md,
"Reported trades"): what a report carries, and the checks it must pass. Pure: the caller reads
what the checks need (``ReportBooks``) and passes it in.

A report is the parties' own agreement — a seller, a buyer, the shares and the price — signed by
both: the seller countersigns its certificate for those terms, as a sell order carries one
(S72), and the buyer countersigns that for the same terms, since the cash it will pay has no
order of its to stand on (found by review: a first version took the buyer's account from
anyone, and the seller's consent in a context a sell order could have signed). The exchange takes
no decision on the terms beyond the day's price rules; it checks that the certificate is the
seller's, listed, and free (S81–S86), and then instructs settlement as for one of its own
matches. Such a trade has no order cover: settlement checks the buyer's cash itself, and a trade
the buyer cannot pay waits, pending, until it can (R-001-26).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from agents.exchange.acceptance import Instrument, Refused, check_certificate_terms, check_price, check_seller_holds
from broker.stock_certificates import CertificateInvalid, verify_certificate, verify_endorsement
from broker.trade_reports import ReportTerms
from broker.trust import TrustStore
from schemas.certificates import (
    ElectronicStockCertificate,
    EndorsedCertificate,
    Endorsement,
    EndorsementPurpose,
    IssueCode,
    ShareClass,
)
from schemas.identity import ParticipantId
from schemas.money import AccountId, Price, Quantity
from schemas.sealed import SealedText
from schemas.trading import ClientOrderId, OrderRefusal, ReportSettled


class TradeReport(BaseModel):
    """A trade two parties agreed off the order book, as they hand it to the exchange."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    report_id: ClientOrderId = Field(description="The parties' reference, unique for the seller.")
    issue_code: IssueCode
    share_class: ShareClass = ShareClass.COMMON
    quantity: Quantity
    price: Price
    seller_user_id: ParticipantId
    seller_account: SealedText | AccountId = Field(description="Sealed to settlement by the seller (R-001-06).")
    buyer_user_id: ParticipantId
    buyer_account: SealedText | AccountId = Field(description="Sealed to settlement by the buyer (R-001-06).")
    buyer_name: str = Field(min_length=1, max_length=200)
    buyer_address: str = Field(min_length=1, max_length=400)
    certificate: EndorsedCertificate = Field(
        description="The seller's certificate, countersigned for the terms (``sold``)."
    )
    buyer_consent: Endorsement = Field(description="The buyer's countersignature of it, for the terms (``bought``).")

    @classmethod
    def of(
        cls,
        terms: ReportTerms,
        sale: tuple[EndorsedCertificate, str],
        purchase: tuple[Endorsement, str],
        buyer_holder: tuple[str, str],
    ) -> TradeReport:
        """The report from what each party signed: the seller's countersigned certificate and sealed
        account, the buyer's countersignature and sealed account, the name and address the
        buyer's new certificate will carry."""
        return cls(
            report_id=terms.report_id,
            issue_code=terms.issue_code,
            share_class=terms.share_class,
            quantity=terms.quantity,
            price=terms.price,
            seller_user_id=terms.seller_user_id,
            seller_account=sale[1],
            buyer_user_id=terms.buyer_user_id,
            buyer_account=purchase[1],
            buyer_name=buyer_holder[0],
            buyer_address=buyer_holder[1],
            certificate=sale[0],
            buyer_consent=purchase[0],
        )

    @property
    def terms(self) -> ReportTerms:
        return ReportTerms(
            self.report_id,
            self.issue_code,
            self.share_class,
            self.quantity,
            self.price,
            self.seller_user_id,
            self.buyer_user_id,
        )


@dataclass(frozen=True, slots=True)
class ReportBooks:
    """What the exchange's books say about a report's issue and certificate."""

    instrument: Instrument | None
    duplicate: bool  # the seller reported under this id before
    listed_holder: str | None  # the CertID list's holder of the certificate, if valid
    committed_to: int | None  # the live sell order the CertID backs


@dataclass(frozen=True, slots=True)
class ReportedTrade:
    """A reported trade as the exchange keeps it."""

    matching_number: int
    report_id: str
    issue_code: str
    cert_id: UUID
    shares: int
    price: Decimal
    seller_user_id: str
    buyer_user_id: str
    instruction_id: UUID  # the settlement instruction's message id
    status: str  # transfer_requested, completed or failed
    settlement_status: str | None = None
    settlement_failure: str | None = None
    new_cert_id: UUID | None = None


def check(report: TradeReport, books: ReportBooks, trust: TrustStore, now: datetime) -> ElectronicStockCertificate:
    """Every check a report must pass; returns the seller's verified certificate, or raises ``Refused``."""
    if report.buyer_user_id == report.seller_user_id:
        raise Refused(OrderRefusal.USER_MISMATCH, f"{report.seller_user_id} cannot trade with itself")
    if books.instrument is None:
        raise Refused(OrderRefusal.UNKNOWN_ISSUE, f"{report.issue_code} is not listed")
    if books.duplicate:
        raise Refused(
            OrderRefusal.DUPLICATE_CLIENT_ORDER_ID,
            f"{report.seller_user_id} reported {report.report_id} before",
        )
    check_price(report.price, books.instrument)
    certificate = _verified(report, trust, now)
    check_certificate_terms(report.issue_code, report.share_class, certificate, now)  # S75–S77
    if report.quantity > certificate.shares:
        raise Refused(
            OrderRefusal.SHORT_SELLING_PROHIBITED,
            f"selling {report.quantity} against a certificate of {certificate.shares} shares",
        )
    check_seller_holds(certificate, report.seller_user_id, books.listed_holder, books.committed_to)
    return certificate


def _verified(report: TradeReport, trust: TrustStore, now: datetime) -> ElectronicStockCertificate:
    """S72: the issuer's signature, the seller's countersignature for these terms, and the buyer's of it."""
    try:
        certificate = verify_certificate(report.certificate.certificate, trust)
    except CertificateInvalid as exc:
        raise Refused(OrderRefusal.CERTIFICATE_SIGNATURE_INVALID, exc.detail) from exc
    if len(report.certificate.endorsements) != 1:
        raise Refused(
            OrderRefusal.SELLER_ENDORSEMENT_INVALID,
            f"the certificate carries {len(report.certificate.endorsements)} endorsements, not the seller's alone",
        )
    terms = report.terms
    seller, buyer = report.seller_user_id, report.buyer_user_id
    _countersigned(report.certificate, 0, seller, "sell_order", terms.context(seller), trust, now)
    chain = [*report.certificate.endorsements, report.buyer_consent]
    consented = report.certificate.model_copy(update={"endorsements": chain})
    _countersigned(consented, 1, buyer, "trade_report", terms.context(buyer), trust, now)
    return certificate


def _countersigned(
    endorsed: EndorsedCertificate,
    index: int,
    party: str,
    purpose: EndorsementPurpose,
    context: str,
    trust: TrustStore,
    now: datetime,
) -> None:
    """Endorsement ``index`` is ``party``'s for ``purpose`` in ``context``; else ``Refused`` with
    the seller's or the buyer's reason, by ``purpose``."""
    try:
        verify_endorsement(endorsed, index, trust, endorser=party, purpose=purpose, context=context, now=now)
    except CertificateInvalid as exc:
        reason = (
            OrderRefusal.SELLER_ENDORSEMENT_INVALID if purpose == "sell_order" else OrderRefusal.BUYER_CONSENT_INVALID
        )
        raise Refused(reason, exc.detail) from exc
    signer = endorsed.endorsements[index].certificate
    role = trust.chained(hashlib.sha256(signer).hexdigest(), signer).participant.role
    if role not in ReportSettled.spec.recipients:  # whose agent signs reports and is told they settled
        raise Refused(OrderRefusal.USER_MISMATCH, f"{party} is a {role.value}: a reported trade is between investors")
