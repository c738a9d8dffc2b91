"""The investor's decisions, free of I/O: is a delivered certificate one this wallet may keep?"""

from __future__ import annotations

from datetime import date

from broker.stock_certificates import CertificateInvalid, expired
from schemas.certificates import ElectronicStockCertificate


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
