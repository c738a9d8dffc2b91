"""The investor's decisions, free of I/O: is a delivered certificate one this wallet may keep?
And what it fills in for its dividends."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from broker.stock_certificates import CertificateInvalid, expired
from schemas.certificates import ElectronicStockCertificate
from schemas.issuance import DividendMethod


@dataclass(frozen=True, slots=True)
class Dividend:
    """How an investor wants its dividends (seed 001 Fig. 5 field 5), as it fills it in: the
    account in clear here, sealed to the settlement agent whenever a message carries it (R-001-44)."""

    method: DividendMethod
    account: str


def check_delivered(certificate: ElectronicStockCertificate, *, holder: str, delivered_by: str, today: date) -> None:
    """A verified certificate must name this wallet's holder, come from its issuer, and be in date."""
    if certificate.holder_user_id != holder:
        raise CertificateInvalid(
            f"certificate {certificate.cert_id} is held by {certificate.holder_user_id}, not {holder}"
        )
    if certificate.issuing_agent_id != delivered_by:
        raise CertificateInvalid(f"certificate of {certificate.issuing_agent_id} delivered by {delivered_by}")
    if expired(certificate, today):
        raise CertificateInvalid(f"certificate {certificate.cert_id} expired {certificate.expires_on}")
