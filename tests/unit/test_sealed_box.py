"""Secret fields sealed to the recipient's certified X25519 key (R-001-06, issue 13)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from agents.brokerage import app as brokerage_app
from agents.settlement import sealed_accounts
from broker.errors import InputRejected, Reason
from broker.pki import KeyStore, PkiError, default_participant, encryption_key_of
from broker.revocation import trust_store
from broker.sealed_box import Opened, open_box, seal_for, seal_to
from schemas.identity import Role
from schemas.sealed import ACCOUNT_INQUIRY_ACCOUNT, CUSTOMER_PIN


@pytest.fixture
def keys(tmp_path: Path) -> KeyStore:
    store = KeyStore(tmp_path)
    store.init_ca()
    for agent in ("settlement", "brokerage", "issuer"):
        store.enrol(default_participant(agent, Role(agent)))
    store.enrol(default_participant("alice", Role.INVESTOR))
    return store


def test_settlement_and_brokerage_have_a_certified_encryption_key_others_do_not(keys: KeyStore) -> None:
    for who in ("settlement", "brokerage"):
        identity = keys.load_identity(who)
        assert identity.decryption_key is not None
        assert encryption_key_of(identity.certificate) == identity.decryption_key.public_key()
        assert (keys.participant_dir(who) / "encryption.key").stat().st_mode & 0o777 == 0o600
    for who in ("issuer", "alice"):
        assert keys.load_identity(who).decryption_key is None
        assert encryption_key_of(keys.load_identity(who).certificate) is None


def test_only_the_recipient_opens_what_was_sealed_to_it(keys: KeyStore) -> None:
    settlement = keys.load_identity("settlement")
    sealed = seal_for(trust_store(keys), "settlement", "alice-cash", ACCOUNT_INQUIRY_ACCOUNT)
    assert "alice-cash" not in sealed
    assert open_box(settlement.decryption_key, sealed, ACCOUNT_INQUIRY_ACCOUNT) == "alice-cash"  # type: ignore[arg-type]
    brokerage = keys.load_identity("brokerage")
    with pytest.raises(InputRejected) as refused:
        open_box(brokerage.decryption_key, sealed, ACCOUNT_INQUIRY_ACCOUNT)  # type: ignore[arg-type]
    assert refused.value.reason is Reason.SEALED_FIELD_INVALID


def test_a_sealed_value_cannot_be_moved_to_another_field_or_altered(keys: KeyStore) -> None:
    brokerage = keys.load_identity("brokerage").decryption_key
    assert brokerage is not None
    sealed = seal_for(trust_store(keys), "brokerage", "2468", CUSTOMER_PIN)
    with pytest.raises(InputRejected):
        open_box(brokerage, sealed, ACCOUNT_INQUIRY_ACCOUNT)
    middle = len(sealed) // 2  # not the last characters: base64 padding bits may decode the same
    flipped = sealed[:middle] + ("A" if sealed[middle] != "A" else "B") + sealed[middle + 1 :]
    with pytest.raises(InputRejected):
        open_box(brokerage, flipped, CUSTOMER_PIN)
    with pytest.raises(InputRejected):
        open_box(brokerage, "ks1.%%%", CUSTOMER_PIN)


def test_every_seal_is_different_so_equal_secrets_do_not_show(keys: KeyStore) -> None:
    key = X25519PrivateKey.generate()
    one, two = seal_to(key.public_key(), "2468", CUSTOMER_PIN), seal_to(key.public_key(), "2468", CUSTOMER_PIN)
    assert one != two
    assert open_box(key, one, CUSTOMER_PIN) == open_box(key, two, CUSTOMER_PIN) == "2468"


def test_sealing_to_a_participant_without_an_encryption_key_fails_clearly(keys: KeyStore) -> None:
    with pytest.raises(PkiError, match="no certified encryption key for issuer"):
        seal_for(trust_store(keys), "issuer", "x", CUSTOMER_PIN)


def test_a_renewed_settlement_certificate_carries_its_new_encryption_key(keys: KeyStore) -> None:
    old = keys.load_identity("settlement")
    new, _ = keys.enrol(old.participant, renew=True)
    assert new.decryption_key is not None and old.decryption_key is not None
    assert encryption_key_of(new.certificate) == new.decryption_key.public_key()
    assert new.decryption_key.public_key() != old.decryption_key.public_key()
    assert keys.load_identity("settlement").decryption_key.public_key() == new.decryption_key.public_key()  # type: ignore[union-attr]


def test_enrol_all_upgrades_a_settlement_certificate_issued_without_an_encryption_key(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from broker.pki import write_certificate, write_private_key

    store = KeyStore(tmp_path)
    store.init_ca()
    participant = default_participant("settlement", Role.SETTLEMENT)
    key = Ed25519PrivateKey.generate()
    write_private_key(store.key_path("settlement"), key)
    write_certificate(store.certificate_path("settlement"), store.load_ca().issue(participant, key.public_key()))
    assert store.load_identity("settlement").decryption_key is None
    upgraded, created = store.enrol(participant)
    assert created and upgraded.decryption_key is not None
    assert store.enrol(participant)[1] is False  # and kept from then on


def test_a_box_opened_once_is_kept_for_its_key_and_context_only() -> None:
    """Stop 29: settlement opened the same two boxes for every trade. The kept text is given back
    for the very key, box and context that opened it, and for nothing else."""
    kept = Opened()
    settlement, other = X25519PrivateKey.generate(), X25519PrivateKey.generate()
    sealed = seal_to(settlement.public_key(), "alice-cash", ACCOUNT_INQUIRY_ACCOUNT)
    assert open_box(settlement, sealed, ACCOUNT_INQUIRY_ACCOUNT, kept) == "alice-cash"
    recipient = settlement.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    assert kept.get(recipient, sealed, ACCOUNT_INQUIRY_ACCOUNT) == "alice-cash"
    assert open_box(settlement, sealed, ACCOUNT_INQUIRY_ACCOUNT, kept) == "alice-cash"
    with pytest.raises(InputRejected):
        open_box(other, sealed, ACCOUNT_INQUIRY_ACCOUNT, kept)
    with pytest.raises(InputRejected):
        open_box(settlement, sealed, CUSTOMER_PIN, kept)


def test_a_box_that_does_not_open_is_not_kept() -> None:
    kept = Opened()
    settlement = X25519PrivateKey.generate()
    sealed = seal_to(X25519PrivateKey.generate().public_key(), "alice-cash", ACCOUNT_INQUIRY_ACCOUNT)
    for _ in range(2):
        with pytest.raises(InputRejected):
            open_box(settlement, sealed, ACCOUNT_INQUIRY_ACCOUNT, kept)
    assert len(kept) == 0


def test_a_box_opened_without_a_keeper_leaves_nothing_behind() -> None:
    """A customer's PIN is kept only as a salted hash (docs/security.md): the brokerage opens it
    with no keeper, and only settlement's order accounts are kept (found by review)."""
    brokerage = X25519PrivateKey.generate()
    pin = seal_to(brokerage.public_key(), "2468", CUSTOMER_PIN)
    before = len(sealed_accounts.OPENED)
    ctx = SimpleNamespace(identity=SimpleNamespace(decryption_key=brokerage))  # all _pin reads of a context
    assert brokerage_app._pin(pin, ctx) == "2468"  # type: ignore[arg-type]
    assert len(sealed_accounts.OPENED) == before


def test_the_boxes_kept_are_bounded_the_oldest_going_first() -> None:
    kept = Opened(limit=2)
    for n in range(3):
        kept.keep(b"key", f"box-{n}", "context", f"text-{n}")
    assert len(kept) == 2
    assert kept.get(b"key", "box-0", "context") is None
    assert kept.get(b"key", "box-2", "context") == "text-2"
