"""Sealing and opening envelopes: sign the bytes you send, verify the bytes you receive.

``seal`` turns a payload into the exact body bytes and headers to publish. ``open_delivery``
runs every check a receiver makes before any handler sees a message, in this order:
size (body and headers, before anything is decoded) → signature headers → signer
certificate (chain to the Kabuto CA, validity, revocation) → signature over the body →
JSON → envelope → signer and sender consistency → recipient → freshness → message type
→ sender authorisation → payload schema. Each failure raises a ``Rejected`` with its reason
code; nothing is parsed before the signature is verified.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from uuid import UUID

import pydantic

from broker.errors import InputRejected, Reason, SecurityRejected
from broker.pki import Identity
from broker.signed_here import SIGNED_HERE
from broker.trust import Signer, TrustStore
from schemas import catalogue
from schemas.catalogue import Message, MessageSpec
from schemas.envelope import CERTIFICATE_HEADER, SIGNATURE_HEADER, SIGNER_HEADER, Envelope
from schemas.identity import Participant, Role


@dataclass(slots=True, eq=False)
class Sealed:
    """A message sealed to be sent: its envelope and the exact bytes of its body, which its
    signature covers. The signature is made when its headers are first asked for: a message an
    agent's batch stores in a packed bundle (``broker.outbox``) is never signed alone, the
    bundle's seal standing for it (``broker.bundle``)."""

    envelope: Envelope
    body: bytes
    signed: dict[str, str] | None = None
    identity: Identity | None = field(default=None, repr=False)

    @property
    def digest(self) -> str:
        return body_digest(self.body)

    @property
    def signer(self) -> str:
        """The fingerprint of the key that signs it (the envelope names it)."""
        return self.envelope.signer

    @property
    def key(self) -> Identity:
        """The identity that signs it, or seals the bundle it is packed in."""
        if self.identity is None:
            raise ValueError(f"message {self.envelope.message_id} has no signature and no key to make one")
        return self.identity

    @property
    def headers(self) -> dict[str, str]:
        """Its signature headers, signed now if it was not yet."""
        if self.signed is None:
            self.signed = sign_headers(self.key, self.body)
            # what the relay may seal (broker.signed_here)
            SIGNED_HERE.note(str(self.envelope.message_id), self.body, self.signed)
        return self.signed


@dataclass(frozen=True, slots=True)
class Opened:
    """A delivery that passed every check: who sent it, and the parsed message."""

    envelope: Envelope
    spec: MessageSpec
    message: Message
    sender: Participant
    digest: str


# The largest body an agent accepts (settings: KABUTO_MAX_MESSAGE_BYTES); the broker's
# ``max_message_size`` is set to the same value where we run it (docs/security.md).
MAX_MESSAGE_BYTES = 1_048_576
# Headers carry a signature, a fingerprint and one certificate: a few kilobytes at most.
MAX_HEADER_BYTES = 16_384


@dataclass(frozen=True, slots=True)
class Freshness:
    max_age: timedelta
    max_skew: timedelta


def body_digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def seal(
    identity: Identity,
    payload: Message,
    *,
    recipient: str | None,
    now: datetime,
    correlation_id: UUID | None = None,
    causation_id: UUID | None = None,
    message_id: UUID | None = None,
) -> Sealed:
    """Seal a payload as ``identity``; the result is published byte for byte, signed when its
    headers are first asked for (``Sealed.headers``)."""
    spec = type(payload).spec
    message_id = message_id or uuid.uuid4()
    envelope = Envelope(
        message_id=message_id,
        type=spec.type,
        version=spec.version,
        sender=identity.user_id,
        recipient=recipient,
        correlation_id=correlation_id or message_id,
        causation_id=causation_id,
        created_at=now,
        signer=identity.fingerprint,
        payload=payload.model_dump(mode="json"),
    )
    return Sealed(envelope, envelope.model_dump_json().encode(), identity=identity)


def sign_headers(identity: Identity, body: bytes) -> dict[str, str]:
    return {
        SIGNATURE_HEADER: base64.b64encode(identity.sign(body)).decode(),
        SIGNER_HEADER: identity.fingerprint,
        CERTIFICATE_HEADER: identity.certificate_b64,
    }


def open_delivery(
    body: bytes,
    headers: Mapping[str, object],
    *,
    trust: TrustStore,
    hosted: Mapping[str, Role],
    freshness: Freshness,
    now: datetime,
    max_bytes: int = MAX_MESSAGE_BYTES,
    vouched: str | None = None,
) -> Opened:
    """Verify and parse one delivery, or raise ``Rejected`` with the reason. ``vouched``: the
    fingerprint of a signer whose seal over the bundle that carried the delivery verified
    (broker.bundle); a delivery it signed needs no second check of its signature."""
    check_size(body, headers, max_bytes)
    signer, envelope = _signed_envelope(body, headers, trust, now, vouched)
    recipient_role = _check_recipient(envelope, hosted)
    _check_fresh(envelope, freshness, now)
    spec = _lookup(envelope)
    _check_authorised(spec, signer.participant, recipient_role)
    return Opened(envelope, spec, _parse_payload(spec, envelope, body), signer.participant, body_digest(body))


def still_valid(
    opened: Opened, headers: Mapping[str, object], *, trust: TrustStore, freshness: Freshness, now: datetime
) -> None:
    """Of the checks ``open_delivery`` made, again at ``now`` those that depend on the moment:
    the signer's certificate (and the CA's) valid and not revoked, and the message fresh. For a
    delivery opened ahead of its handling (``broker.group_commit``): every decision is then the
    one its handling's moment gives, as if it had been opened then. Raises ``Rejected``."""
    trust.signer(opened.envelope.signer, _header_bytes(headers, CERTIFICATE_HEADER), now)
    _check_fresh(opened.envelope, freshness, now)


def open_event(
    body: bytes,
    headers: Mapping[str, object],
    *,
    trust: TrustStore,
    freshness: Freshness,
    now: datetime,
    max_bytes: int = MAX_MESSAGE_BYTES,
) -> Opened:
    """What an integrator runs on an event (docs/integrators.md): signature over the body, the
    signer's certificate chained to the CA and valid ``now``, sender = signer, addressed to no one,
    fresh, a known event type, and the signer's role among those the catalogue lets publish it —
    so an event an investor forged is ``sender_not_authorized``. Raises ``Rejected``."""
    check_size(body, headers, max_bytes)
    signer, envelope = _signed_envelope(body, headers, trust, now)
    if envelope.recipient is not None:
        raise SecurityRejected(Reason.MISROUTED, f"{envelope.type} is addressed to {envelope.recipient}")
    _check_fresh(envelope, freshness, now)
    spec = _lookup(envelope)
    if not spec.is_event or signer.participant.role not in spec.senders:
        raise SecurityRejected(
            Reason.SENDER_NOT_AUTHORIZED, f"a {signer.participant.role.value} may not publish {spec.type}"
        )
    return Opened(envelope, spec, _parse_payload(spec, envelope, body), signer.participant, body_digest(body))


def check_size(body: bytes, headers: Mapping[str, object], max_bytes: int = MAX_MESSAGE_BYTES) -> None:
    """Refuse an oversize delivery before a byte of it is hashed, verified or parsed."""
    if len(body) > max_bytes:
        raise SecurityRejected(Reason.MESSAGE_TOO_LARGE, f"body of {len(body)} bytes, limit {max_bytes}")
    header_bytes = sum(len(k) + len(v) for k, v in headers.items() if isinstance(v, str | bytes | bytearray))
    if header_bytes > MAX_HEADER_BYTES:
        raise SecurityRejected(Reason.MESSAGE_TOO_LARGE, f"headers of {header_bytes} bytes, limit {MAX_HEADER_BYTES}")


def _signed_envelope(
    body: bytes, headers: Mapping[str, object], trust: TrustStore, now: datetime, vouched: str | None = None
) -> tuple[Signer, Envelope]:
    """Verify the signature before parsing, then check the envelope names its signer."""
    signer = verified_signer(body, headers, trust, now, vouched)
    envelope = _parse_envelope(body)
    _check_sender(envelope, signer)
    return signer, envelope


def _header_bytes(headers: Mapping[str, object], name: str) -> bytes | None:
    value = headers.get(name)
    if value is None:
        return None
    if isinstance(value, bytes | bytearray):  # an AMQP byte array arrives as a bytearray
        value = bytes(value).decode("ascii", errors="replace")
    try:
        return base64.b64decode(str(value), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SecurityRejected(Reason.UNSIGNED, f"header {name} is not base64") from exc


def verified_signer(
    body: bytes, headers: Mapping[str, object], trust: TrustStore, now: datetime, vouched: str | None = None
) -> Signer:
    """The signer whose signature in ``headers`` covers ``body``, trusted and valid ``now``; raises
    ``SecurityRejected``. Signed by ``vouched`` (a seal over these bytes verified): the signature
    must be there, but is not checked again."""
    signature = _header_bytes(headers, SIGNATURE_HEADER)
    claimed = headers.get(SIGNER_HEADER)
    if signature is None or not isinstance(claimed, str | bytes | bytearray):
        raise SecurityRejected(Reason.UNSIGNED, "no kabuto-signature or kabuto-signer header")
    claimed_fp = claimed if isinstance(claimed, str) else bytes(claimed).decode("ascii", errors="replace")
    signer = trust.signer(claimed_fp, _header_bytes(headers, CERTIFICATE_HEADER), now)
    if signer.fingerprint != vouched:
        signer.verify(signature, body)
    return signer


def _parse_envelope(body: bytes) -> Envelope:
    """Parsed and validated in one pass by pydantic's own JSON parser: half the time of
    ``json.loads`` and a validation of the dictionary, on every message every agent opens
    (docs/performance.md, stop 33). Bytes that are not JSON are told apart by the error's type."""
    try:
        return Envelope.model_validate_json(body)
    except pydantic.ValidationError as exc:
        if any(err["type"] == "json_invalid" for err in exc.errors()):
            raise InputRejected(Reason.MALFORMED_JSON, f"body is not JSON: {exc.errors()[0]['msg']}") from exc
        raise InputRejected(Reason.ENVELOPE_INVALID, _errors(exc)) from exc


def _check_sender(envelope: Envelope, signer: Signer) -> None:
    if envelope.signer != signer.fingerprint:
        raise SecurityRejected(Reason.SENDER_MISMATCH, "envelope names another signer")
    if envelope.sender != signer.participant.user_id:
        raise SecurityRejected(
            Reason.SENDER_MISMATCH,
            f"sender {envelope.sender} signed as {signer.participant.user_id}",
        )


def _check_recipient(envelope: Envelope, hosted: Mapping[str, Role]) -> Role:
    role = hosted.get(envelope.recipient or "")
    if role is None:
        raise SecurityRejected(Reason.MISROUTED, f"recipient {envelope.recipient} is not hosted by this agent")
    return role


def _check_fresh(envelope: Envelope, freshness: Freshness, now: datetime) -> None:
    age = now - envelope.created_at
    if age > freshness.max_age:
        raise SecurityRejected(Reason.STALE_MESSAGE, f"created {age} ago, limit {freshness.max_age}")
    if -age > freshness.max_skew:
        raise SecurityRejected(Reason.STALE_MESSAGE, f"created {-age} in the future, skew limit {freshness.max_skew}")


def _lookup(envelope: Envelope) -> MessageSpec:
    spec = catalogue.lookup(envelope.type, envelope.version)
    if spec is None:
        raise InputRejected(Reason.UNKNOWN_MESSAGE_TYPE, f"no message {envelope.type} v{envelope.version}")
    return spec


def _check_authorised(spec: MessageSpec, sender: Participant, recipient_role: Role) -> None:
    if sender.role not in spec.senders:
        raise SecurityRejected(Reason.SENDER_NOT_AUTHORIZED, f"a {sender.role.value} may not send {spec.type}")
    if recipient_role not in spec.recipients:
        raise SecurityRejected(Reason.SENDER_NOT_AUTHORIZED, f"{spec.type} may not be sent to a {recipient_role.value}")


def _parse_payload(spec: MessageSpec, envelope: Envelope, body: bytes) -> Message:
    # A NUL passes every schema but no PostgreSQL text column can hold it: refused here, with the
    # reason the handler's failed insert gave, so no handler ever sees it (found by the fuzz test).
    if b"\\u0000" in body and _holds_nul(envelope.payload):
        raise InputRejected(Reason.DATA_INVALID, "a text field holds a NUL character, which no book can store")
    try:
        return spec.model.model_validate(envelope.payload)
    except pydantic.ValidationError as exc:
        raise InputRejected(Reason.SCHEMA_VIOLATION, _errors(exc)) from exc


def _holds_nul(value: object) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds_nul(v) for v in value)
    return False


def _errors(exc: pydantic.ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors())[:1000]


def hosted_roles(identities: Collection[Identity]) -> dict[str, Role]:
    return {i.user_id: i.participant.role for i in identities}
