"""Effects happen once: redelivery, duplicates and crashes at any point change nothing twice.

Each test drives the real consumer and relay against the real broker and database, and
stops them at the point a crash would, by not acking or by undoing the relay's mark.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import aio_pika
import asyncpg

from agents.investor.app import AGENT as AGENT_INVESTOR
from agents.issuer.app import AGENT as AGENT_ISSUER
from agents.issuer.app import on_issuance_request
from broker import relay_window
from broker.consumer import Outcome, Settled
from broker.context import Context
from broker.errors import Transient
from broker.runtime import AgentDefinition, AgentRuntime, running, started
from broker.settings import Settings
from broker.topology import Names
from schemas.identity import Role
from schemas.issuance import CertificateIssuanceRequest
from tests import support


def outcome_of(message_id: object, outcome: Outcome) -> Any:
    return lambda s: s.message_id == str(message_id) and s.outcome is outcome


async def issuer_state(issuer: AgentRuntime) -> tuple[int, int, int]:
    register = await support.rows(issuer, "SELECT count(*) AS n FROM register")
    outbox = await support.rows(issuer, "SELECT count(*) AS n FROM outbox")
    inbox = await support.rows(issuer, "SELECT count(*) AS n FROM inbox")
    return register[0]["n"], outbox[0]["n"], inbox[0]["n"]


async def test_the_same_message_delivered_twice_changes_state_once(settings: Settings, keys: Any) -> None:
    async with support.agents(settings, "issuer") as rt:
        issuer = rt["issuer"]
        await support.open_offering(issuer)
        sealed = support.sealed_request(keys.load_identity("alice"))
        await support.publish_sealed(settings, sealed)
        await support.publish_sealed(settings, sealed)
        first = await issuer.outcomes.wait(outcome_of(sealed.envelope.message_id, Outcome.PROCESSED))
        second = await issuer.outcomes.wait(outcome_of(sealed.envelope.message_id, Outcome.DUPLICATE))
        assert first.type == second.type == "certificate.issuance.request"
        # one register row; three messages emitted once (certificate, CertID list, event)
        assert await issuer_state(issuer) == (1, 3, 1)


async def test_redelivery_after_a_crash_between_commit_and_ack_changes_nothing(settings: Settings, keys: Any) -> None:
    async with AgentRuntime(AGENT_ISSUER, settings) as issuer:
        await support.open_offering(issuer)
        sealed = support.sealed_request(keys.load_identity("alice"))
        await support.publish_sealed(settings, sealed)

        # The consumer takes the delivery and commits, then "crashes" before the ack.
        connection = await aio_pika.connect(settings.amqp_url)
        channel = await connection.channel()
        queue = await channel.get_queue(Names(settings.namespace).inbox("issuer"))
        delivery = await queue.get(no_ack=False)
        settled = await issuer.consumer.settle(delivery)
        assert settled.outcome is Outcome.PROCESSED
        await connection.close()  # unacked: the broker redelivers it

        async with running(issuer):
            again = await issuer.outcomes.wait_for(sealed.envelope.message_id)
        assert again.outcome is Outcome.DUPLICATE
        assert await issuer_state(issuer) == (1, 3, 1)


async def test_relay_crash_after_publish_before_marking_sent_is_absorbed_downstream(
    settings: Settings,
) -> None:
    async with started([AGENT_ISSUER], settings) as rt, AgentRuntime(AGENT_INVESTOR, settings) as investor:
        issuer = rt["issuer"]
        await support.open_offering(issuer)
        request_id = await support.request(investor, "alice")

        assert await investor.relay.publish_pending() == 1  # published and confirmed …
        await investor.query(lambda c: c.execute("UPDATE outbox SET published_at = NULL"))  # … mark lost

        async with running(investor):  # the relay starts again and publishes the row again
            await issuer.outcomes.wait(outcome_of(request_id, Outcome.DUPLICATE))
            await investor.outcomes.reply("certificate.issued", request_id)
        assert await issuer_state(issuer) == (1, 3, 1)
        wallet = await support.rows(investor, "SELECT count(*) AS n FROM wallet")
        assert wallet == [{"n": 1}]


async def test_outbox_relay_wakes_on_commit_rather_than_polling(settings: Settings) -> None:
    patient = settings.with_(outbox_idle_poll=timedelta(hours=1))
    async with support.agents(patient, "investor", "issuer") as rt:
        await support.open_offering(rt["issuer"])
        request_id = await support.request(rt["investor"], "alice")
        # Without the NOTIFY on commit nothing would move for an hour.
        await rt["investor"].outcomes.reply("certificate.issued", request_id, timeout=10)


async def test_unroutable_message_is_parked_as_an_error_not_dropped(settings: Settings, keys: Any) -> None:
    async with AgentRuntime(AGENT_INVESTOR, settings) as investor:

        async def to_nobody(ctx: Context) -> None:
            ctx.emit(support.issuance_request("alice"), to="nobody")

        await investor.command("alice", to_nobody)
        assert await investor.relay.publish_pending() == 1
        parked = await support.rows(investor, "SELECT published_at, failed_at, error FROM outbox")
        assert parked[0]["published_at"] is None and parked[0]["failed_at"] is not None
        assert "unroutable" in parked[0]["error"] and "nobody" in parked[0]["error"]
        assert await investor.relay.publish_pending() == 0  # parked rows are not retried blindly


async def test_transient_failures_are_retried_with_back_off_then_succeed(settings: Settings, keys: Any) -> None:
    failures = {"left": 2}

    async def flaky(request: CertificateIssuanceRequest, ctx: Context) -> None:
        if failures["left"]:
            failures["left"] -= 1
            raise Transient("database briefly unavailable")
        await on_issuance_request(request, ctx)

    definition = AgentDefinition("issuer", Role.ISSUER, {CertificateIssuanceRequest: flaky})
    async with started([definition], settings) as rt:
        issuer = rt["issuer"]
        await support.open_offering(issuer)
        sealed = support.sealed_request(keys.load_identity("alice"))
        await support.publish_sealed(settings, sealed)
        await issuer.outcomes.wait(outcome_of(sealed.envelope.message_id, Outcome.PROCESSED))
        assert issuer.outcomes.count(Outcome.RETRY_SCHEDULED) == 2
        assert await issuer_state(issuer) == (1, 3, 1)


async def test_retries_are_capped_then_dead_lettered_with_their_reason(settings: Settings, keys: Any) -> None:
    async def broken(request: CertificateIssuanceRequest, ctx: Context) -> None:
        await on_issuance_request(request, ctx)  # its writes are rolled back by the failure
        raise Transient("settlement ledger unreachable")

    definition = AgentDefinition("issuer", Role.ISSUER, {CertificateIssuanceRequest: broken})
    async with started([definition], settings) as rt:
        issuer = rt["issuer"]
        await support.open_offering(issuer)
        sealed = support.sealed_request(keys.load_identity("alice"))
        await support.publish_sealed(settings, sealed)
        letter = await support.dead_letter(settings, "issuer")
        settled: Settled = await issuer.outcomes.wait(outcome_of(sealed.envelope.message_id, Outcome.DEAD_LETTERED))
        assert await issuer_state(issuer) == (0, 0, 0)
    assert settled.reason is not None and settled.reason.value == "retries_exhausted"
    assert letter.headers["x-kabuto-reason"] == "retries_exhausted"
    assert letter.headers["x-kabuto-kind"] == "transient"
    assert "settlement ledger unreachable" in str(letter.headers["x-kabuto-detail"])
    assert letter.body == sealed.body
    assert issuer.outcomes.count(Outcome.RETRY_SCHEDULED) == len(settings.retry_delays_ms)


async def test_the_relay_marks_published_rows_without_changing_how_the_agent_commits(settings: Settings) -> None:
    """The mark turns synchronous commit off for its own transaction only (broker.relay_window):
    inside a transaction the setting is off after it, and on the same session it is on again once
    that transaction ended (a pool's RESET ALL on release would hide a session-level change, so
    this looks at one connection directly)."""
    connection = await asyncpg.connect(settings.database_url, server_settings={"search_path": "investor"})
    try:
        await connection.execute(
            """INSERT INTO outbox (message_id, message_type, exchange, routing_key, body, headers)
               VALUES (gen_random_uuid(), 'probe', 'messages', 'nobody', '\\x00', '{}')"""
        )
        seq = await connection.fetchval("SELECT max(seq) FROM outbox")
        async with connection.transaction():
            await connection.execute(relay_window.MARK_PUBLISHED, [seq])
            assert await connection.fetchval("SHOW synchronous_commit") == "off"
        assert await connection.fetchval("SHOW synchronous_commit") == "on"
        await connection.execute(relay_window.MARK_PUBLISHED, [seq])  # alone, as the relay runs it
        assert await connection.fetchval("SHOW synchronous_commit") == "on"
        assert await connection.fetchval("SELECT published_at IS NOT NULL FROM outbox WHERE seq = $1", seq)
    finally:
        await connection.close()
