"""Kabuto's error tree, and how the consumer maps each branch to behaviour.

::

    KabutoError
    ├── Rejected            permanent: dead-lettered with its reason code, never retried,
    │   │                   changes no state
    │   ├── SecurityRejected    logged as a security event (signature, certificate,
    │   │                       authorisation, freshness, replay)
    │   └── InputRejected       logged as an input event (JSON, type, schema)
    │   (a handler's ``pydantic.ValidationError`` or ``asyncpg.DataError`` is mapped to
    │   ``InputRejected(data_invalid)`` by the consumer: the same data fails the same way again)
    └── Transient           worth another try: retried with back-off, then dead-lettered
                            as ``retries_exhausted``

A business refusal (an issue that is sold out, an order over its limit) is not an error:
the handler emits a refusal message with a reason code to the requester.
"""

from __future__ import annotations

from enum import StrEnum

import asyncpg
import pydantic


class Reason(StrEnum):
    """Why a delivery was dead-lettered; stable codes for operators and tooling."""

    UNSIGNED = "unsigned"
    UNKNOWN_SIGNER = "unknown_signer"
    CERTIFICATE_INVALID = "certificate_invalid"
    CERTIFICATE_UNTRUSTED = "certificate_untrusted"
    CERTIFICATE_EXPIRED = "certificate_expired"
    CERTIFICATE_NOT_YET_VALID = "certificate_not_yet_valid"
    SIGNATURE_INVALID = "signature_invalid"
    SENDER_MISMATCH = "sender_mismatch"
    SENDER_NOT_AUTHORIZED = "sender_not_authorized"
    MISROUTED = "misrouted"
    STALE_MESSAGE = "stale_message"
    REPLAYED_MESSAGE_ID = "replayed_message_id"
    MALFORMED_JSON = "malformed_json"
    ENVELOPE_INVALID = "envelope_invalid"
    UNKNOWN_MESSAGE_TYPE = "unknown_message_type"
    SCHEMA_VIOLATION = "schema_violation"
    STOCK_CERTIFICATE_INVALID = "stock_certificate_invalid"
    UNSOLICITED = "unsolicited"
    RETRIES_EXHAUSTED = "retries_exhausted"
    # Issue 13 (security): refused before verification, revoked signers, and data a handler
    # read or wrote that fails the wire contract or a database check (deterministic: no retry).
    MESSAGE_TOO_LARGE = "message_too_large"
    CERTIFICATE_REVOKED = "certificate_revoked"
    DATA_INVALID = "data_invalid"
    SEALED_FIELD_INVALID = "sealed_field_invalid"
    # A message version that carries account information in clear, after the cut-over (R-001-06).
    CLEAR_ACCOUNT_REFUSED = "clear_account_refused"
    # A delivery typed as a bundle of signed messages that is not one (broker/bundle.py).
    BUNDLE_MALFORMED = "bundle_malformed"


class KabutoError(Exception):
    """Root of every error Kabuto raises on purpose."""


class Rejected(KabutoError):
    """A delivery that can never be processed; it goes to the dead-letter path."""

    kind = "input"

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


class SecurityRejected(Rejected):
    kind = "security"


class InputRejected(Rejected):
    kind = "input"


def rejection_of(exc: Exception) -> Rejected | None:
    """The rejection a handler's failure amounts to, if a retry would meet it alike: a
    rejection raised on purpose, or data the schema or the database refuses (a value out of a
    model's bounds, a string too long for its column) — dead-lettered as ``data_invalid``, alone
    or in a batch run again a savepoint each (broker.group_commit; found by an independent test
    suite, stop 28). None: any other failure, retried."""
    if isinstance(exc, Rejected):
        return exc
    if isinstance(exc, pydantic.ValidationError | asyncpg.DataError):
        return InputRejected(Reason.DATA_INVALID, f"{type(exc).__name__}: {exc}"[:1000])
    return None


class Transient(KabutoError):
    """A failure that may pass: the consumer retries the delivery with back-off."""
