"""The envelope every Kabuto message travels in.

The AMQP body is the UTF-8 JSON of one ``Envelope``; its signature travels in the
``kabuto-signature`` header and covers those exact body bytes, so every field a receiver
relies on (ids, type, version, sender, recipient, time, signer, payload) is signed. The
``kabuto-signer`` header repeats ``signer`` so that a receiver can verify before it parses;
``kabuto-certificate`` attaches the signer's identity certificate (DER, base64).
"""

from __future__ import annotations

from typing import Any, Final
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from schemas.identity import ParticipantId

SIGNATURE_HEADER: Final = "kabuto-signature"
SIGNER_HEADER: Final = "kabuto-signer"
CERTIFICATE_HEADER: Final = "kabuto-certificate"
# The headers a signature travels in (a message's, or a bundle's seal: broker.bundle).
SIGNATURE_HEADERS: Final = (SIGNATURE_HEADER, SIGNER_HEADER, CERTIFICATE_HEADER)


class Envelope(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    message_id: UUID
    type: str = Field(min_length=1, max_length=100)
    version: int = Field(ge=1)
    sender: ParticipantId
    recipient: ParticipantId | None = Field(
        description="The participant the message is for; None for an event to integrators."
    )
    correlation_id: UUID = Field(description="The id of the message that began the conversation.")
    causation_id: UUID | None = Field(description="The id of the message this one answers.")
    created_at: AwareDatetime
    signer: str = Field(pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the signer's DER certificate.")
    payload: dict[str, Any]
