"""Kabuto's certificate authority and participant identities (seed 001 §2.1, §3.1, Phase 0).

The CA is X.509 with Ed25519 keys. An identity certificate names its subject by user id and
carries Kabuto's participant extension (user id, role and, for investors, the certificate
policy: account usage limit and short-selling prohibition). Private keys are written as
files readable only by their owner (mode 0600 in a 0700 directory) and are never logged.

Enrolment is by certificate signing request (R-001-02): the participant makes its own key
pair in its own directory and sends a CSR; the CA examines the request and signs a
certificate for the public key. No participant private key is made or read by the CA.

Layout under the key directory::

    ca/ca.key  ca/ca.crt  ca/register.jsonl  ca/crl.pem   (the CA's certificate DB 29)
    participants/<user id>/identity.key  identity.crt  request.csr   (one directory each)

Participants enrolled before CSR enrolment keep ``participants/<user id>.key|.crt``; they
are read from there until renewed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.x509.oid import NameOID, ObjectIdentifier

from broker.settings import AGENT_IDS
from schemas.identity import CARD_ISSUER_ID, CertificatePolicy, Participant, Role

# A UUID-derived OID (ITU-T X.667, arc 2.25) names the participant extension without a
# registered enterprise number.
PARTICIPANT_EXTENSION_OID = ObjectIdentifier("2.25.37399489929064402520551318797375356842")
# The participant's X25519 key for messages sealed to it (R-001-06: Ed25519 cannot encrypt), raw
# 32 bytes, certified by the CA beside the signing key. Only roles that receive secrets have one.
ENCRYPTION_KEY_OID = ObjectIdentifier("2.25.205878429262413337413930006219447361977")
ENCRYPTING_ROLES = frozenset({Role.SETTLEMENT, Role.BROKERAGE})
DEFAULT_VALIDITY = timedelta(days=365)
CA_VALIDITY = timedelta(days=3650)


class PkiError(Exception):
    """A CA or identity file is missing, malformed or inconsistent."""


def fingerprint(certificate: x509.Certificate) -> str:
    """SHA-256 of the DER encoding, lower-case hex: how a message names its signer."""
    der = certificate.public_bytes(serialization.Encoding.DER)
    return hashlib.sha256(der).hexdigest()


def _utf8_der(text: str) -> bytes:
    """DER UTF8String, so the extension value is well-formed ASN.1 for any X.509 parser."""
    data = text.encode()
    n = len(data)
    if n < 0x80:
        length = bytes([n])
    else:
        size = (n.bit_length() + 7) // 8
        length = bytes([0x80 | size]) + n.to_bytes(size, "big")
    return b"\x0c" + length + data


def _utf8_from_der(value: bytes) -> str:
    if not value or value[0] != 0x0C:
        raise PkiError("participant extension is not a UTF8String")
    first = value[1]
    if first < 0x80:
        start, length = 2, first
    else:
        size = first & 0x7F
        start, length = 2 + size, int.from_bytes(value[2 : 2 + size], "big")
    if start + length != len(value):
        raise PkiError("participant extension has a bad length")
    return value[start:].decode()


def participant_of(certificate: x509.Certificate) -> Participant:
    """The participant named by an identity certificate's Kabuto extension."""
    try:
        ext = certificate.extensions.get_extension_for_oid(PARTICIPANT_EXTENSION_OID)
    except x509.ExtensionNotFound as exc:
        raise PkiError("certificate has no Kabuto participant extension") from exc
    if not isinstance(ext.value, x509.UnrecognizedExtension):
        raise PkiError("participant extension has an unexpected type")
    return Participant.model_validate_json(_utf8_from_der(ext.value.value))


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path.parent, 0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(path, 0o600)


def _write_public(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.write_bytes(data)


def write_private_key(path: Path, key: Ed25519PrivateKey) -> None:
    """A private key file only its owner reads (0600 in a 0700 directory)."""
    _write_private(path, _private_pem(key))


def write_certificate(path: Path, certificate: x509.Certificate) -> None:
    _write_public(path, certificate.public_bytes(serialization.Encoding.PEM))


def _private_pem(key: Ed25519PrivateKey | X25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _load_private(path: Path) -> Ed25519PrivateKey:
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise PkiError(f"{path} is readable by others (mode {mode:o}); chmod 600 it")
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise PkiError(f"{path} is not an Ed25519 private key")
    return key


def load_certificate(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


@dataclass(frozen=True, slots=True)
class Identity:
    """A participant's private key and identity certificate: what it signs with."""

    participant: Participant
    private_key: Ed25519PrivateKey
    certificate: x509.Certificate
    # What opens messages sealed to this participant (broker.sealed_box), if its role has one.
    decryption_key: X25519PrivateKey | None = None
    # How a message names this signer and the certificate it attaches: computed once, not per
    # message signed (issue 8: the DER encoding and its hash were 2 % of an agent's samples; at
    # stop 27 the DER encoding alone, still made per message, was 2–3 %).
    fingerprint: str = field(init=False, repr=False, compare=False)
    certificate_der: bytes = field(init=False, repr=False, compare=False)
    certificate_b64: str = field(init=False, repr=False, compare=False)  # as a message header carries it

    def __post_init__(self) -> None:
        object.__setattr__(self, "fingerprint", fingerprint(self.certificate))
        object.__setattr__(self, "certificate_der", self.certificate.public_bytes(serialization.Encoding.DER))
        object.__setattr__(self, "certificate_b64", base64.b64encode(self.certificate_der).decode())

    @property
    def user_id(self) -> str:
        return self.participant.user_id

    def sign(self, data: bytes) -> bytes:
        return self.private_key.sign(data)

    def __repr__(self) -> str:  # never show the key
        return f"Identity({self.user_id!r}, role={self.participant.role.value})"


@dataclass(frozen=True, slots=True)
class CertificateAuthority:
    """The Kabuto CA: signs identity certificates and records them in its register."""

    private_key: Ed25519PrivateKey
    certificate: x509.Certificate
    register_path: Path | None = None

    def issue(
        self,
        participant: Participant,
        public_key: Ed25519PublicKey,
        *,
        not_before: datetime | None = None,
        not_after: datetime | None = None,
        encryption_key: bytes | None = None,
    ) -> x509.Certificate:
        """Issue an identity certificate (seed 001 R-001-02/03) and register it."""
        now = datetime.now(UTC)
        not_before = not_before or now - timedelta(minutes=5)
        not_after = not_after or now + DEFAULT_VALIDITY
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Kabuto"),
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, participant.role.value),
                x509.NameAttribute(NameOID.COMMON_NAME, participant.user_id),
                x509.NameAttribute(NameOID.USER_ID, participant.user_id),
            ]
        )
        extension = x509.UnrecognizedExtension(PARTICIPANT_EXTENSION_OID, _utf8_der(participant.model_dump_json()))
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.certificate.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_signing_key_usage(ca=False), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.private_key.public_key()),
                critical=False,
            )
            .add_extension(extension, critical=False)
        )
        if encryption_key is not None:
            builder = builder.add_extension(
                x509.UnrecognizedExtension(ENCRYPTION_KEY_OID, encryption_key), critical=False
            )
        certificate = builder.sign(self.private_key, algorithm=None)
        self._register(certificate, participant)
        return certificate

    def sign_request(
        self, request: x509.CertificateSigningRequest, participant: Participant, **validity: datetime
    ) -> x509.Certificate:
        """Issue the certificate a CSR asks for, to the participant the CA examined (R-001-02).

        The request proves possession of its key (its self-signature) and names the participant;
        what the certificate says about the participant (role, policy) is the CA's decision,
        never the request's.
        """
        key = request.public_key()
        if not isinstance(key, Ed25519PublicKey):
            raise PkiError("the request's key is not Ed25519")
        if not request.is_signature_valid:
            raise PkiError("the request is not signed by the key it carries")
        named = {a.value for a in request.subject.get_attributes_for_oid(NameOID.COMMON_NAME)}
        if named != {participant.user_id}:
            raise PkiError(f"the request names {sorted(map(str, named))}, not {participant.user_id}")
        return self.issue(participant, key, encryption_key=_requested_encryption_key(request), **validity)

    def _register(self, certificate: x509.Certificate, participant: Participant) -> None:
        if self.register_path is None:
            return
        record = {
            "serial": format(certificate.serial_number, "x"),
            "fingerprint": fingerprint(certificate),
            "user_id": participant.user_id,
            "role": participant.role.value,
            "policy": participant.policy.model_dump(mode="json") if participant.policy else None,
            "not_before": certificate.not_valid_before_utc.isoformat(),
            "not_after": certificate.not_valid_after_utc.isoformat(),
        }
        with self.register_path.open("a") as fh:
            fh.write(json.dumps(record, sort_keys=True) + "\n")


def new_request(
    user_id: str, encryption_key: X25519PublicKey | None = None
) -> tuple[Ed25519PrivateKey, x509.CertificateSigningRequest]:
    """The participant's side of enrolment: a fresh key pair and a CSR signed with it, asking
    also for its X25519 encryption key to be certified when it has one."""
    key = Ed25519PrivateKey.generate()
    subject = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, user_id), x509.NameAttribute(NameOID.USER_ID, user_id)]
    )
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject)
    if encryption_key is not None:
        raw = encryption_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        builder = builder.add_extension(x509.UnrecognizedExtension(ENCRYPTION_KEY_OID, raw), critical=False)
    return key, builder.sign(key, algorithm=None)


def _requested_encryption_key(request: x509.CertificateSigningRequest) -> bytes | None:
    try:
        value = request.extensions.get_extension_for_oid(ENCRYPTION_KEY_OID).value
    except x509.ExtensionNotFound:
        return None
    if not isinstance(value, x509.UnrecognizedExtension) or len(value.value) != 32:
        raise PkiError("the requested encryption key is not a raw X25519 key")
    return value.value


def encryption_key_of(certificate: x509.Certificate) -> X25519PublicKey | None:
    """The X25519 key the CA certified for messages sealed to this participant, if any."""
    try:
        value = certificate.extensions.get_extension_for_oid(ENCRYPTION_KEY_OID).value
    except x509.ExtensionNotFound:
        return None
    if not isinstance(value, x509.UnrecognizedExtension):
        raise PkiError("encryption key extension has an unexpected type")
    return X25519PublicKey.from_public_bytes(value.value)


def _signing_key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=not ca,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def create_ca(name: str = "Kabuto Root CA", *, register_path: Path | None = None) -> CertificateAuthority:
    """A new self-signed CA, in memory."""
    key = Ed25519PrivateKey.generate()
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Kabuto"),
            x509.NameAttribute(NameOID.COMMON_NAME, name),
        ]
    )
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_signing_key_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, algorithm=None)
    )
    return CertificateAuthority(key, certificate, register_path)


@dataclass(frozen=True, slots=True)
class KeyStore:
    """The files of a CA and its participants under one directory."""

    root: Path

    @property
    def ca_key_path(self) -> Path:
        return self.root / "ca" / "ca.key"

    @property
    def ca_certificate_path(self) -> Path:
        return self.root / "ca" / "ca.crt"

    @property
    def register_path(self) -> Path:
        return self.root / "ca" / "register.jsonl"

    def participant_dir(self, user_id: str) -> Path:
        """The participant's own key directory; the CA never writes a private key there."""
        return self.root / "participants" / user_id

    def key_path(self, user_id: str) -> Path:
        legacy = self.root / "participants" / f"{user_id}.key"
        return legacy if legacy.exists() else self.participant_dir(user_id) / "identity.key"

    def certificate_path(self, user_id: str) -> Path:
        legacy = self.root / "participants" / f"{user_id}.crt"
        return legacy if legacy.exists() else self.participant_dir(user_id) / "identity.crt"

    def request_path(self, user_id: str) -> Path:
        return self.participant_dir(user_id) / "request.csr"

    def has_ca(self) -> bool:
        return self.ca_key_path.exists() and self.ca_certificate_path.exists()

    def init_ca(self, name: str = "Kabuto Root CA") -> tuple[CertificateAuthority, bool]:
        """Create the CA unless it exists; returns it and whether it was created now."""
        if self.has_ca():
            return self.load_ca(), False
        ca = create_ca(name, register_path=self.register_path)
        _write_private(self.ca_key_path, _private_pem(ca.private_key))
        _write_public(self.ca_certificate_path, ca.certificate.public_bytes(serialization.Encoding.PEM))
        return ca, True

    def load_ca(self) -> CertificateAuthority:
        if not self.has_ca():
            raise PkiError(f"no CA under {self.root}; run `kabuto ca init` first")
        key = _load_private(self.ca_key_path)
        certificate = load_certificate(self.ca_certificate_path)
        if key.public_key() != certificate.public_key():
            raise PkiError("CA key and certificate do not belong together")
        return CertificateAuthority(key, certificate, self.register_path)

    def ca_certificate(self) -> x509.Certificate:
        if not self.ca_certificate_path.exists():
            raise PkiError(f"no CA certificate at {self.ca_certificate_path}; run `kabuto ca init`")
        return load_certificate(self.ca_certificate_path)

    def enrol(self, participant: Participant, *, renew: bool = False) -> tuple[Identity, bool]:
        """Give a participant a key and identity certificate unless it has a usable one."""
        if not renew and self.has_identity(participant.user_id):
            existing = self.load_identity(participant.user_id)
            # A role that receives secrets needs its certified encryption key (issue 13): an
            # older certificate without one is replaced, so `ca enrol-all` upgrades it.
            has_keys = participant.role not in ENCRYPTING_ROLES or existing.decryption_key is not None
            if existing.participant == participant and _usable_now(existing.certificate) and has_keys:
                return existing, False
        # The participant's side makes the keys and the request; the CA sees only the request.
        decryption = X25519PrivateKey.generate() if participant.role in ENCRYPTING_ROLES else None
        key, request = new_request(participant.user_id, decryption.public_key() if decryption else None)
        _write_public(self.request_path(participant.user_id), request.public_bytes(serialization.Encoding.PEM))
        certificate = self.load_ca().sign_request(request, participant)
        self._install(participant.user_id, key, certificate)
        if decryption is not None:
            _write_private(self.participant_dir(participant.user_id) / "encryption.key", _private_pem(decryption))
        return Identity(participant, key, certificate, decryption), True

    def _install(self, user_id: str, key: Ed25519PrivateKey, certificate: x509.Certificate) -> None:
        """Write the participant's key and certificate to its own directory (replacing a legacy pair)."""
        for legacy in (self.root / "participants" / f"{user_id}.key", self.root / "participants" / f"{user_id}.crt"):
            legacy.unlink(missing_ok=True)
        directory = self.participant_dir(user_id)
        _write_private(directory / "identity.key", _private_pem(key))
        _write_public(directory / "identity.crt", certificate.public_bytes(serialization.Encoding.PEM))

    def has_identity(self, user_id: str) -> bool:
        return self.key_path(user_id).exists() and self.certificate_path(user_id).exists()

    def load_identity(self, user_id: str) -> Identity:
        if not self.has_identity(user_id):
            raise PkiError(f"{user_id} is not enrolled; run `kabuto ca enrol {user_id} --role …`")
        key = _load_private(self.key_path(user_id))
        certificate = load_certificate(self.certificate_path(user_id))
        if key.public_key() != certificate.public_key():
            raise PkiError(f"key and certificate of {user_id} do not belong together")
        participant = participant_of(certificate)
        if participant.user_id != user_id:
            raise PkiError(f"certificate file of {user_id} names {participant.user_id}")
        return Identity(participant, key, certificate, self._decryption_key(user_id, certificate))

    def _decryption_key(self, user_id: str, certificate: x509.Certificate) -> X25519PrivateKey | None:
        path = self.participant_dir(user_id) / "encryption.key"
        if not path.exists():
            return None
        if path.stat().st_mode & 0o077:
            raise PkiError(f"{path} is readable by others; chmod 600 it")
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        certified = encryption_key_of(certificate)
        if not isinstance(key, X25519PrivateKey) or certified is None or key.public_key() != certified:
            raise PkiError(f"{path} is not the X25519 key certified for {user_id}")
        return key

    def certificates(self) -> list[x509.Certificate]:
        """Every participant certificate on file: the directory a trust store can consult."""
        folder = self.root / "participants"
        if not folder.exists():
            return []
        files = [*folder.glob("*.crt"), *folder.glob("*/identity.crt")]
        return [load_certificate(p) for p in sorted(files)]


def _usable_now(certificate: x509.Certificate) -> bool:
    now = datetime.now(UTC)
    return certificate.not_valid_before_utc <= now < certificate.not_valid_after_utc - timedelta(days=1)


def default_participant(user_id: str, role: Role, limit: int | None = None) -> Participant:
    """The participant an enrolment creates; investors get the certificate policy."""
    policy = None
    if role is Role.INVESTOR:
        policy = CertificatePolicy(account_usage_limit=Decimal(limit if limit is not None else 10_000_000))
    elif role is Role.BROKERAGE:  # trades at the exchange for its customers, within its own limit
        policy = CertificatePolicy(account_usage_limit=Decimal(limit if limit is not None else 10_000_000_000))
    return Participant(user_id=user_id, role=role, policy=policy)


def platform_participants() -> list[Participant]:
    """Every identity the agents themselves host: the six institutions (the investor agent hosts
    investors, enrolled one by one) and the card issuer, which the credit agent hosts."""
    agents = [default_participant(agent, Role(agent)) for agent in AGENT_IDS if agent != "investor"]
    return [*agents, default_participant(CARD_ISSUER_ID, Role.CARD_ISSUER)]
