"""The terms of a trade reported off the order book, and each party's countersignature of them
(docs/dvp.md, "Reported trades"; docs/signatures.md §4): shared by the parties' agents, which
sign, the exchange, which checks every term, and the issuer, which takes the seller's as its
consent to the name transfer."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from decimal import Decimal

from broker.pki import Identity
from broker.stock_certificates import endorse
from schemas.certificates import EndorsedCertificate, Endorsement, ShareClass, SignedCertificate

TERMS_V1 = "kabuto-trade-report-v1"
PREFIX = "report:"  # every reported trade's countersignature context begins so; no sell order's does


@dataclass(frozen=True, slots=True)
class ReportTerms:
    """What both parties agree to, and countersign: the seller to sell, the buyer to buy."""

    report_id: str
    issue_code: str
    share_class: ShareClass
    quantity: int
    price: Decimal
    seller_user_id: str
    buyer_user_id: str

    def digest(self) -> str:
        """SHA-256 (hex) of the terms, one per line, the price in its shortest form (docs/signatures.md §4)."""
        price = format(self.price.normalize(), "f")
        lines = [TERMS_V1, self.report_id, self.issue_code, self.share_class.value, str(self.quantity), price]
        return hashlib.sha256("\n".join([*lines, self.seller_user_id, self.buyer_user_id]).encode()).hexdigest()

    def context(self, party: str) -> str:
        """What a party's countersignature is bound to: these terms and no others. The seller's,
        ``report:<seller>:…`` with purpose ``sell_order``, is what the issuer takes as its consent
        to the name transfer, as it takes ``order:<seller>:…`` for a sell order's."""
        return f"{PREFIX}{party}:{self.digest()}"


def sold(seller: Identity, certificate: SignedCertificate, terms: ReportTerms) -> EndorsedCertificate:
    """The seller's certificate countersigned for a sale on ``terms``."""
    return endorse(seller, certificate, "sell_order", terms.context(terms.seller_user_id))


def bought(buyer: Identity, sold_certificate: EndorsedCertificate, terms: ReportTerms) -> Endorsement:
    """The buyer's consent: its countersignature of the seller's, for ``terms``. It travels beside
    the certificate to the exchange, not on it: the issuer sees the seller's and the exchange's."""
    return endorse(buyer, sold_certificate, "trade_report", terms.context(terms.buyer_user_id)).endorsements[-1]
