"""Flow 1 end to end (seed 001 Phase 1, R-001-14..19) through the real broker and database."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import aio_pika

from agents.exchange import repo as exchange_repo
from agents.investor import repo as investor_repo
from agents.investor.app import verified_wallet
from broker.envelope import Freshness, open_event
from broker.pki import KeyStore
from broker.settings import Settings
from broker.stock_certificates import CertificateInvalid
from broker.topology import Names
from broker.trust import TrustStore
from schemas.issuance import CertificateIssuanceCompleted
from tests import support


async def test_investor_receives_a_signed_certificate_and_the_exchange_lists_it(settings: Settings) -> None:
    async with support.agents(settings, "investor", "issuer", "exchange") as rt:
        investor, issuer, exchange = rt["investor"], rt["issuer"], rt["exchange"]
        offer = await support.open_offering(issuer)

        request_id = await support.request(investor, "alice", shares=500)
        await investor.outcomes.reply("certificate.issued", request_id)
        await exchange.outcomes.reply("certid_list.updated", request_id)

        wallet = await investor.command("alice", verified_wallet)
        assert len(wallet) == 1 and not isinstance(wallet[0], CertificateInvalid)
        certificate = wallet[0]
        assert (certificate.holder_user_id, certificate.shares, certificate.issue_code) == (
            "alice",
            500,
            offer.issue_code,
        )
        assert certificate.company_name == offer.company_name
        assert certificate.certificate_number == f"{offer.issue_code}-00000001"

        register = await support.rows(
            issuer, "SELECT cert_id, holder_user_id, shares, status, dividend_method FROM register"
        )
        assert register == [
            {
                "cert_id": certificate.cert_id,
                "holder_user_id": "alice",
                "shares": 500,
                "status": "valid",
                "dividend_method": "bank_transfer",
            }
        ]
        remaining = await support.rows(issuer, "SELECT shares_remaining FROM offerings")
        assert remaining == [{"shares_remaining": offer.shares_offered - 500}]

        listed = await exchange.query(lambda c: exchange_repo.certid_list(c, offer.issue_code))
        assert [(e.cert_id, e.user_id, e.shares, e.status) for e in listed] == [
            (certificate.cert_id, "alice", 500, "valid")
        ]
        requests = await investor.query(lambda c: investor_repo.requests(c, "alice"))
        assert [(r.request_id, r.status, r.cert_id) for r in requests] == [
            (request_id, "fulfilled", certificate.cert_id)
        ]


async def test_integrator_receives_a_signed_issuance_event(settings: Settings, keys: KeyStore) -> None:
    names = Names(settings.namespace)
    async with support.agents(settings, "investor", "issuer", "exchange") as rt:
        # An integrator binds its own queue to the events exchange by a stable routing key.
        connection = await aio_pika.connect(settings.amqp_url)
        channel = await connection.channel()
        queue = await channel.declare_queue(f"{names.namespace}.integrator", auto_delete=True)
        await queue.bind(names.events, routing_key="certificate.issuance.*")
        await support.open_offering(rt["issuer"])
        request_id = await support.request(rt["investor"], "alice", shares=300)
        async with asyncio.timeout(10), queue.iterator() as events:
            async for delivery in events:
                await delivery.ack()
                break
        await connection.close()

    trust = TrustStore(keys.ca_certificate())
    event = open_event(
        delivery.body,
        delivery.headers,
        trust=trust,
        freshness=Freshness(timedelta(hours=1), timedelta(seconds=30)),
        now=datetime.now(UTC),
    )
    assert isinstance(event.message, CertificateIssuanceCompleted)
    assert (event.message.holder_user_id, event.message.shares) == ("alice", 300)
    assert event.envelope.correlation_id == request_id
    assert event.sender.user_id == "issuer"
    assert delivery.routing_key == "certificate.issuance.completed"


async def test_refused_request_is_answered_with_a_reason_and_registers_nothing(settings: Settings) -> None:
    async with support.agents(settings, "investor", "issuer", "exchange") as rt:
        investor, issuer = rt["investor"], rt["issuer"]
        await support.open_offering(issuer)

        request_id = await support.request(investor, "bob", shares=50_000)  # 50,000,000 JPY > 10,000,000
        await investor.outcomes.reply("certificate.issuance.refused", request_id)

        requests = await investor.query(lambda c: investor_repo.requests(c, "bob"))
        assert [(r.status, r.reason) for r in requests] == [("refused", "account_usage_limit_exceeded")]
        assert await support.rows(issuer, "SELECT * FROM register") == []
        assert await support.rows(issuer, "SELECT shares_remaining FROM offerings") == [{"shares_remaining": 100_000}]
        assert await support.rows(issuer, "SELECT outcome, reason FROM issuance_requests") == [
            {"outcome": "refused", "reason": "account_usage_limit_exceeded"}
        ]
