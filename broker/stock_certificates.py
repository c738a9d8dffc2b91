"""Signing and verifying electronic stock certificates (seed 001 §5.2, R-001-08, R-001-18).

The issuing agent signs the exact JSON bytes of a certificate with the issuing company's
key (seed 001 ¶0021: the issuing agent's signature is the company's). Whoever holds or
receives a certificate verifies those bytes before parsing them: the signature, that the
signing certificate was issued by the Kabuto CA to an issuer, and that this issuer is the
one the certificate names. Altering any byte fails the signature check.
"""

from __future__ import annotations

import hashlib
from datetime import date

import pydantic

from broker.errors import Reason, SecurityRejected
from broker.pki import Identity
from broker.trust import TrustStore
from schemas.certificates import ElectronicStockCertificate, IssuerSignature, SignedCertificate
from schemas.identity import Role


class CertificateInvalid(SecurityRejected):
    """A stock certificate that is forged, altered, or signed by the wrong party."""

    def __init__(self, detail: str) -> None:
        super().__init__(Reason.STOCK_CERTIFICATE_INVALID, detail)


def sign_certificate(issuer: Identity, certificate: ElectronicStockCertificate) -> SignedCertificate:
    if certificate.issuing_agent_id != issuer.user_id:
        raise ValueError(f"{issuer.user_id} cannot sign a certificate of {certificate.issuing_agent_id}")
    content = certificate.model_dump_json().encode()
    return SignedCertificate(
        content=content,
        issuer_signature=IssuerSignature(certificate=issuer.certificate_der, signature=issuer.sign(content)),
    )


def verify_certificate(signed: SignedCertificate, trust: TrustStore) -> ElectronicStockCertificate:
    """The certificate inside ``signed`` if its issuer's signature holds; else ``CertificateInvalid``.

    The issuer's identity certificate must chain to the Kabuto CA and have been valid on the
    day the stock certificate was issued, so certificates outlive the issuer's key rotation.
    Whether the stock certificate itself has expired is the holder's question: see ``expired``.
    """
    signature = signed.issuer_signature
    try:
        signer = trust.chained(hashlib.sha256(signature.certificate).hexdigest(), signature.certificate)
        signer.verify(signature.signature, signed.content)
    except SecurityRejected as exc:
        raise CertificateInvalid(f"issuer signature: {exc.detail}") from exc
    if signer.participant.role is not Role.ISSUER:
        raise CertificateInvalid(f"{signer.participant.user_id} is not an issuing agent")
    try:
        certificate = ElectronicStockCertificate.model_validate_json(signed.content)
    except pydantic.ValidationError as exc:
        raise CertificateInvalid(f"content is not a stock certificate: {exc.error_count()} errors") from exc
    if certificate.issuing_agent_id != signer.participant.user_id:
        raise CertificateInvalid(
            f"certificate names issuer {certificate.issuing_agent_id}, signed by {signer.participant.user_id}"
        )
    issuer_cert = signer.certificate
    if (
        not issuer_cert.not_valid_before_utc.date()
        <= certificate.issued_on
        <= issuer_cert.not_valid_after_utc.date()
    ):
        raise CertificateInvalid(
            f"issued {certificate.issued_on}, outside the validity of the issuer's certificate"
        )
    return certificate


def expired(certificate: ElectronicStockCertificate, today: date) -> bool:
    """Seed 001 Fig. 6 field 8: past its expiry date the certificate no longer serves."""
    return today > certificate.expires_on
