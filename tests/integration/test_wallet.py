"""The investor's wallet keeps only certificates it asked for, genuine and in date (R-001-18)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from uuid import uuid4

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.envelope import seal
from broker.pki import Identity, KeyStore, default_participant
from broker.settings import Settings
from broker.stock_certificates import CertificateInvalid, sign_certificate, verify_certificate
from broker.trust import TrustStore
from schemas.identity import Role
from schemas.issuance import CertificateIssued
from tests import support


def issuer_valid_between(keys: KeyStore, start: datetime, end: datetime) -> Identity:
    key = Ed25519PrivateKey.generate()
    participant = default_participant("issuer", Role.ISSUER)
    certificate = keys.load_ca().issue(participant, key.public_key(), not_before=start, not_after=end)
    return Identity(participant, key, certificate)


def test_certificate_stays_valid_after_the_issuers_identity_certificate_expires(keys: KeyStore) -> None:
    now = datetime.now(UTC)
    old_issuer = issuer_valid_between(keys, now - timedelta(days=730), now - timedelta(days=365))
    issued = support.stock_certificate(issued_on=date.today() - timedelta(days=500))
    signed = sign_certificate(old_issuer, issued)
    assert verify_certificate(signed, TrustStore(keys.ca_certificate())) == issued


def test_certificate_dated_after_the_issuers_identity_certificate_expired_is_refused(keys: KeyStore) -> None:
    now = datetime.now(UTC)
    old_issuer = issuer_valid_between(keys, now - timedelta(days=730), now - timedelta(days=365))
    signed = sign_certificate(old_issuer, support.stock_certificate())  # dated today
    with pytest.raises(CertificateInvalid, match="outside the validity"):
        verify_certificate(signed, TrustStore(keys.ca_certificate()))


def test_certificate_signed_by_a_non_issuer_is_refused(keys: KeyStore) -> None:
    exchange = keys.load_identity("exchange")
    content = support.stock_certificate(issuing_agent_id="exchange")
    with pytest.raises(CertificateInvalid, match="not an issuing agent"):
        verify_certificate(sign_certificate(exchange, content), TrustStore(keys.ca_certificate()))


async def deliver(settings: Settings, keys: KeyStore, request_id: object, **changes: object) -> str:
    issuer = keys.load_identity("issuer")
    signed = sign_certificate(issuer, support.stock_certificate(**changes))
    sealed = seal(
        issuer,
        CertificateIssued(request_id=request_id, certificate=signed),
        recipient="alice",
        now=datetime.now(UTC),
    )
    await support.publish_sealed(settings, sealed)
    return str(sealed.envelope.message_id)


async def test_unsolicited_certificate_is_refused_and_not_kept(settings: Settings, keys: KeyStore) -> None:
    async with support.agents(settings, "investor") as rt:
        await deliver(settings, keys, uuid4())
        letter = await support.dead_letter(settings, "investor")
        assert letter.headers["x-kabuto-reason"] == "unsolicited"
        assert await support.rows(rt["investor"], "SELECT * FROM wallet") == []


async def test_certificate_that_does_not_answer_the_request_is_refused(settings: Settings, keys: KeyStore) -> None:
    async with support.agents(settings, "investor") as rt:
        investor = rt["investor"]
        request_id = await support.request(investor, "alice", shares=500)  # not published: no relay run needed
        await deliver(settings, keys, request_id, shares=5_000)
        letter = await support.dead_letter(settings, "investor")
        assert letter.headers["x-kabuto-reason"] == "unsolicited"
        assert await support.rows(investor, "SELECT * FROM wallet") == []
        assert await support.rows(investor, "SELECT status FROM requests") == [{"status": "sent"}]


async def test_expired_certificate_is_refused_at_delivery(settings: Settings, keys: KeyStore) -> None:
    async with support.agents(settings, "investor") as rt:
        request_id = await support.request(rt["investor"], "alice", shares=500)
        yesterday = date.today() - timedelta(days=1)
        await deliver(settings, keys, request_id, expires_on=yesterday)
        letter = await support.dead_letter(settings, "investor")
        assert letter.headers["x-kabuto-reason"] == "stock_certificate_invalid"
        assert "expired" in str(letter.headers["x-kabuto-detail"])
        assert await support.rows(rt["investor"], "SELECT * FROM wallet") == []
