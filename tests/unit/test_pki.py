"""The CA and participant identities on disk (seed 001 §2.1, §3.1): files, modes, extension."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from broker.pki import KeyStore, PkiError, default_participant, participant_of
from schemas.identity import CertificatePolicy, Participant, Role


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


@pytest.fixture
def store(tmp_path: Path) -> KeyStore:
    store = KeyStore(tmp_path / "keys")
    store.init_ca()
    return store


def test_init_ca_writes_a_private_key_and_is_idempotent(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys")
    ca, created = store.init_ca()
    assert created
    assert mode(store.ca_key_path) == 0o600
    assert mode(store.ca_key_path.parent) == 0o700

    again, created_again = store.init_ca()
    assert not created_again
    assert again.certificate == ca.certificate


def test_enrol_issues_a_ca_signed_certificate_naming_the_participant(store: KeyStore) -> None:
    alice = Participant(
        user_id="alice",
        role=Role.INVESTOR,
        policy=CertificatePolicy(account_usage_limit=Decimal(5_000_000), short_selling_prohibited=False),
    )
    identity, created = store.enrol(alice)
    assert created
    assert mode(store.key_path("alice")) == 0o600
    identity.certificate.verify_directly_issued_by(store.ca_certificate())

    read_back = participant_of(identity.certificate)
    assert read_back == alice
    assert read_back.policy is not None
    assert read_back.policy.account_usage_limit == 5_000_000
    assert read_back.policy.short_selling_prohibited is False
    subject = identity.certificate.subject
    assert subject.get_attributes_for_oid(NameOID.USER_ID)[0].value == "alice"
    assert subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "alice"


def test_re_enrol_keeps_a_usable_identity_and_renew_replaces_it(store: KeyStore) -> None:
    participant = default_participant("issuer", Role.ISSUER)
    first, _ = store.enrol(participant)

    kept, created = store.enrol(participant)
    assert not created
    assert kept.certificate == first.certificate

    renewed, created = store.enrol(participant, renew=True)
    assert created
    assert renewed.certificate != first.certificate
    assert store.load_identity("issuer").certificate == renewed.certificate


def test_load_identity_refuses_a_key_readable_by_others(store: KeyStore) -> None:
    store.enrol(default_participant("bob", Role.INVESTOR))
    store.key_path("bob").chmod(0o644)
    with pytest.raises(PkiError, match="chmod 600"):
        store.load_identity("bob")


def test_identity_repr_shows_no_key_material(store: KeyStore) -> None:
    identity, _ = store.enrol(default_participant("carol", Role.INVESTOR))
    pem = identity.private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    raw = identity.private_key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    text = repr(identity)
    assert "carol" in text
    assert "PRIVATE" not in text and pem not in text
    assert raw.hex() not in text and "Ed25519PrivateKey" not in text


def test_load_identity_of_an_unknown_participant_fails(store: KeyStore) -> None:
    with pytest.raises(PkiError, match="not enrolled"):
        store.load_identity("mallory")
