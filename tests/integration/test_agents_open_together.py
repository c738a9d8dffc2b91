"""broker.runtime.started opens the agents after the first together (stop 45). Found by review:
the error of an agent that could not open lost its cause, and the caller's own task was left
marked as cancelling (a Ctrl-C while the others closed then ended in CancelledError, not 130).
Whatever opened is closed, whether an agent failed or the caller was cancelled."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import aio_pika
import aiormq
import asyncpg
import pytest

from agents.registry import AGENTS
from broker.instance import InstanceHeld
from broker.runtime import AgentRuntime, started
from broker.settings import Settings
from broker.topology import Names
from tests import support
from tests.integration.test_one_instance import lease_held

IDS = ("issuer", "exchange", "settlement")


@asynccontextmanager
async def held(settings: Settings, agent: str) -> AsyncIterator[None]:
    """Another connection holds ``agent``'s lease, as a second instance would."""
    connection = await aio_pika.connect(settings.amqp_url)
    try:
        channel = await connection.channel()
        await channel.declare_queue(
            Names(settings.namespace).instance(agent),
            exclusive=True,
            auto_delete=True,
            arguments={"x-queue-type": "classic"},
        )
        yield
    finally:
        await connection.close()


async def agent_sessions(settings: Settings) -> list[str]:
    connection = await asyncpg.connect(settings.database_url)
    try:
        rows = await connection.fetch(
            "SELECT application_name FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name LIKE 'kabuto-%'"
        )
        return sorted(r["application_name"] for r in rows)
    finally:
        await connection.close()


async def nothing_left_open(settings: Settings) -> None:
    async def closed() -> bool:
        leases = [await lease_held(settings, a) for a in IDS]
        return not any(leases) and not await agent_sessions(settings)

    await support.eventually(closed, timeout=5)


async def test_a_runtime_opened_alone_keeps_the_cause_of_instance_held(settings: Settings) -> None:
    quick = settings.with_(instance_wait=timedelta(seconds=0.5))
    async with held(settings, "exchange"):
        with pytest.raises(InstanceHeld) as refused:
            async with AgentRuntime(AGENTS["exchange"], quick):
                pytest.fail("opened")
    assert isinstance(refused.value.__cause__, aiormq.exceptions.ChannelLockedResource)


async def refused_start(settings: Settings, holder: str) -> InstanceHeld:
    """``started()`` of ``IDS`` while another connection holds ``holder``'s lease: its refusal,
    once the others' leases are given back (the holder's is still the other connection's)."""
    quick = settings.with_(instance_wait=timedelta(seconds=0.5))
    async with held(settings, holder):
        with pytest.raises(InstanceHeld) as refused:
            async with started([AGENTS[a] for a in IDS], quick):
                pytest.fail("opened")
        assert await lease_held(settings, holder)
        assert not any([await lease_held(settings, a) for a in IDS if a != holder])
    await nothing_left_open(settings)
    return refused.value


async def test_instance_held_of_a_later_agent_keeps_its_cause_and_closes_the_others(settings: Settings) -> None:
    refused = await refused_start(settings, "exchange")
    assert isinstance(refused.__cause__, aiormq.exceptions.ChannelLockedResource), f"cause lost: {refused.__cause__!r}"


async def test_instance_held_of_the_first_agent_keeps_its_cause(settings: Settings) -> None:
    refused = await refused_start(settings, "issuer")
    assert isinstance(refused.__cause__, aiormq.exceptions.ChannelLockedResource), f"cause lost: {refused.__cause__!r}"


async def test_a_failed_start_leaves_the_caller_task_not_cancelling(settings: Settings) -> None:
    await refused_start(settings, "exchange")
    task = asyncio.current_task()
    assert task is not None
    assert task.cancelling() == 0, f"the caller's task is left with cancelling() == {task.cancelling()}"


async def test_a_caller_cancelled_while_agents_open_closes_every_one(settings: Settings) -> None:
    slow = settings.with_(instance_wait=timedelta(seconds=20))
    async with held(settings, "exchange"):

        async def start() -> None:
            async with started([AGENTS[a] for a in IDS], slow):
                pytest.fail("opened")

        task = asyncio.create_task(start())

        async def the_others_opened() -> bool:  # the issuer and the settlement; the exchange waits for its lease
            return await lease_held(settings, "issuer") and await lease_held(settings, "settlement")

        await support.eventually(the_others_opened, timeout=5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    await nothing_left_open(settings)
