"""One running instance of each agent (broker/instance.py): a second one waits for the lease,
then stops, and never consumes; the lease passes on when the first instance goes.

Why it matters (issue 8's constraints): each book and account is decided in arrival order by
one consumer, and the group commit's claim at the end of a batch relies on one run of a
delivery at a time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import time
from contextlib import AsyncExitStack
from datetime import timedelta

import aio_pika
import aiormq
import pytest

from agents.issuer.app import AGENT as AGENT_ISSUER
from broker.consumer import Outcome
from broker.instance import HEARTBEAT, InstanceHeld, heartbeat_of, take
from broker.link import close_within
from broker.pki import KeyStore
from broker.progress import TaskState, pause
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


async def test_a_second_instance_waits_for_the_lease_then_stops_and_the_first_goes_on(
    settings: Settings, keys: KeyStore
) -> None:
    async with support.agents(settings, "issuer") as rt:
        issuer = rt["issuer"]
        await support.open_offering(issuer)
        assert await lease_held(settings, "issuer")
        session = issuer.link.live
        assert session is not None
        # The heartbeat it asked for, which bounds how long a half-open connection keeps a lease.
        underlay = session.connection.transport
        assert underlay is not None and isinstance(underlay.connection, aiormq.Connection)
        assert underlay.connection.heartbeat_timeout == HEARTBEAT == 20
        with pytest.raises(InstanceHeld) as refused:
            async with AgentRuntime(AGENT_ISSUER, settings.with_(instance_wait=timedelta(seconds=1))):
                pytest.fail("a second instance of the issuer opened")
        assert str(refused.value) == (
            "another instance of the issuer agent is running, or its last connection is not yet dropped by the "
            f"broker: the lease {settings.namespace}.issuer.instance is held by another connection, and was still "
            "after 1 s"
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
        assert '"instance_lease_free"' not in log_lines.getvalue()
        await first.aclose()
        async with asyncio.timeout(30):
            await opening
        assert '"instance_lease_free"' in log_lines.getvalue()
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


async def test_an_instance_whose_lease_was_taken_while_it_was_cut_off_runs_no_job_and_stops(
    settings: Settings,
) -> None:
    """Found by review: the lease guarded the consumer only, and an agent that reconnected to
    find its lease taken ran its background jobs beside the instance holding it, up to the wait.
    A job's round now starts only on a session, which holds the lease, and health says the job
    waits for one."""
    rounds: list[float] = []

    async def job(runtime: AgentRuntime) -> None:
        while True:
            async with runtime.round_of(job):
                rounds.append(time.monotonic())
            await pause(0.05)

    definition = dataclasses.replace(AGENT_ISSUER, background=(job,))
    other = await aio_pika.connect(settings.amqp_url)
    try:
        async with AgentRuntime(definition, settings.with_(instance_wait=timedelta(seconds=2))) as issuer:
            with pytest.raises(InstanceHeld):
                async with running(issuer):
                    await support.eventually(lambda: len(rounds) >= 3)
                    # Nothing reopens the session until the other connection holds the lease.
                    async with issuer.link._lock:
                        session = issuer.link.live
                        assert session is not None
                        await close_within(session.connection)
                        lost = time.monotonic()
                        await take(other, Names(settings.namespace), "issuer", 10)
                    # What the job waits for is what health reports, as for the consumer.
                    await issuer.heartbeats.beat("job").until(TaskState.WAITING)
                    assert "broker session" in issuer.heartbeats.beat("job").detail
                    async with asyncio.timeout(30):
                        await issuer.finished.wait()
            assert [at for at in rounds if at > lost] == []
            failed = [b for b in issuer.heartbeats.beats.values() if b.state is TaskState.FAILED]
            assert failed and all(b.detail.startswith("InstanceHeld: another instance of the issuer") for b in failed)
    finally:
        await other.close()


def test_agents_ask_for_a_heartbeat_unless_their_url_names_one() -> None:
    assert heartbeat_of("amqp://guest:guest@127.0.0.1:5672/") == {"heartbeat": HEARTBEAT}
    assert heartbeat_of("amqp://guest:guest@127.0.0.1:5672/?heartbeat=5") == {}
    assert heartbeat_of("amqp://u:p@mq/v?connection_timeout=3") == {"heartbeat": HEARTBEAT}


async def test_kabuto_run_all_starts_its_agents_when_the_broker_cannot_be_asked_yet(
    settings: Settings, log_lines: io.StringIO
) -> None:
    """Found by review: the look before the children start must not stop ``kabuto run all`` when
    the broker is starting too; each child takes its lease itself and waits for the broker."""
    from agents.operations import _none_running

    await _none_running(settings.with_(amqp_url="amqp://guest:guest@127.0.0.1:1/"))
    assert '"instances_not_looked_at"' in log_lines.getvalue()
