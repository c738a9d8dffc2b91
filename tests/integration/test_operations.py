"""What operators see and do: status, dead letters with their reasons, and replay."""

from __future__ import annotations

from typing import Any

import aio_pika
import pytest

from agents.investor.app import AGENT as INVESTOR
from agents.issuer.app import AGENT as ISSUER
from broker import ops
from broker.consumer import Outcome
from broker.context import Context
from broker.errors import Transient
from broker.runtime import AgentDefinition, AgentRuntime, started
from broker.settings import Settings
from broker.topology import Names, TopologyError, check_ready
from schemas.identity import Role
from schemas.issuance import CertificateIssuanceRequest
from tests import support


async def test_dead_letters_are_listed_with_their_reason_and_replayed_once_fixed(settings: Settings, keys: Any) -> None:
    async def down(request: CertificateIssuanceRequest, ctx: Context) -> None:
        raise Transient("register database is read-only")

    sealed = support.sealed_request(keys.load_identity("alice"))
    message_id = str(sealed.envelope.message_id)
    broken = AgentDefinition("issuer", Role.ISSUER, {CertificateIssuanceRequest: down})
    async with started([broken], settings) as rt:
        await support.open_offering(rt["issuer"])
        await support.publish_sealed(settings, sealed)
        await rt["issuer"].outcomes.wait(lambda s: s.outcome is Outcome.DEAD_LETTERED)

    letters = await ops.dead_letters(settings, "issuer")
    assert [(d.message_id, d.reason, d.kind) for d in letters] == [(message_id, "retries_exhausted", "transient")]
    assert "read-only" in letters[0].detail and letters[0].body == sealed.body
    again = await ops.dead_letters(settings, "issuer")  # listing does not consume
    assert [d.message_id for d in again] == [message_id]

    async with started([ISSUER], settings) as rt:
        assert await ops.replay(settings, "issuer", message_id)
        settled = await rt["issuer"].outcomes.wait_for(message_id)
        assert settled.outcome is Outcome.PROCESSED
        assert len(await support.rows(rt["issuer"], "SELECT * FROM register")) == 1
    assert await ops.dead_letters(settings, "issuer") == []
    assert not await ops.replay(settings, "issuer", message_id)


async def test_status_counts_dead_letters_and_outbox_backlog(settings: Settings, keys: Any) -> None:
    async with started([ISSUER], settings) as rt:
        await support.publish(settings, b"not signed", {}, "issuer")
        await rt["issuer"].outcomes.wait(lambda s: s.outcome is Outcome.DEAD_LETTERED)
    async with AgentRuntime(INVESTOR, settings) as investor:  # opened, relay not running
        await support.request(investor, "alice")
        status = {s.agent: s for s in await ops.status(settings, ["issuer", "investor"])}
    assert status["issuer"].dead_letters == 1 and status["issuer"].consumers == 0
    assert status["investor"].outbox_pending == 1 and status["investor"].outbox_lag is not None


async def test_a_queue_never_declared_is_left_out_at_once_when_missing_is_ok(settings: Settings) -> None:
    """``kabuto status`` of agents that never started: their queues are not there, and are left
    out at once (before stop 44 it waited the whole 2 s for each, 36 s for six agents); a look
    that needs the queue (an agent's start-up check) still waits for it, and says which."""
    names = Names(settings.namespace)
    missing = [names.inbox("issuer"), names.inbox("exchange")]
    connection = await aio_pika.connect(settings.amqp_url)
    try:
        assert await check_ready(connection, missing, timeout=60, missing_ok=True) == {}
        with pytest.raises(TopologyError, match=missing[0]):
            await check_ready(connection, missing, timeout=0.5)
    finally:
        await connection.close()
    statuses = await ops.status(settings, ["issuer", "exchange"])
    assert [(s.agent, s.consumers) for s in statuses] == [("issuer", None), ("exchange", None)]
