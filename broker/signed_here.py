"""What this process signed: the only messages its relay may vouch for with a bundle's seal.

A seal (broker.bundle) stands for the signatures of the items its key signed: a receiver does not
check those again. So the relay must never seal bytes it merely found in the outbox table — a row
changed after it was signed, or written there by anyone with the agent's database login, would
travel under the seal and be accepted, where its receiver refused it before (found by review,
stop 27). ``broker.envelope.seal`` notes each message it signs here: its body's digest, its
signature and its signer; the relay seals a bundle by a key only if every item naming that key is
exactly as noted. A row this process did not sign — one signed before a restart, by a command in
another process, or changed since — leaves its bundle unsealed by that key, and its receiver
checks each of those items on its own signature, as before seals.

Bounded: a message's note is taken when the relay publishes it, and past ``LIMIT`` notes the
oldest go first (a message published without its note only travels unsealed).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

from broker.bounded import Bounded
from schemas.envelope import SIGNATURE_HEADER, SIGNER_HEADER

LIMIT = 16_384


@dataclass(frozen=True, slots=True)
class _Note:
    digest: bytes
    signature: str
    signer: str


class SignedHere:
    """Notes of the messages signed in this process, by message id, oldest first."""

    def __init__(self, limit: int = LIMIT) -> None:
        self._notes: Bounded[str, _Note] = Bounded(limit)

    def note(self, message_id: str, body: bytes, headers: Mapping[str, str]) -> None:
        """``body`` was just signed here, with these signature headers."""
        digest = hashlib.sha256(body).digest()
        self._notes.put(message_id, _Note(digest, headers[SIGNATURE_HEADER], headers[SIGNER_HEADER]))

    def take(self, message_id: str, body: bytes, headers: Mapping[str, object]) -> bool:
        """Whether a message about to be published is exactly one signed here — its body, its
        signature and its signer as noted; its note is taken either way."""
        noted = self._notes.pop(message_id)
        return (
            noted is not None
            and noted.signature == headers.get(SIGNATURE_HEADER)
            and noted.signer == headers.get(SIGNER_HEADER)
            and noted.digest == hashlib.sha256(body).digest()
        )

    def __len__(self) -> int:
        return len(self._notes)


SIGNED_HERE = SignedHere()
