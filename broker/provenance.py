"""Who really sent a stored message, if anyone: the verified id, type and sender of a dead letter.

A dead letter's AMQP ``message_id`` and ``type`` properties are whatever the publisher wrote.
An operator needs the envelope's own id and type, and only when the signature over the body
holds under a certificate of the Kabuto CA; a letter that never verified (forged, altered,
unsigned) is marked as such with the reason. The certificate's validity period is not
checked here: a letter may be examined long after it was sent.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass

import pydantic

from broker.bundle import sealed_bytes, unpack
from broker.errors import Rejected
from broker.trust import TrustStore
from schemas.envelope import CERTIFICATE_HEADER, SIGNATURE_HEADER, SIGNER_HEADER, Envelope


@dataclass(frozen=True, slots=True)
class Provenance:
    message_id: str | None
    type: str | None
    sender: str | None
    problem: str | None  # why it did not verify; None when it did

    @property
    def verified(self) -> bool:
        return self.problem is None


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        return value.decode("ascii", errors="replace")
    return value if isinstance(value, str) else None


def provenance(
    body: bytes, headers: Mapping[str, object], trust: TrustStore, *, sealed_in: bytes | None = None
) -> Provenance:
    """The envelope's id, type and sender if the body's signature holds; else why not.
    ``sealed_in``: the bundle a packed item travelled in (broker.bundle), whose seal (in
    ``headers``) is the item's only signature."""
    signature, claimed = _text(headers.get(SIGNATURE_HEADER)), _text(headers.get(SIGNER_HEADER))
    if signature is None or claimed is None:
        return Provenance(None, None, None, "unsigned: no kabuto-signature or kabuto-signer header")
    try:
        attached = _text(headers.get(CERTIFICATE_HEADER))
        der = base64.b64decode(attached, validate=True) if attached else None
        signer = trust.chained(claimed, der)
        signed = body if sealed_in is None else sealed_bytes(sealed_in, packed=True)
        signer.verify(base64.b64decode(signature, validate=True), signed)
        if sealed_in is not None and all(item.body != body for item in unpack(sealed_in)):
            return Provenance(None, None, None, "malformed: not an item of the bundle sealed")
        envelope = Envelope.model_validate_json(body)
    except Rejected as exc:
        return Provenance(None, None, None, f"{exc.reason.value}: {exc.detail}")
    except (binascii.Error, ValueError, pydantic.ValidationError) as exc:
        return Provenance(None, None, None, f"malformed: {str(exc)[:100]}")
    if envelope.signer != claimed or envelope.sender != signer.participant.user_id:
        return Provenance(None, None, None, f"sender_mismatch: signed by {signer.participant.user_id}")
    return Provenance(str(envelope.message_id), f"{envelope.type} v{envelope.version}", envelope.sender, None)
