"""Sealing and opening: every check of open_delivery rejects with its own reason code."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.envelope import Freshness, Opened, Sealed, body_digest, open_delivery, seal, sign_headers
from broker.errors import Reason, Rejected
from broker.pki import Identity, KeyStore, default_participant
from broker.trust import TrustStore
from schemas.certificates import IssuerSignature, SignedCertificate
from schemas.envelope import CERTIFICATE_HEADER, SIGNATURE_HEADER
from schemas.identity import Role
from schemas.issuance import CertificateIssued
from tests import support

HOSTED = {"issuer": Role.ISSUER}


def opened(keys: KeyStore, body: bytes, headers: dict[str, Any], hosted: dict[str, Role] = HOSTED) -> Opened:
    return open_delivery(
        body,
        headers,
        trust=TrustStore(keys.ca_certificate()),
        hosted=hosted,
        freshness=Freshness(timedelta(hours=1), timedelta(seconds=30)),
        now=datetime.now(UTC),
    )


def rejection(keys: KeyStore, body: bytes, headers: dict[str, Any], hosted: dict[str, Role] = HOSTED) -> Reason:
    with pytest.raises(Rejected) as caught:
        opened(keys, body, headers, hosted)
    return caught.value.reason


def resigned(identity: Identity, sealed: Sealed, **edit: Any) -> tuple[bytes, dict[str, str]]:
    """The sealed envelope with fields changed (None deletes), signed again by ``identity``."""
    envelope = json.loads(sealed.body)
    for key, value in edit.items():
        if value is None:
            del envelope[key]
        else:
            envelope[key] = value
    body = json.dumps(envelope).encode()
    return body, sign_headers(identity, body)


def test_a_sealed_request_opens_to_its_message_sender_and_digest(keys: KeyStore) -> None:
    alice = keys.load_identity("alice")
    sealed = support.sealed_request(alice)
    result = opened(keys, sealed.body, sealed.headers)
    assert result.message == support.issuance_request("alice")
    assert result.sender == alice.participant
    assert result.digest == sealed.digest == body_digest(sealed.body)
    assert result.envelope == sealed.envelope


def test_a_delivery_without_signature_headers_is_unsigned(keys: KeyStore) -> None:
    sealed = support.sealed_request(keys.load_identity("alice"))
    assert rejection(keys, sealed.body, {}) is Reason.UNSIGNED


def test_a_signature_header_that_is_not_base64_is_unsigned(keys: KeyStore) -> None:
    sealed = support.sealed_request(keys.load_identity("alice"))
    headers = {**sealed.headers, SIGNATURE_HEADER: "not base64!"}
    assert rejection(keys, sealed.body, headers) is Reason.UNSIGNED


def test_a_recipient_this_agent_does_not_host_is_misrouted(keys: KeyStore) -> None:
    sealed = support.sealed_request(keys.load_identity("alice"))
    assert rejection(keys, sealed.body, sealed.headers, {"exchange": Role.EXCHANGE}) is Reason.MISROUTED


def test_a_sender_field_other_than_the_signer_is_a_sender_mismatch(keys: KeyStore) -> None:
    alice = keys.load_identity("alice")
    body, headers = resigned(alice, support.sealed_request(alice), sender="bob")
    assert rejection(keys, body, headers) is Reason.SENDER_MISMATCH


def test_an_envelope_missing_a_field_is_invalid(keys: KeyStore) -> None:
    alice = keys.load_identity("alice")
    body, headers = resigned(alice, support.sealed_request(alice), created_at=None)
    assert rejection(keys, body, headers) is Reason.ENVELOPE_INVALID


def test_an_attached_certificate_other_than_the_named_signer_is_invalid(keys: KeyStore) -> None:
    sealed = support.sealed_request(keys.load_identity("alice"))
    bob_der = base64.b64encode(keys.load_identity("bob").certificate_der).decode()
    headers = {**sealed.headers, CERTIFICATE_HEADER: bob_der}
    assert rejection(keys, sealed.body, headers) is Reason.CERTIFICATE_INVALID


def test_a_certificate_valid_only_from_tomorrow_is_not_yet_valid(keys: KeyStore) -> None:
    participant = default_participant("dave", Role.INVESTOR)
    key = Ed25519PrivateKey.generate()
    tomorrow = datetime.now(UTC) + timedelta(days=1)
    certificate = keys.load_ca().issue(participant, key.public_key(), not_before=tomorrow)
    sealed = support.sealed_request(Identity(participant, key, certificate))
    assert rejection(keys, sealed.body, sealed.headers) is Reason.CERTIFICATE_NOT_YET_VALID


def test_a_message_type_the_recipient_role_may_not_receive_is_not_authorized(keys: KeyStore) -> None:
    issuer = keys.load_identity("issuer")
    payload = CertificateIssued(
        request_id=uuid.uuid4(),
        certificate=SignedCertificate(
            content=b"{}", issuer_signature=IssuerSignature(certificate=b"der", signature=b"sig")
        ),
    )
    sealed = seal(issuer, payload, recipient="issuer", now=datetime.now(UTC))
    assert rejection(keys, sealed.body, sealed.headers) is Reason.SENDER_NOT_AUTHORIZED


def test_a_nul_character_in_a_text_field_is_data_invalid_before_any_handler(keys: KeyStore) -> None:
    """Valid by the schema, but no PostgreSQL text column can hold it (found by the fuzz test)."""
    alice = keys.load_identity("alice")
    sealed = support.sealed_request(alice, holder_address="1-1 Kabuto-cho\x00, Tokyo")
    assert rejection(keys, sealed.body, sealed.headers) is Reason.DATA_INVALID
    escaped = support.sealed_request(alice, holder_address="a backslash and u0000 as text: \\u0000")
    assert opened(keys, escaped.body, escaped.headers).message.holder_address.endswith("\\u0000")
