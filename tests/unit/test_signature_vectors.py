"""The signature test vectors of docs/signatures.md hold under an independent Ed25519 (issue 9).

PyNaCl (libsodium) verifies every signature in ``docs/signature-vectors.json`` from the bytes
the spec names, with SHA-256 from hashlib and a few lines of DER reading — none of Kabuto's
signing code. Kabuto's code then regenerates the file byte for byte from its keys, and its
receiver accepts the envelopes, so the spec, the vectors and the code agree.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import datetime, timedelta
from typing import Any

import nacl.bindings
import nacl.exceptions
import nacl.signing
import pytest
from cryptography import x509

from broker.envelope import Freshness, open_delivery, open_event
from broker.trust import TrustStore
from schemas.identity import Role
from tests.signature_vectors import VECTORS, build

ED25519_SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")
ENDORSEMENT_TAG = b"kabuto-endorsement-v1"
ENVELOPES = ("sell_order_envelope", "handover_envelope", "event_envelope")
COUNTERSIGNATURES = ("sell_order_countersignature", "name_transfer_countersignature", "handover_countersignature")


@pytest.fixture(scope="module")
def vectors() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(VECTORS.read_text())
    return loaded


def verify_key(vectors: dict[str, Any], who: str) -> nacl.signing.VerifyKey:
    return nacl.signing.VerifyKey(bytes.fromhex(vectors["keys"][who]["public_key_hex"]))


def der(vectors: dict[str, Any], who: str) -> bytes:
    return base64.b64decode(vectors["keys"][who]["certificate_der_b64"])


def tlv(data: bytes, at: int) -> tuple[int, int]:
    """(start of value, end) of the DER element at ``at``."""
    length, start = data[at + 1], at + 2
    if length & 0x80:
        size = length & 0x7F
        length, start = int.from_bytes(data[start : start + size], "big"), start + size
    return start, start + length


def test_the_vectors_regenerate_byte_for_byte_with_our_code(vectors: dict[str, Any]) -> None:
    assert build(vectors["keys"], vectors["sealed_account"]) == vectors


def test_the_keys_are_ed25519_seeds_of_their_public_keys(vectors: dict[str, Any]) -> None:
    for who, entry in vectors["keys"].items():
        key = nacl.signing.SigningKey(bytes.fromhex(entry["private_key_seed_hex"]))
        assert key.verify_key.encode().hex() == entry["public_key_hex"], who
        assert ED25519_SPKI_PREFIX + key.verify_key.encode() in der(vectors, who), who


def test_identity_certificates_are_signed_by_the_ca_over_their_tbs_bytes(vectors: dict[str, Any]) -> None:
    ca = verify_key(vectors, "ca")
    for who in vectors["keys"]:
        data = der(vectors, who)
        outer, _ = tlv(data, 0)
        _, tbs_end = tlv(data, outer)
        ca.verify(data[outer:tbs_end], data[-64:])  # signatureValue: BIT STRING 03 41 00 + 64 bytes, last
        assert data[-67:-64] == bytes.fromhex("034100")


@pytest.mark.parametrize("name", ENVELOPES)
def test_envelope_signature_is_over_the_exact_body_bytes(vectors: dict[str, Any], name: str) -> None:
    vector = vectors[name]
    body, headers = vector["body_utf8"].encode(), vector["headers"]
    envelope = json.loads(body)
    sender = envelope["sender"]
    verify_key(vectors, sender).verify(body, base64.b64decode(headers["kabuto-signature"]))
    assert headers["kabuto-certificate"] == vectors["keys"][sender]["certificate_der_b64"]
    assert headers["kabuto-signer"] == envelope["signer"] == hashlib.sha256(der(vectors, sender)).hexdigest()
    assert vector["body_sha256_hex"] == hashlib.sha256(body).hexdigest()
    seed = bytes.fromhex(vectors["keys"][sender]["private_key_seed_hex"])
    assert base64.b64encode(nacl.signing.SigningKey(seed).sign(body).signature).decode() == headers["kabuto-signature"]
    altered = body.replace(b"-8000-", b"-8001-", 1)  # one character of the message id
    assert altered != body
    with pytest.raises(nacl.exceptions.BadSignatureError):
        verify_key(vectors, sender).verify(altered, base64.b64decode(headers["kabuto-signature"]))


def test_stock_certificate_is_signed_by_the_issuer_over_its_content_bytes(vectors: dict[str, Any]) -> None:
    vector = vectors["stock_certificate"]
    content = vector["content_utf8"].encode()
    verify_key(vectors, vector["issuer"]).verify(content, base64.b64decode(vector["issuer_signature_b64"]))
    assert json.loads(content)["issuing_agent_id"] == vector["issuer"]


@pytest.mark.parametrize("name", COUNTERSIGNATURES)
def test_countersignature_signs_the_documented_digest_chain(vectors: dict[str, Any], name: str) -> None:
    vector, certificate = vectors[name], vectors["stock_certificate"]
    parts = [
        ENDORSEMENT_TAG,
        vector["purpose"].encode(),
        vector["context"].encode(),
        hashlib.sha256(certificate["content_utf8"].encode()).digest(),
        base64.b64decode(certificate["issuer_signature_b64"]),
        *(base64.b64decode(s) for s in vector["prior_signatures_b64"]),
    ]
    signed = b"\x00".join(hashlib.sha256(p).digest() for p in parts)
    assert signed.hex() == vector["signed_bytes_hex"]
    verify_key(vectors, vector["endorser"]).verify(signed, base64.b64decode(vector["signature_b64"]))


def test_the_envelopes_carry_the_countersignatures(vectors: dict[str, Any]) -> None:
    order = json.loads(vectors["sell_order_envelope"]["body_utf8"])["payload"]
    endorsement = order["certificate"]["endorsements"][0]
    assert endorsement["signature"] == vectors["sell_order_countersignature"]["signature_b64"]
    assert endorsement["context"] == f"order:{order['user_id']}:{order['client_order_id']}"
    handover = json.loads(vectors["handover_envelope"]["body_utf8"])["payload"]
    assert (
        handover["certificate"]["endorsements"][0]["signature"] == vectors["handover_countersignature"]["signature_b64"]
    )


def test_kabutos_receiver_accepts_every_vector(vectors: dict[str, Any]) -> None:
    ca = x509.load_der_x509_certificate(der(vectors, "ca"))
    trust, now = TrustStore(ca), datetime.fromisoformat(vectors["time"])
    freshness = Freshness(max_age=timedelta(minutes=5), max_skew=timedelta(0))
    order = vectors["sell_order_envelope"]
    opened = open_delivery(
        order["body_utf8"].encode(),
        order["headers"],
        trust=trust,
        hosted={"exchange": Role.EXCHANGE},
        freshness=freshness,
        now=now,
    )
    assert opened.envelope.type == "order.submit" and opened.sender.user_id == "alice"
    event = vectors["event_envelope"]
    assert open_event(event["body_utf8"].encode(), event["headers"], trust=trust, freshness=freshness, now=now)


def _hkdf_sha256(secret: bytes, salt: bytes, info: bytes) -> bytes:
    """RFC 5869 with one block of output: all a 32-byte key needs."""
    prk = hmac.new(salt, secret, hashlib.sha256).digest()
    return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()


def test_the_sealed_account_opens_with_libsodium_and_rfc_5869(vectors: dict[str, Any]) -> None:
    """docs/signatures.md §6, from the bytes: X25519, HKDF-SHA256, ChaCha20-Poly1305 (IETF), no Kabuto code."""
    vector = vectors["sealed_account"]
    raw = base64.urlsafe_b64decode(vector["sealed"].removeprefix("ks1."))
    ephemeral_public, box = raw[:32], raw[32:]
    recipient_private = bytes.fromhex(vector["recipient_private_key_hex"])
    recipient_public = nacl.bindings.crypto_scalarmult_base(recipient_private)
    assert recipient_public.hex() == vector["recipient_public_key_hex"]
    assert ephemeral_public == nacl.bindings.crypto_scalarmult_base(bytes.fromhex(vector["ephemeral_private_key_hex"]))
    shared = nacl.bindings.crypto_scalarmult(recipient_private, ephemeral_public)
    context = vector["context"].encode()
    key = _hkdf_sha256(shared, ephemeral_public + recipient_public, b"kabuto sealed box v1 " + context)
    opened = nacl.bindings.crypto_aead_chacha20poly1305_ietf_decrypt(box, context, bytes(12), key)
    assert opened.decode() == vector["plaintext"] == "alice-cash"
    assert vector["context"] == "order.submit/settlement_account/alice"
    envelope = json.loads(vectors["sell_order_envelope"]["body_utf8"])
    assert envelope["version"] == 2 and envelope["payload"]["settlement_account"] == vector["sealed"]
    with pytest.raises(nacl.exceptions.CryptoError):  # the context is bound in: another field cannot open it
        nacl.bindings.crypto_aead_chacha20poly1305_ietf_decrypt(box, b"account.inquiry/account", bytes(12), key)
