"""What a trust store keeps of a signer it checked (docs/performance.md, stop 28) must not let
anything through that a first check would refuse: another certificate under the same
fingerprint, a certificate past its validity, one revoked since it was last seen."""

from __future__ import annotations

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
