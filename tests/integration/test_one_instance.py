"""One running instance of each agent (broker/instance.py): a second one waits for the lease,
then stops, and never consumes; the lease passes on when the first instance goes.

Why it matters (issue 8's constraints): each book and account is decided in arrival order by
one consumer, and the group commit's claim at the end of a batch relies on one run of a
delivery at a time.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator
from contextlib import AsyncExitStack
from datetime import timedelta

import aio_pika
import aiormq
import pytest
import structlog

from agents.issuer.app import AGENT as AGENT_ISSUER
from broker import logs
from broker.consumer import Outcome
from broker.instance import InstanceHeld
from broker.pki import KeyStore
from broker.runtime import AgentRuntime, running
from broker.settings import Settings
from broker.topology import Names
from tests import support


async def lease_held(settings: Settings, agent: str) -> bool:
    """Whether some connection holds ``agent``'s lease, looked at from a connection of the test's own."""
    connection = await aio_pika.connect(settings.amqp_url)
    try:
        channel = await connection.channel()
        try:
            await channel.declare_queue(Names(settings.namespace).instance(agent), passive=True)
        except aiormq.exceptions.ChannelLockedResource:
            return True  # exclusive to another connection
        except aiormq.exceptions.ChannelNotFoundEntity:
            return False
        raise AssertionError("the lease queue exists and is not exclusive")
    finally:
        await connection.close()


async def consumers(settings: Settings, agent: str) -> int:
    """How many consumers the broker knows on ``agent``'s inbox."""
    connection = await aio_pika.connect(settings.amqp_url)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(Names(settings.namespace).inbox(agent), passive=True)
        return int(queue.declaration_result.consumer_count or 0)
    finally:
        await connection.close()


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    logs.configure("info", "json", stream, cache=False)
    yield stream
    structlog.reset_defaults()


async def test_a_second_instance_waits_for_the_lease_then_stops_and_the_first_goes_on(
    settings: Settings, keys: KeyStore
) -> None:
    async with support.agents(settings, "issuer") as rt:
        issuer = rt["issuer"]
        await support.open_offering(issuer)
        assert await lease_held(settings, "issuer")
        with pytest.raises(InstanceHeld) as refused:
            async with AgentRuntime(AGENT_ISSUER, settings.with_(instance_wait=timedelta(seconds=1))):
                pytest.fail("a second instance of the issuer opened")
        assert str(refused.value) == (
            f"another instance of the issuer agent is running: the broker's lease {settings.namespace}.issuer.instance "
            "is held by another connection, and was still after 1 s"
        )
        assert await consumers(settings, "issuer") == 1  # the second never consumed
        sealed = support.sealed_request(keys.load_identity("alice"))
        await support.publish_sealed(settings, sealed)
        settled = await issuer.outcomes.wait_for(sealed.envelope.message_id)
        assert settled.outcome is Outcome.PROCESSED  # the first instance goes on, alone
        assert await lease_held(settings, "issuer")
    assert not await lease_held(settings, "issuer")  # given up with its connection


async def test_a_waiting_instance_takes_the_lease_when_the_first_stops_and_consumes(
    settings: Settings, keys: KeyStore, log_lines: io.StringIO
) -> None:
    first = AsyncExitStack()
    issuer = await first.enter_async_context(AgentRuntime(AGENT_ISSUER, settings))
    await first.enter_async_context(running(issuer))
    await support.open_offering(issuer)
    second = AgentRuntime(AGENT_ISSUER, settings.with_(instance_wait=timedelta(seconds=60)))
    opening = asyncio.create_task(second.__aenter__())
    try:
        # It waits: the broker has refused it at least once (the lease's holder is the first's
        # connection), and it has not opened.
        await support.eventually(lambda: '"instance_lease_held"' in log_lines.getvalue(), timeout=10)
        assert not opening.done()
        assert '"instance_lease_taken"' not in log_lines.getvalue()
        await first.aclose()
        async with asyncio.timeout(30):
            await opening
        assert '"instance_lease_taken"' in log_lines.getvalue()
        async with running(second):
            sealed = support.sealed_request(keys.load_identity("alice"))
            await support.publish_sealed(settings, sealed)
            settled = await second.outcomes.wait_for(sealed.envelope.message_id)
            assert settled.outcome is Outcome.PROCESSED
            assert await consumers(settings, "issuer") == 1
    finally:
        await first.aclose()
        if opening.done() and opening.exception() is None:
            await second.__aexit__(None, None, None)
        else:
            opening.cancel()
            await asyncio.wait({opening})
