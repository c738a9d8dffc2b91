"""What an integrator runs on an event: ``open_event`` refuses forgeries (issue 9).

Only a participant whose role the catalogue lets publish an event type can publish it; an
event must be addressed to no one, fresh, signed over its bytes, by a certificate of the
Kabuto CA.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.envelope import Freshness, Opened, Sealed, open_event, seal
from broker.errors import Reason, Rejected
from broker.pki import Identity, KeyStore, create_ca, default_participant
from broker.trust import TrustStore
from schemas.identity import Role
from schemas.trading import CancelOrder, TradeExecuted

NOW = datetime.now(UTC)
FRESH = Freshness(max_age=timedelta(hours=1), max_skew=timedelta(seconds=30))
TRADE = TradeExecuted(matching_number=7, issue_code="KBT", price=Decimal(1000), quantity=100, amount=Decimal(100_000))


def check(keys: KeyStore, sealed: Sealed, *, now: datetime = NOW) -> Opened:
    return open_event(sealed.body, sealed.headers, trust=TrustStore(keys.ca_certificate()), freshness=FRESH, now=now)


def reason(keys: KeyStore, sealed: Sealed, *, now: datetime = NOW) -> Reason:
    with pytest.raises(Rejected) as refused:
        check(keys, sealed, now=now)
    return refused.value.reason


def test_an_event_from_the_exchange_is_accepted(keys: KeyStore) -> None:
    opened = check(keys, seal(keys.load_identity("exchange"), TRADE, recipient=None, now=NOW))
    assert opened.message == TRADE and opened.sender.role is Role.EXCHANGE


def test_an_event_forged_by_an_investor_is_refused(keys: KeyStore) -> None:
    forged = seal(keys.load_identity("alice"), TRADE, recipient=None, now=NOW)
    assert reason(keys, forged) is Reason.SENDER_NOT_AUTHORIZED


def test_an_event_from_an_agent_of_another_role_is_refused(keys: KeyStore) -> None:
    assert reason(keys, seal(keys.load_identity("settlement"), TRADE, recipient=None, now=NOW)) is (
        Reason.SENDER_NOT_AUTHORIZED
    )


def test_a_point_to_point_message_is_not_an_event(keys: KeyStore) -> None:
    cancel = CancelOrder(client_order_id="c1")
    assert reason(keys, seal(keys.load_identity("alice"), cancel, recipient=None, now=NOW)) is (
        Reason.SENDER_NOT_AUTHORIZED
    )


def test_an_event_addressed_to_someone_is_misrouted(keys: KeyStore) -> None:
    assert reason(keys, seal(keys.load_identity("exchange"), TRADE, recipient="alice", now=NOW)) is Reason.MISROUTED


def test_a_stale_or_future_event_is_refused(keys: KeyStore) -> None:
    old = seal(keys.load_identity("exchange"), TRADE, recipient=None, now=NOW - timedelta(hours=2))
    assert reason(keys, old) is Reason.STALE_MESSAGE
    future = seal(keys.load_identity("exchange"), TRADE, recipient=None, now=NOW + timedelta(minutes=5))
    assert reason(keys, future) is Reason.STALE_MESSAGE


def test_an_altered_event_fails_its_signature(keys: KeyStore) -> None:
    sealed = seal(keys.load_identity("exchange"), TRADE, recipient=None, now=NOW)
    altered = Sealed(sealed.envelope, sealed.body.replace(b'"quantity":100', b'"quantity":900'), sealed.headers)
    assert reason(keys, altered) is Reason.SIGNATURE_INVALID


def test_an_event_signed_under_another_ca_is_untrusted(keys: KeyStore) -> None:
    key = Ed25519PrivateKey.generate()
    participant = default_participant("exchange", Role.EXCHANGE)
    impostor = Identity(participant, key, create_ca("Rogue CA").issue(participant, key.public_key()))
    assert reason(keys, seal(impostor, TRADE, recipient=None, now=NOW)) is Reason.CERTIFICATE_UNTRUSTED
