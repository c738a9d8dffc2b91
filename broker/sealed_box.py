"""Sealing a secret field to one participant's X25519 key (R-001-06, R-001-44; issue 13).

A sealed box: the sender makes a one-time X25519 key pair, agrees a secret with the
recipient's certified key, derives a ChaCha20-Poly1305 key with HKDF-SHA256 (salted with both
public keys) and encrypts. Only the recipient's private key opens it; the sender cannot, and
nobody on the way (the agent relaying it, an outbox, a log, the broker) can. The field's
``context`` (for example ``account.inquiry/account``) is bound in as associated data, so a
sealed value cannot be cut from one field and pasted into another.

Wire form: ``ks1.`` + base64url(ephemeral public key ‖ ciphertext ‖ tag), see
``schemas.sealed.SealedText``. The whole message stays signed by its sender as usual.
"""

from __future__ import annotations

import base64
import binascii

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from broker.bounded import Bounded
from broker.errors import InputRejected, Reason
from broker.pki import PkiError, encryption_key_of, fingerprint
from broker.trust import TrustStore
from schemas.identity import SETTLEMENT_ID
from schemas.issuance import DividendDelivery, DividendMethod
from schemas.sealed import SEALED_PREFIX, dividend_account, order_account

# A fresh ephemeral key per box makes every derived key single-use, so a fixed nonce is safe.
_NONCE = bytes(12)


def _raw(key: X25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _key(shared: bytes, ephemeral: bytes, recipient: bytes, context: str) -> bytes:
    hkdf = HKDF(
        hashes.SHA256(), length=32, salt=ephemeral + recipient, info=b"kabuto sealed box v1 " + context.encode()
    )
    return hkdf.derive(shared)


def seal_to(recipient: X25519PublicKey, plaintext: str, context: str) -> str:
    return seal_with(X25519PrivateKey.generate(), recipient, plaintext, context)


def seal_with(ephemeral: X25519PrivateKey, recipient: X25519PublicKey, plaintext: str, context: str) -> str:
    """``seal_to`` with a given one-time key: for the test vectors only, never reuse one."""
    ephemeral_raw, recipient_raw = _raw(ephemeral.public_key()), _raw(recipient)
    key = _key(ephemeral.exchange(recipient), ephemeral_raw, recipient_raw, context)
    box = ChaCha20Poly1305(key).encrypt(_NONCE, plaintext.encode(), context.encode())
    return SEALED_PREFIX + base64.urlsafe_b64encode(ephemeral_raw + box).decode()


def open_box(private: X25519PrivateKey, sealed: str, context: str, kept: Opened | None = None) -> str:
    """The plaintext, or ``InputRejected(sealed_field_invalid)`` for anything else. ``kept``: the
    boxes the caller keeps opened (``Opened``); a secret that must not stay in memory (a PIN) is
    opened without."""
    recipient = _raw(private.public_key())
    if kept is not None and (plaintext := kept.get(recipient, sealed, context)) is not None:
        return plaintext
    try:
        raw = base64.urlsafe_b64decode(sealed.removeprefix(SEALED_PREFIX))
        ephemeral = X25519PublicKey.from_public_bytes(raw[:32])
        key = _key(private.exchange(ephemeral), raw[:32], recipient, context)
        plaintext = ChaCha20Poly1305(key).decrypt(_NONCE, raw[32:], context.encode()).decode()
    except (binascii.Error, ValueError, InvalidTag, UnicodeDecodeError) as exc:
        raise InputRejected(Reason.SEALED_FIELD_INVALID, f"{context} does not open with this agent's key") from exc
    if kept is not None:
        kept.keep(recipient, sealed, context, plaintext)
    return plaintext


class Opened:
    """Boxes a caller opened, by recipient key, box and context: the same box opens to the same
    text. For what the recipient keeps in clear anyway (settlement's order accounts: a
    participant's client seals its account once and sends that box with each of its orders, so
    settlement opened the same two boxes for every trade, 57 µs each here; docs/performance.md,
    stop 29) — never for a secret kept only as a hash. Only what opened is kept; a box that does
    not open is tried, and refused, every time. Bounded: past ``limit`` boxes the oldest go."""

    def __init__(self, limit: int = 4096) -> None:
        self._texts: Bounded[tuple[bytes, str, str], str] = Bounded(limit)

    def get(self, recipient: bytes, sealed: str, context: str) -> str | None:
        return self._texts.get((recipient, sealed, context))

    def keep(self, recipient: bytes, sealed: str, context: str, plaintext: str) -> None:
        self._texts.put((recipient, sealed, context), plaintext)

    def __len__(self) -> int:
        return len(self._texts)


def seal_for(trust: TrustStore, recipient: str, plaintext: str, context: str) -> str:
    """Seal to the key the CA certified for ``recipient`` (from the certificates on file);
    a certificate on file that the CA did not issue is refused, never sealed to."""
    certificate = trust.known_certificate(recipient)
    key = encryption_key_of(certificate) if certificate is not None else None
    if certificate is None or key is None:
        raise PkiError(f"no certified encryption key for {recipient}; renew its certificate (`ca enrol --renew`)")
    trust.chained(fingerprint(certificate), certificate.public_bytes(serialization.Encoding.DER))
    return seal_to(key, plaintext, context)


def seal_account(trust: TrustStore, user_id: str, account: str) -> str:
    """An order's settlement account (33), for the settlement agent only (R-001-06)."""
    return seal_for(trust, SETTLEMENT_ID, account, order_account(user_id))


def sealed_dividend(trust: TrustStore, holder: str, method: DividendMethod, account: str) -> DividendDelivery:
    """The dividend delivery of 32 and 39 with its account sealed to settlement (R-001-44)."""
    return DividendDelivery(method=method, account=seal_for(trust, SETTLEMENT_ID, account, dividend_account(holder)))
