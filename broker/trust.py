"""The trust store: which certificates a receiver accepts as a message signer.

A signer certificate is accepted when it was issued directly by the Kabuto CA, is within
its validity period now, is not a CA certificate, names a participant and is not on the
CA's revocation list (``broker.revocation``, reloaded when the file changes). Certificates
arrive attached to each message; a store may also know enrolled certificates in advance,
so that a message naming a signer without attaching its certificate can still be checked.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from broker.errors import Reason, SecurityRejected
from broker.pki import PkiError, fingerprint, participant_of

if TYPE_CHECKING:
    from broker.revocation import RevocationList
from schemas.identity import Participant


@dataclass(frozen=True, slots=True)
class Validity:
    """A certificate's validity period, read out of it once."""

    not_before: datetime
    not_after: datetime

    @classmethod
    def of(cls, certificate: x509.Certificate) -> Validity:
        return cls(certificate.not_valid_before_utc, certificate.not_valid_after_utc)

    def check(self, whose: str, now: datetime) -> None:
        if now < self.not_before:
            raise SecurityRejected(
                Reason.CERTIFICATE_NOT_YET_VALID, f"certificate of {whose} is valid from {self.not_before}"
            )
        if now >= self.not_after:
            raise SecurityRejected(Reason.CERTIFICATE_EXPIRED, f"certificate of {whose} expired {self.not_after}")


@dataclass(frozen=True, slots=True)
class Signer:
    certificate: x509.Certificate
    participant: Participant
    fingerprint: str
    # Read out of the certificate once: a Signer is kept per fingerprint (TrustStore.chained),
    # and these were read again for every delivery (docs/performance.md, stop 28).
    public_key: CertificatePublicKeyTypes = field(init=False, repr=False, compare=False)
    der: bytes = field(init=False, repr=False, compare=False)
    serial: int = field(init=False, repr=False, compare=False)
    validity: Validity = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "public_key", self.certificate.public_key())
        object.__setattr__(self, "der", self.certificate.public_bytes(serialization.Encoding.DER))
        object.__setattr__(self, "serial", self.certificate.serial_number)
        object.__setattr__(self, "validity", Validity.of(self.certificate))

    def verify(self, signature: bytes, data: bytes) -> None:
        """Raise ``SecurityRejected(signature_invalid)`` unless the signature covers ``data``."""
        key = self.public_key
        if not isinstance(key, Ed25519PublicKey):
            raise SecurityRejected(Reason.CERTIFICATE_INVALID, "signer key is not Ed25519")
        try:
            key.verify(signature, data)
        except InvalidSignature as exc:
            raise SecurityRejected(
                Reason.SIGNATURE_INVALID, f"signature of {self.participant.user_id} does not verify"
            ) from exc


class TrustStore:
    def __init__(
        self,
        ca_certificate: x509.Certificate,
        known: Iterable[x509.Certificate] = (),
        revocations: RevocationList | None = None,
    ):
        self._ca = ca_certificate
        self._ca_validity = Validity.of(ca_certificate)
        self._revocations = revocations
        self._chained: dict[str, Signer] = {}
        self._known = {fingerprint(c): c for c in known}

    @property
    def ca_certificate(self) -> x509.Certificate:
        return self._ca

    def known_certificate(self, user_id: str) -> x509.Certificate | None:
        """The newest certificate on file for ``user_id`` (to seal a secret to it)."""
        found = [c for c in self._known.values() if _names(c, user_id)]
        return max(found, key=lambda c: c.not_valid_before_utc, default=None)

    def signer(self, claimed_fingerprint: str, attached_der: bytes | None, now: datetime) -> Signer:
        """The signer named by a message, verified and valid ``now``; else ``SecurityRejected``."""
        signer = self.chained(claimed_fingerprint, attached_der)
        self._ca_validity.check("the Kabuto CA", now)
        signer.validity.check(signer.participant.user_id, now)
        self._check_not_revoked(signer)
        return signer

    def look_at_revocations(self) -> None:
        """Read the revocation list as it is now; the checks in the rest of this turn of the event
        loop share this look (``broker.revocation.RevocationList``)."""
        if self._revocations is not None:
            self._revocations.look()

    def _check_not_revoked(self, signer: Signer) -> None:
        revoked = self._revocations.revoked_serial(signer.serial) if self._revocations else None
        if revoked is not None:
            raise SecurityRejected(
                Reason.CERTIFICATE_REVOKED,
                f"certificate {signer.certificate.serial_number:x} of {signer.participant.user_id} "
                f"was revoked {revoked.revoked_at.isoformat()}",
            )

    def chained(self, claimed_fingerprint: str, attached_der: bytes | None) -> Signer:
        """The signer's certificate checked against the CA, whatever the time.

        For a document signed in the past (a stock certificate) the caller decides at which
        moment the signer's certificate had to be valid.
        """
        signer = self._chained.get(claimed_fingerprint)
        if signer is not None and (attached_der is None or attached_der == signer.der):
            return signer  # the very certificate checked before: its bytes compared, not hashed again
        if attached_der is not None and hashlib.sha256(attached_der).hexdigest() != claimed_fingerprint:
            raise SecurityRejected(Reason.CERTIFICATE_INVALID, "attached certificate is not the one the message names")
        if signer is None:
            certificate = self._certificate(claimed_fingerprint, attached_der)
            signer = self._chain(certificate, claimed_fingerprint)
            self._chained[claimed_fingerprint] = signer
        return signer

    def _certificate(self, claimed: str, attached_der: bytes | None) -> x509.Certificate:
        if attached_der is None:
            known = self._known.get(claimed)
            if known is None:
                raise SecurityRejected(Reason.UNKNOWN_SIGNER, f"no certificate attached or on file for {claimed[:16]}…")
            return known
        try:
            certificate = x509.load_der_x509_certificate(attached_der)
        except ValueError as exc:
            raise SecurityRejected(Reason.CERTIFICATE_INVALID, "attached certificate is not DER X.509") from exc
        if fingerprint(certificate) != claimed:
            raise SecurityRejected(Reason.CERTIFICATE_INVALID, "attached certificate is not the one the message names")
        return certificate

    def _chain(self, certificate: x509.Certificate, claimed: str) -> Signer:
        try:
            certificate.verify_directly_issued_by(self._ca)
        except (ValueError, TypeError, InvalidSignature) as exc:
            raise SecurityRejected(
                Reason.CERTIFICATE_UNTRUSTED,
                f"certificate {claimed[:16]}… was not issued by the Kabuto CA",
            ) from exc
        if _is_ca(certificate) or not _may_sign(certificate):
            raise SecurityRejected(Reason.CERTIFICATE_INVALID, "the certificate is not for signing (CA or key usage)")
        try:
            participant = participant_of(certificate)
        except (PkiError, ValueError) as exc:
            raise SecurityRejected(Reason.CERTIFICATE_INVALID, str(exc)) from exc
        return Signer(certificate, participant, claimed)


def _is_ca(certificate: x509.Certificate) -> bool:
    try:
        return bool(certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _may_sign(certificate: x509.Certificate) -> bool:
    try:
        usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return False
    return bool(usage.digital_signature)


def _names(certificate: x509.Certificate, user_id: str) -> bool:
    try:
        return participant_of(certificate).user_id == user_id
    except (PkiError, ValueError):
        return False
