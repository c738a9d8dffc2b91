"""The signature test vectors of docs/signatures.md, built with Kabuto's own code.

``build(vectors)`` takes the fixed keys and identity certificates of a vector file and
regenerates every signed thing from them — envelope bodies, headers, the stock certificate,
the countersignatures — so the test can compare the result with the committed file byte for
byte. ``python -m tests.signature_vectors`` writes a new file with new keys and certificates
(only needed if the format changes; every other value then changes too);
``python -m tests.signature_vectors --keep-keys`` rebuilds it from the keys on file, adding any
that are missing (after a message the vectors carry changed version).
"""

from __future__ import annotations

import base64
import json
import sys
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from broker.envelope import Sealed, seal
from broker.pki import CertificateAuthority, Identity, create_ca, default_participant, participant_of
from broker.sealed_box import seal_with
from broker.stock_certificates import endorse, endorsement_bytes, sign_certificate
from schemas.certificates import ElectronicStockCertificate, ShareClass, TransferRestriction
from schemas.identity import Role
from schemas.lifecycle import CertificateHandover
from schemas.sealed import order_account
from schemas.trading import OrderTerms, OrderType, Side, SubmitOrder, TimeInForce, TradeExecuted

VECTORS = Path(__file__).resolve().parents[1] / "docs" / "signature-vectors.json"
NOW = datetime(2026, 12, 2, 9, 0, 0, tzinfo=UTC)
PARTICIPANTS = {"issuer": Role.ISSUER, "exchange": Role.EXCHANGE, "alice": Role.INVESTOR, "bob": Role.INVESTOR}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def raw_private(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())


def raw_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def new_keys() -> dict[str, Any]:
    """A new CA and participants, valid from NOW - 1 day for ten years."""
    ca = create_ca("Kabuto Test-Vector CA")
    keys: dict[str, Any] = {"ca": _key_entry(ca.private_key, ca.certificate)}
    for user_id, role in PARTICIPANTS.items():
        key = Ed25519PrivateKey.generate()
        cert = CertificateAuthority(ca.private_key, ca.certificate).issue(
            default_participant(user_id, role),
            key.public_key(),
            not_before=NOW - timedelta(days=1),
            not_after=NOW + timedelta(days=3650),
        )
        keys[user_id] = _key_entry(key, cert)
    return keys


def new_sealing_keys() -> dict[str, str]:
    """The settlement agent's X25519 key (a test key) and the one-time key of the vector's box."""
    return {
        "recipient_private_key_hex": _x25519_raw(X25519PrivateKey.generate()).hex(),
        "ephemeral_private_key_hex": _x25519_raw(X25519PrivateKey.generate()).hex(),
    }


def _x25519_raw(key: X25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())


def sealed_account(sealing: dict[str, str]) -> dict[str, str]:
    """docs/signatures.md §6: alice's settlement account sealed to settlement, as her order carries it."""
    recipient = X25519PrivateKey.from_private_bytes(bytes.fromhex(sealing["recipient_private_key_hex"]))
    ephemeral = X25519PrivateKey.from_private_bytes(bytes.fromhex(sealing["ephemeral_private_key_hex"]))
    context = order_account("alice")
    raw = recipient.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {
        "recipient_private_key_hex": sealing["recipient_private_key_hex"],
        "ephemeral_private_key_hex": sealing["ephemeral_private_key_hex"],
        "recipient_public_key_hex": raw.hex(),
        "context": context,
        "plaintext": "alice-cash",
        "sealed": seal_with(ephemeral, recipient.public_key(), "alice-cash", context),
    }


def _key_entry(key: Ed25519PrivateKey, certificate: x509.Certificate) -> dict[str, str]:
    return {
        "private_key_seed_hex": raw_private(key).hex(),
        "public_key_hex": raw_public(key).hex(),
        "certificate_der_b64": b64(certificate.public_bytes(serialization.Encoding.DER)),
    }


def identity(keys: dict[str, Any], user_id: str) -> Identity:
    entry = keys[user_id]
    certificate = x509.load_der_x509_certificate(base64.b64decode(entry["certificate_der_b64"]))
    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(entry["private_key_seed_hex"]))
    return Identity(participant_of(certificate), key, certificate)


def stock_certificate() -> ElectronicStockCertificate:
    return ElectronicStockCertificate(
        company_name="Kabuto Test-Vector Holdings K.K.",
        incorporated_on=date(1999, 11, 11),
        certificate_number="KBT-00000001",
        cert_id=UUID("6f1d3c2a-0b7e-4c44-9a51-2f2f6f0d7a01"),
        shares=500,
        par_value_per_share=Decimal("50"),
        currency="JPY",
        issued_on=date(2026, 12, 1),
        expires_on=date(2036, 11, 30),
        holder_name="Alice",
        holder_user_id="alice",
        share_class=ShareClass.COMMON,
        convertible_details=None,
        transfer_restriction=TransferRestriction.NONE,
        issuing_agent_name="Kabuto Issuing Agent (issuer)",
        issuing_agent_address="kabuto:issuer",
        issue_code="KBT",
        issuing_agent_id="issuer",
    )


def _envelope(sealed: Sealed) -> dict[str, Any]:
    return {"body_utf8": sealed.body.decode(), "body_sha256_hex": sealed.digest, "headers": sealed.headers}


def build(keys: dict[str, Any], sealing: dict[str, str]) -> dict[str, Any]:
    """Every vector, regenerated from ``keys`` (and the sealed box's ``sealing`` keys) with Kabuto's code."""
    issuer, alice, exchange = identity(keys, "issuer"), identity(keys, "alice"), identity(keys, "exchange")
    signed = sign_certificate(issuer, stock_certificate())
    order_context = "order:alice:alice-0001"
    sell_bytes = endorsement_bytes(signed, "sell_order", order_context)
    for_order = endorse(alice, signed, "sell_order", order_context)
    transfer_bytes = endorsement_bytes(for_order, "name_transfer", "omn:1")
    transferred = endorse(exchange, for_order, "name_transfer", "omn:1")
    handover_bytes = endorsement_bytes(signed, "transfer", "transfer:bob")
    handed = endorse(alice, signed, "transfer", "transfer:bob")
    box = sealed_account(sealing)
    order = SubmitOrder(
        client_order_id="alice-0001",
        user_id="alice",
        issue_code="KBT",
        terms=OrderTerms(
            side=Side.SELL,
            order_type=OrderType.LIMIT,
            price=Decimal("1200"),
            quantity=300,
            time_in_force=TimeInForce.DAY,
        ),
        settlement_account=box["sealed"],
        certificate=for_order,
    )
    ids = [UUID(f"00000000-0000-4000-8000-00000000000{i}") for i in range(1, 4)]
    return {
        "format": "kabuto-signature-vectors-1",
        "spec": "docs/signatures.md",
        "time": NOW.isoformat(),
        "keys": keys,
        "stock_certificate": {
            "content_utf8": signed.content.decode(),
            "issuer_signature_b64": b64(signed.issuer_signature.signature),
            "issuer": "issuer",
        },
        "sell_order_countersignature": {
            "endorser": "alice",
            "purpose": "sell_order",
            "context": order_context,
            "signed_bytes_hex": sell_bytes.hex(),
            "signature_b64": b64(for_order.endorsements[0].signature),
            "prior_signatures_b64": [],
        },
        "name_transfer_countersignature": {
            "endorser": "exchange",
            "purpose": "name_transfer",
            "context": "omn:1",
            "signed_bytes_hex": transfer_bytes.hex(),
            "signature_b64": b64(transferred.endorsements[1].signature),
            "prior_signatures_b64": [b64(for_order.endorsements[0].signature)],
        },
        "handover_countersignature": {
            "endorser": "alice",
            "purpose": "transfer",
            "context": "transfer:bob",
            "signed_bytes_hex": handover_bytes.hex(),
            "signature_b64": b64(handed.endorsements[0].signature),
            "prior_signatures_b64": [],
        },
        "sealed_account": box,
        "sell_order_envelope": _envelope(seal(alice, order, recipient="exchange", now=NOW, message_id=ids[0])),
        "handover_envelope": _envelope(
            seal(
                alice,
                CertificateHandover(handover_id=ids[1], certificate=handed, note=""),
                recipient="bob",
                now=NOW,
                message_id=ids[1],
            )
        ),
        "event_envelope": _envelope(
            seal(
                exchange,
                TradeExecuted(
                    matching_number=1, issue_code="KBT", price=Decimal("1200"), quantity=300, amount=Decimal("360000")
                ),
                recipient=None,
                now=NOW,
                message_id=ids[2],
            )
        ),
    }


def main() -> None:
    keys, sealing = new_keys(), new_sealing_keys()
    if "--keep-keys" in sys.argv:
        kept = json.loads(VECTORS.read_text())
        keys, sealing = kept["keys"], kept.get("sealed_account", sealing)
    VECTORS.write_text(json.dumps(build(keys, sealing), indent=1) + "\n")
    print(f"wrote {VECTORS}", file=sys.stderr)


if __name__ == "__main__":
    main()
