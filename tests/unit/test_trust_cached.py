"""What a trust store keeps of a signer it checked (docs/performance.md, stop 28) must not let
anything through that a first check would refuse: another certificate under the same
fingerprint, a certificate past its validity, one revoked since it was last seen."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from broker import revocation
from broker.errors import Reason, SecurityRejected
from broker.pki import Identity, KeyStore, default_participant
from broker.trust import TrustStore
from schemas.identity import Role


@pytest.fixture
def store(tmp_path: Path) -> KeyStore:
    keys = KeyStore(tmp_path)
    keys.init_ca()
    return keys


def _enrol(store: KeyStore, user_id: str) -> Identity:
    identity, _ = store.enrol(default_participant(user_id, Role.INVESTOR))
    return identity


def _refused(trust: TrustStore, fp: str, der: bytes | None, now: datetime) -> Reason:
    with pytest.raises(SecurityRejected) as caught:
        trust.signer(fp, der, now)
    return caught.value.reason


def test_another_certificate_under_a_fingerprint_already_checked_is_refused(store: KeyStore) -> None:
    alice, bob = _enrol(store, "alice"), _enrol(store, "bob")
    trust, now = revocation.trust_store(store), datetime.now(UTC)
    assert trust.signer(alice.fingerprint, alice.certificate_der, now).participant.user_id == "alice"
    assert _refused(trust, alice.fingerprint, bob.certificate_der, now) is Reason.CERTIFICATE_INVALID
    assert trust.signer(alice.fingerprint, alice.certificate_der, now).participant.user_id == "alice"


def test_validity_is_checked_against_each_delivery_time_not_the_first(store: KeyStore) -> None:
    alice = _enrol(store, "alice")
    trust, now = revocation.trust_store(store), datetime.now(UTC)
    trust.signer(alice.fingerprint, alice.certificate_der, now)
    after = alice.certificate.not_valid_after_utc + timedelta(seconds=1)
    before = alice.certificate.not_valid_before_utc - timedelta(seconds=1)
    assert _refused(trust, alice.fingerprint, alice.certificate_der, after) is Reason.CERTIFICATE_EXPIRED
    assert _refused(trust, alice.fingerprint, None, before) is Reason.CERTIFICATE_NOT_YET_VALID


def test_a_signer_revoked_after_it_was_kept_is_refused_at_its_next_delivery(store: KeyStore) -> None:
    alice = _enrol(store, "alice")
    trust, now = revocation.trust_store(store), datetime.now(UTC)
    trust.signer(alice.fingerprint, alice.certificate_der, now)
    revocation.revoke(store, "alice", [alice.certificate.serial_number])
    assert _refused(trust, alice.fingerprint, alice.certificate_der, now) is Reason.CERTIFICATE_REVOKED


# -- signatures remembered as verified (Signer.verify(remember=True), stop 33) -------------------


def _signature_refused(check: Callable[[], None]) -> Reason:
    with pytest.raises(SecurityRejected) as caught:
        check()
    return caught.value.reason


def test_a_remembered_signature_still_covers_only_the_bytes_it_verified(store: KeyStore) -> None:
    alice = _enrol(store, "alice")
    signer = revocation.trust_store(store).signer(alice.fingerprint, alice.certificate_der, datetime.now(UTC))
    signature = alice.sign(b"100 shares of K")
    signer.verify(signature, b"100 shares of K", remember=True)
    signer.verify(signature, b"100 shares of K", remember=True)  # from the memo
    altered = _signature_refused(lambda: signer.verify(signature, b"900 shares of K", remember=True))
    assert altered is Reason.SIGNATURE_INVALID


def test_a_signature_that_failed_is_checked_again_and_fails_again(store: KeyStore) -> None:
    alice = _enrol(store, "alice")
    signer = revocation.trust_store(store).signer(alice.fingerprint, alice.certificate_der, datetime.now(UTC))
    forged = bytes(64)
    for _ in range(2):
        assert _signature_refused(lambda: signer.verify(forged, b"k", remember=True)) is Reason.SIGNATURE_INVALID


def test_a_signature_remembered_under_one_key_does_not_verify_under_another(store: KeyStore) -> None:
    alice, bob = _enrol(store, "alice"), _enrol(store, "bob")
    trust, now = revocation.trust_store(store), datetime.now(UTC)
    signature = alice.sign(b"k")
    trust.signer(alice.fingerprint, alice.certificate_der, now).verify(signature, b"k", remember=True)
    as_bob = trust.signer(bob.fingerprint, bob.certificate_der, now)
    assert _signature_refused(lambda: as_bob.verify(signature, b"k", remember=True)) is Reason.SIGNATURE_INVALID


def test_the_memo_keeps_at_most_its_bound(store: KeyStore, monkeypatch: pytest.MonkeyPatch) -> None:
    from broker import trust as trust_module

    monkeypatch.setattr(trust_module, "VERIFIED_KEPT", 3)
    monkeypatch.setattr(trust_module, "_VERIFIED", {})
    alice = _enrol(store, "alice")
    signer = revocation.trust_store(store).signer(alice.fingerprint, alice.certificate_der, datetime.now(UTC))
    for i in range(10):
        data = f"order {i}".encode()
        signer.verify(alice.sign(data), data, remember=True)
    assert len(trust_module._VERIFIED) == 3
    assert [key[2] for key in trust_module._VERIFIED] == [
        hashlib.sha256(f"order {i}".encode()).digest() for i in (7, 8, 9)
    ]


def test_without_remember_nothing_is_kept(store: KeyStore, monkeypatch: pytest.MonkeyPatch) -> None:
    from broker import trust as trust_module

    monkeypatch.setattr(trust_module, "_VERIFIED", {})
    alice = _enrol(store, "alice")
    signer = revocation.trust_store(store).signer(alice.fingerprint, alice.certificate_der, datetime.now(UTC))
    signer.verify(alice.sign(b"an envelope"), b"an envelope")
    assert trust_module._VERIFIED == {}
