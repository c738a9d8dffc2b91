"""Accounts sealed to settlement (R-001-06, R-001-44): contexts, the v1 transition and its cut-over."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from agents.exchange.instructions import sealed_account
from broker import clear_accounts
from broker.consumer import check_cut_over
from broker.errors import InputRejected, Reason
from broker.pki import KeyStore, default_participant
from broker.revocation import trust_store
from broker.sealed_box import open_box, seal_account
from broker.trust import TrustStore
from schemas import catalogue
from schemas.identity import Role
from schemas.issuance import CertificateIssuanceRequestV1, DividendDeliveryV1, DividendMethod
from schemas.sealed import dividend_account, order_account
from schemas.trading import OrderTerms, OrderType, Side, SubmitOrderV1

NOW = datetime(2027, 4, 1, tzinfo=UTC)


@pytest.fixture
def keys(tmp_path: Path) -> KeyStore:
    store = KeyStore(tmp_path)
    store.init_ca()
    store.enrol(default_participant("settlement", Role.SETTLEMENT))
    store.enrol(default_participant("bob", Role.INVESTOR))
    return store


def _key(keys: KeyStore) -> X25519PrivateKey:
    key = keys.load_identity("settlement").decryption_key
    assert key is not None
    return key


def test_an_order_account_opens_only_for_the_party_it_was_sealed_for(keys: KeyStore) -> None:
    box = seal_account(trust_store(keys), "bob", "bob-cash")
    assert open_box(_key(keys), box, order_account("bob")) == "bob-cash"
    with pytest.raises(InputRejected) as moved:
        open_box(_key(keys), box, order_account("alice"))
    assert moved.value.reason is Reason.SEALED_FIELD_INVALID


def test_a_settlement_certificate_on_file_that_the_ca_did_not_issue_is_not_sealed_to(
    keys: KeyStore, tmp_path: Path
) -> None:
    other = KeyStore(tmp_path / "elsewhere")
    other.init_ca()
    impostor, _ = other.enrol(default_participant("settlement", Role.SETTLEMENT))
    with pytest.raises(Exception, match="not issued by the Kabuto CA"):
        seal_account(TrustStore(keys.ca_certificate(), [impostor.certificate]), "bob", "bob-cash")


def _clear_order() -> SubmitOrderV1:
    terms = OrderTerms(side=Side.BUY, order_type=OrderType.LIMIT, price=Decimal(1000), quantity=100)
    return SubmitOrderV1(
        client_order_id="b1", user_id="bob", issue_code="KBT", terms=terms, settlement_account="bob-cash"
    )


def test_a_version_1_order_is_sealed_on_receipt_and_keeps_everything_else(keys: KeyStore) -> None:
    clear = _clear_order()
    sealed = clear_accounts.sealed_order(trust_store(keys), clear)
    assert sealed.model_dump(exclude={"settlement_account"}) == clear.model_dump(exclude={"settlement_account"})
    assert open_box(_key(keys), sealed.settlement_account, order_account("bob")) == "bob-cash"


def test_a_version_1_subscription_has_its_dividend_account_sealed_for_its_holder(keys: KeyStore) -> None:
    request = CertificateIssuanceRequestV1(
        user_id="bob",
        holder_name="Bob",
        holder_address="Tokyo",
        issue_code="KBT",
        share_class="common",
        shares=100,
        dividend_delivery=DividendDeliveryV1(method=DividendMethod.BANK_TRANSFER, account="0001-234567"),
    )
    sealed = clear_accounts.sealed_issuance_request(trust_store(keys), request)
    assert sealed.dividend_delivery.method is DividendMethod.BANK_TRANSFER
    assert open_box(_key(keys), sealed.dividend_delivery.account, dividend_account("bob")) == "0001-234567"


def test_an_order_stored_in_clear_before_sealing_is_sealed_on_its_way_out(keys: KeyStore) -> None:
    trust = trust_store(keys)
    box = seal_account(trust, "bob", "bob-cash")
    assert sealed_account(trust, "bob", box) == box  # a box is forwarded as it is
    legacy = sealed_account(trust, "bob", "bob-cash")
    assert open_box(_key(keys), legacy, order_account("bob")) == "bob-cash"


def test_clear_account_versions_are_accepted_only_before_the_cut_over() -> None:
    spec = catalogue.lookup("order.submit", 1)
    assert spec is not None and spec.clear_accounts
    check_cut_over(spec, NOW + timedelta(seconds=1), NOW)  # inside the window
    for until in (None, NOW, NOW - timedelta(days=1)):
        with pytest.raises(InputRejected) as refused:
            check_cut_over(spec, until, NOW)
        assert refused.value.reason is Reason.CLEAR_ACCOUNT_REFUSED


def test_every_version_with_a_clear_account_has_a_sealed_successor() -> None:
    """R-001-06: 32, 33, 38 (the instruction and its cover), 39 and settlement's notice."""
    flagged = {(s.type, s.version) for s in catalogue.specs() if s.clear_accounts}
    assert flagged == {
        ("certificate.issuance.request", 1),
        ("certificate.request_after_transfer", 1),
        ("order.submit", 1),
        ("settlement.cover.request", 1),
        ("settlement.instruction", 1),
        ("settlement.notice", 1),
        ("settlement.request", 1),  # retired with DvP: nothing sends or handles it
    }
    for type_, _ in flagged - {("settlement.request", 1)}:
        successor = catalogue.lookup(type_, 2)
        assert successor is not None and not successor.clear_accounts
