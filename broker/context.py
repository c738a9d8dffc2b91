"""What a handler gets: the transaction, who is acting and who asked, and a way to emit.

A handler never publishes. ``emit`` seals a message as the acting participant and keeps
it; the runtime writes every kept message to the outbox in the handler's transaction, so
the messages leave if and only if the state change commits.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

import asyncpg

from broker import logs
from broker.envelope import Sealed, seal
from broker.errors import InputRejected, Reason
from broker.pki import Identity
from broker.trust import TrustStore
from schemas.catalogue import Message
from schemas.envelope import Envelope
from schemas.identity import Participant


@dataclass(slots=True)
class Context:
    connection: asyncpg.Connection
    identity: Identity
    trust: TrustStore
    now: datetime
    envelope: Envelope | None = None
    sender: Participant | None = None
    # SHA-256 of the delivery's body, for responses that echo the request's hash (R-001-07).
    digest: str | None = None
    emitted: list[Sealed] = field(default_factory=list)
    # The largest body any agent accepts (KABUTO_MAX_MESSAGE_BYTES): a handler of a delivery emits
    # nothing larger (B98). None for a command: the issuer's periodic full CertID list of an issue
    # of some 9,000 certificates is larger, and must not fail its job (docs/bad-input.md, B98).
    max_message_bytes: int | None = None

    def bound(self) -> AbstractContextManager[None]:
        """Log lines written inside name the message handled (a set-based handler working on
        one message of its set: ``broker.set_based``); nothing for a command."""
        return logs.bound_to(self.envelope) if self.envelope else nullcontext()

    @property
    def message_id(self) -> UUID | None:
        return self.envelope.message_id if self.envelope else None

    @property
    def conversation(self) -> UUID | None:
        """The conversation the message handled belongs to (its correlation id)."""
        return self.envelope.correlation_id if self.envelope else None

    def emit(
        self,
        payload: Message,
        *,
        to: str | None = None,
        conversation: UUID | None = None,
        message_id: UUID | None = None,
    ) -> Sealed:
        """Seal ``payload`` to ``to`` (or to integrators, for an event) in this conversation, or
        in ``conversation``: the answer to a request this handler did not receive (a request
        answered once something later happened). ``message_id``: the envelope's id, where the
        payload names its request by an id of its own (a new one otherwise)."""
        spec = type(payload).spec
        if spec.is_event != (to is None):
            raise ValueError(f"{spec.type}: events have no recipient; messages need one")
        sealed = seal(
            self.identity,
            payload,
            recipient=to,
            now=self.now,
            correlation_id=conversation or self.conversation,
            causation_id=self.message_id,
            message_id=message_id,
        )
        if self.max_message_bytes is not None and len(sealed.body) > self.max_message_bytes:
            # Its recipient would refuse it (or the broker its publication) after this handler's
            # changes had committed: the handler fails instead, and nothing is sent or changed (B98).
            raise InputRejected(
                Reason.DATA_INVALID,
                f"{spec.type} would be {len(sealed.body):,} bytes, more than the {self.max_message_bytes:,} "
                "every agent accepts",
            )
        self.emitted.append(sealed)
        return sealed
