"""The investor's decisions, free of I/O: is a delivered certificate one this wallet may keep?"""

from __future__ import annotations

from broker.stock_certificates import CertificateInvalid
from schemas.certificates import ElectronicStockCertificate


def check_delivered(
    certificate: ElectronicStockCertificate, *, holder: str, delivered_by: str
) -> None:
    """A verified certificate must name this wallet's holder and come from its issuer."""
    if certificate.holder_user_id != holder:
        raise CertificateInvalid(
            f"certificate {certificate.cert_id} is held by {certificate.holder_user_id}, not {holder}"
        )
    if certificate.issuing_agent_id != delivered_by:
        raise CertificateInvalid(
            f"certificate of {certificate.issuing_agent_id} delivered by {delivered_by}"
        )
