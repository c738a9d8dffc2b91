"""Every bad delivery is dead-lettered with its reason, logged, and changes no state.

Each test runs the real agent against the real broker and database, publishes one bad
delivery straight to the messages exchange, as any client on the network could, and checks
the three things a rejection must do: (a) the delivery reaches the agent's dead-letter queue
byte for byte, with its reason and kind; (b) no table changed; (c) a security or input event
was logged with that reason.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from aio_pika.abc import AbstractIncomingMessage
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from structlog.testing import capture_logs
from structlog.typing import EventDict

from broker.consumer import Outcome
from broker.envelope import Sealed, body_digest, seal, sign_headers
from broker.errors import Reason
from broker.pki import Identity, KeyStore, default_participant
from broker.runtime import AgentRuntime
from broker.settings import Settings
from broker.stock_certificates import CertificateInvalid, sign_certificate, verify_certificate
from broker.topology import Names
from broker.trust import TrustStore
from schemas.certificates import (
    SignedCertificate,
)
from schemas.envelope import CERTIFICATE_HEADER, SIGNATURE_HEADER
from schemas.identity import Role
from schemas.issuance import CertificateIssued
from tests import support

ISSUER_TABLES = ("register", "issuance_requests", "inbox", "outbox")
INVESTOR_TABLES = ("wallet", "requests", "inbox", "outbox")


# --- publishing one bad delivery and checking what became of it -------------------------


async def publish_and_dead_letter(
    settings: Settings,
    body: bytes,
    headers: Mapping[str, Any],
    *,
    agent: str = "issuer",
    routing_key: str = "issuer",
) -> tuple[AbstractIncomingMessage, list[EventDict]]:
    """Publish one delivery and wait for its dead letter, capturing what was logged meanwhile."""
    with capture_logs() as logged:
        await support.publish(settings, body, headers, routing_key)
        dead = await support.dead_letter(settings, agent)
    return dead, logged


def assert_rejected(
    dead: AbstractIncomingMessage, logged: list[EventDict], body: bytes, reason: Reason, kind: str
) -> None:
    assert dead.body == body
    assert dead.headers["x-kabuto-reason"] == reason.value
    assert dead.headers["x-kabuto-kind"] == kind
    event = "security_event" if kind == "security" else "input_rejected"
    assert [e for e in logged if e["event"] == event and e.get("reason") == reason.value], logged


async def assert_untouched(runtime: AgentRuntime, tables: tuple[str, ...]) -> None:
    for table in tables:
        assert await support.rows(runtime, f"SELECT * FROM {table}") == [], table


async def shares_remaining(issuer: AgentRuntime) -> list[dict[str, Any]]:
    return await support.rows(issuer, "SELECT shares_remaining FROM offerings")


async def expect_issuer_rejects(
    settings: Settings, body: bytes, headers: Mapping[str, Any], reason: Reason, kind: str
) -> None:
    """The whole story for one bad delivery to the issuer: (a), (b) and (c)."""
    async with support.agents(settings, "issuer") as rt:
        issuer = rt["issuer"]
        offer = await support.open_offering(issuer)
        dead, logged = await publish_and_dead_letter(settings, body, headers)
        assert_rejected(dead, logged, body, reason, kind)
        await assert_untouched(issuer, ISSUER_TABLES)
        assert await shares_remaining(issuer) == [{"shares_remaining": offer.shares_remaining}]


# --- building bad deliveries -------------------------------------------------------------


def alice(keys: KeyStore) -> Identity:
    return keys.load_identity("alice")


def resigned(identity: Identity, change: Callable[[dict[str, Any]], None]) -> tuple[bytes, dict[str, str]]:
    """A valid request's envelope, changed by hand, then correctly signed again."""
    envelope = json.loads(support.sealed_request(identity).body)
    change(envelope)
    body = json.dumps(envelope).encode()
    return body, sign_headers(identity, body)


def foreign_identity(root: Path, user_id: str = "alice") -> Identity:
    """An identity enrolled by another CA, which the Kabuto trust store has never seen."""
    store = KeyStore(root)
    store.init_ca()
    identity, _ = store.enrol(default_participant(user_id, Role.INVESTOR))
    return identity


def sealed_at(identity: Identity, now: datetime) -> Sealed:
    return seal(identity, support.issuance_request(identity.user_id), recipient="issuer", now=now)


# --- input rejections --------------------------------------------------------------------


async def test_malformed_json_is_dead_lettered_as_malformed_json(settings: Settings, keys: KeyStore) -> None:
    body = b'{"message_id": '
    await expect_issuer_rejects(settings, body, sign_headers(alice(keys), body), Reason.MALFORMED_JSON, "input")


async def test_unknown_message_type_is_dead_lettered_as_unknown_message_type(
    settings: Settings, keys: KeyStore
) -> None:
    body, headers = resigned(alice(keys), lambda env: env.update(type="certificate.teleport"))
    await expect_issuer_rejects(settings, body, headers, Reason.UNKNOWN_MESSAGE_TYPE, "input")


async def test_payload_failing_its_schema_is_dead_lettered_as_schema_violation(
    settings: Settings, keys: KeyStore
) -> None:
    body, headers = resigned(alice(keys), lambda env: env["payload"].update(shares=-5))
    await expect_issuer_rejects(settings, body, headers, Reason.SCHEMA_VIOLATION, "input")


# --- security rejections -----------------------------------------------------------------


async def test_signature_over_other_bytes_is_dead_lettered_as_signature_invalid(
    settings: Settings, keys: KeyStore
) -> None:
    sealed = support.sealed_request(alice(keys))
    forged = base64.b64encode(alice(keys).sign(b"some other bytes")).decode()
    headers = {**sealed.headers, SIGNATURE_HEADER: forged}
    await expect_issuer_rejects(settings, sealed.body, headers, Reason.SIGNATURE_INVALID, "security")


async def test_tampered_body_is_dead_lettered_as_signature_invalid(settings: Settings, keys: KeyStore) -> None:
    sealed = support.sealed_request(alice(keys), shares=500)
    tampered = sealed.body.replace(b'"shares":500', b'"shares":900')
    assert tampered != sealed.body
    await expect_issuer_rejects(settings, tampered, sealed.headers, Reason.SIGNATURE_INVALID, "security")


async def test_signer_never_seen_without_attached_certificate_is_dead_lettered_as_unknown_signer(
    settings: Settings, tmp_path: Path
) -> None:
    sealed = sealed_at(foreign_identity(tmp_path / "elsewhere"), datetime.now(UTC))
    headers = {k: v for k, v in sealed.headers.items() if k != CERTIFICATE_HEADER}
    await expect_issuer_rejects(settings, sealed.body, headers, Reason.UNKNOWN_SIGNER, "security")


async def test_certificate_from_a_rogue_ca_is_dead_lettered_as_certificate_untrusted(
    settings: Settings, tmp_path: Path
) -> None:
    sealed = sealed_at(foreign_identity(tmp_path / "rogue"), datetime.now(UTC))
    await expect_issuer_rejects(settings, sealed.body, sealed.headers, Reason.CERTIFICATE_UNTRUSTED, "security")


async def test_expired_certificate_is_dead_lettered_as_certificate_expired(settings: Settings, keys: KeyStore) -> None:
    now = datetime.now(UTC)
    participant = default_participant("alice", Role.INVESTOR)
    key = Ed25519PrivateKey.generate()
    certificate = keys.load_ca().issue(
        participant, key.public_key(), not_before=now - timedelta(days=30), not_after=now - timedelta(days=1)
    )
    sealed = sealed_at(Identity(participant, key, certificate), now)
    await expect_issuer_rejects(settings, sealed.body, sealed.headers, Reason.CERTIFICATE_EXPIRED, "security")


async def test_request_from_a_role_not_allowed_to_send_it_is_dead_lettered_as_sender_not_authorized(
    settings: Settings, keys: KeyStore
) -> None:
    sealed = support.sealed_request(keys.load_identity("exchange"))
    await expect_issuer_rejects(settings, sealed.body, sealed.headers, Reason.SENDER_NOT_AUTHORIZED, "security")


@pytest.mark.parametrize(
    "offset", [timedelta(days=-2), timedelta(minutes=10)], ids=["two_days_old", "ten_minutes_ahead"]
)
async def test_message_outside_the_freshness_window_is_dead_lettered_as_stale_message(
    settings: Settings, keys: KeyStore, offset: timedelta
) -> None:
    sealed = sealed_at(alice(keys), datetime.now(UTC) + offset)
    await expect_issuer_rejects(settings, sealed.body, sealed.headers, Reason.STALE_MESSAGE, "security")


# --- replays and redeliveries ------------------------------------------------------------


async def test_other_content_under_a_used_message_id_is_dead_lettered_as_replayed_message_id(
    settings: Settings, keys: KeyStore
) -> None:
    async with support.agents(settings, "issuer") as rt:
        issuer = rt["issuer"]
        offer = await support.open_offering(issuer)
        first = support.sealed_request(alice(keys), shares=500)
        await support.publish_sealed(settings, first)
        assert (await issuer.outcomes.wait_for(first.envelope.message_id)).outcome is Outcome.PROCESSED
        emitted = await support.rows(issuer, "SELECT message_id FROM outbox_messages ORDER BY seq, place")

        replay = support.replayed_request(alice(keys), first, shares=600)
        dead, logged = await publish_and_dead_letter(settings, replay.body, replay.headers)

        assert_rejected(dead, logged, replay.body, Reason.REPLAYED_MESSAGE_ID, "security")
        # Exactly the first request's state, not a second one.
        assert await support.rows(issuer, "SELECT holder_user_id, shares FROM register") == [
            {"holder_user_id": "alice", "shares": 500}
        ]
        assert await support.rows(issuer, "SELECT request_id, shares FROM issuance_requests") == [
            {"request_id": first.envelope.message_id, "shares": 500}
        ]
        assert await support.rows(issuer, "SELECT message_id, digest FROM inbox") == [
            {"message_id": first.envelope.message_id, "digest": first.digest}
        ]
        assert await support.rows(issuer, "SELECT message_id FROM outbox_messages ORDER BY seq, place") == emitted
        assert await shares_remaining(issuer) == [{"shares_remaining": offer.shares_remaining - 500}]


async def test_the_same_bytes_delivered_again_are_absorbed_not_treated_as_a_replay(
    settings: Settings, keys: KeyStore
) -> None:
    async with support.agents(settings, "issuer") as rt:
        issuer = rt["issuer"]
        await support.open_offering(issuer)
        sealed = support.sealed_request(alice(keys))
        await support.publish_sealed(settings, sealed)
        await support.publish_sealed(settings, sealed)

        key = str(sealed.envelope.message_id)
        first = await issuer.outcomes.wait_for(key)
        second = await issuer.outcomes.wait(lambda s: s.message_id == key and s is not first)
        assert (first.outcome, second.outcome) == (Outcome.PROCESSED, Outcome.DUPLICATE)
        assert await support.queue_depth(settings, Names(settings.namespace).dead_letters("issuer")) == 0
        assert await support.rows(issuer, "SELECT count(*) AS n FROM register") == [{"n": 1}]
        assert await support.rows(issuer, "SELECT digest FROM inbox") == [{"digest": body_digest(sealed.body)}]


# --- stock certificates ------------------------------------------------------------------


def altered(signed: SignedCertificate) -> SignedCertificate:
    """The same signature over content whose share count was changed."""
    content = signed.content.replace(b'"shares":500', b'"shares":900')
    assert content != signed.content
    return SignedCertificate(content=content, issuer_signature=signed.issuer_signature)


def test_verify_certificate_returns_the_genuine_certificate_and_refuses_altered_bytes(keys: KeyStore) -> None:
    trust = TrustStore(keys.ca_certificate())
    certificate = support.stock_certificate(shares=500)
    genuine = sign_certificate(keys.load_identity("issuer"), certificate)
    assert verify_certificate(genuine, trust) == certificate
    with pytest.raises(CertificateInvalid) as refused:
        verify_certificate(altered(genuine), trust)
    assert refused.value.reason is Reason.STOCK_CERTIFICATE_INVALID


async def test_altered_stock_certificate_is_dead_lettered_by_the_wallet_as_stock_certificate_invalid(
    settings: Settings, keys: KeyStore
) -> None:
    issuer = keys.load_identity("issuer")
    forged = altered(sign_certificate(issuer, support.stock_certificate(shares=500)))
    # The message signature is valid; only the certificate inside was altered.
    sealed = seal(
        issuer,
        CertificateIssued(request_id=uuid4(), certificate=forged),
        recipient="alice",
        now=datetime.now(UTC),
    )
    async with support.agents(settings, "investor") as rt:
        dead, logged = await publish_and_dead_letter(
            settings, sealed.body, sealed.headers, agent="investor", routing_key="alice"
        )
        assert_rejected(dead, logged, sealed.body, Reason.STOCK_CERTIFICATE_INVALID, "security")
        await assert_untouched(rt["investor"], INVESTOR_TABLES)
