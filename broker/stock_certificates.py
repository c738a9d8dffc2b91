"""Signing and verifying electronic stock certificates (seed 001 §5.2, R-001-08, R-001-18).

The issuing agent signs the exact JSON bytes of a certificate with the issuing company's
key (seed 001 ¶0021: the issuing agent's signature is the company's). Whoever holds or
receives a certificate verifies those bytes before parsing them: the signature, that the
signing certificate was issued by the Kabuto CA to an issuer, and that this issuer is the
one the certificate names. Altering any byte fails the signature check.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import date, datetime

import pydantic

from broker.errors import Reason, SecurityRejected
from broker.pki import Identity
from broker.trust import TrustStore
from schemas.certificates import (
    ElectronicStockCertificate,
    EndorsedCertificate,
    Endorsement,
    EndorsementPurpose,
    IssuerSignature,
    SignedCertificate,
)
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
    if not issuer_cert.not_valid_before_utc.date() <= certificate.issued_on <= issuer_cert.not_valid_after_utc.date():
        raise CertificateInvalid(f"issued {certificate.issued_on}, outside the validity of the issuer's certificate")
    return certificate


def content_of(certificate: SignedCertificate | EndorsedCertificate) -> ElectronicStockCertificate:
    """The certificate inside, read without checking signatures: only for bytes verified on arrival
    (or, as at order acceptance, to look something up before verifying)."""
    signed = certificate.certificate if isinstance(certificate, EndorsedCertificate) else certificate
    return ElectronicStockCertificate.model_validate_json(signed.content)


def expired(certificate: ElectronicStockCertificate, today: date) -> bool:
    """Seed 001 Fig. 6 field 8: past its expiry date the certificate no longer serves."""
    return today > certificate.expires_on


def _endorsed_bytes(signed: SignedCertificate, prior: Sequence[Endorsement], purpose: str, context: str) -> bytes:
    """What an endorsement signs: the certificate, its issuer's signature, earlier endorsements,
    and the purpose and context this one is for."""
    parts = [
        b"kabuto-endorsement-v1",
        purpose.encode(),
        context.encode(),
        hashlib.sha256(signed.content).digest(),
        signed.issuer_signature.signature,
        *(e.signature for e in prior),
    ]
    return b"\x00".join(hashlib.sha256(p).digest() for p in parts)


def endorse(
    endorser: Identity,
    certificate: EndorsedCertificate | SignedCertificate,
    purpose: EndorsementPurpose,
    context: str,
) -> EndorsedCertificate:
    """Countersign a certificate as it is passed on (seed 001 claim 2, §5.2)."""
    if isinstance(certificate, SignedCertificate):
        certificate = EndorsedCertificate(certificate=certificate)
    data = _endorsed_bytes(certificate.certificate, certificate.endorsements, purpose, context)
    endorsement = Endorsement(
        purpose=purpose, context=context, certificate=endorser.certificate_der, signature=endorser.sign(data)
    )
    return certificate.model_copy(update={"endorsements": (*certificate.endorsements, endorsement)})


def verify_endorsement(
    endorsed: EndorsedCertificate,
    index: int,
    trust: TrustStore,
    *,
    endorser: str,
    purpose: EndorsementPurpose,
    context: str | None,
    now: datetime,
) -> str:
    """Check endorsement ``index`` was made by ``endorser`` for ``purpose`` in ``context`` (any
    context when None); return the context it was made in."""
    if index >= len(endorsed.endorsements):
        raise CertificateInvalid(f"no {purpose} endorsement by {endorser}")
    endorsement = endorsed.endorsements[index]
    if endorsement.purpose != purpose or context not in (None, endorsement.context):
        raise CertificateInvalid(
            f"endorsement is for {endorsement.purpose} {endorsement.context}, not {purpose} {context}"
        )
    try:
        signer = trust.signer(hashlib.sha256(endorsement.certificate).hexdigest(), endorsement.certificate, now)
        data = _endorsed_bytes(endorsed.certificate, endorsed.endorsements[:index], purpose, endorsement.context)
        signer.verify(endorsement.signature, data)
    except SecurityRejected as exc:
        raise CertificateInvalid(f"endorsement by {endorser}: {exc.detail}") from exc
    if signer.participant.user_id != endorser:
        raise CertificateInvalid(f"endorsement made by {signer.participant.user_id}, not {endorser}")
    return endorsement.context


def endorsement_bytes(
    certificate: EndorsedCertificate | SignedCertificate, purpose: EndorsementPurpose, context: str
) -> bytes:
    """The exact bytes the next endorsement of ``certificate`` signs (docs/signatures.md §3)."""
    if isinstance(certificate, SignedCertificate):
        certificate = EndorsedCertificate(certificate=certificate)
    return _endorsed_bytes(certificate.certificate, certificate.endorsements, purpose, context)
