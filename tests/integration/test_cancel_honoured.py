"""A cancel that a library takes in without raising is still honoured (stop 27). aiormq can absorb
a cancellation that lands while a channel opens or closes; the metrics sampler then went on
sampling after its agent asked it to stop, and the agent process never finished stopping (seen
once in about ten runs of tests/integration/test_settled_heap.py, and in CI). Code that loops on
the broker asks ``event_loop.cancelling()`` and stops."""

from __future__ import annotations

import asyncio

import aio_pika
import pytest

from broker.event_loop import cancelling
from broker.settings import Settings
from broker.topology import check_ready


async def swallow_own_cancel() -> None:
    """What aiormq can do: the task is cancelled, and the CancelledError never reaches its code."""
    task = asyncio.current_task()
    assert task is not None
    task.cancel()
    try:
        await asyncio.sleep(0)
    except asyncio.CancelledError:
        pass  # taken in, not raised; the task is still being cancelled
    assert cancelling()


async def test_check_ready_honours_a_cancel_taken_in_before_it_returns(settings: Settings) -> None:
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(f"{settings.namespace}.probe", auto_delete=True)

        async def body() -> None:
            await swallow_own_cancel()
            await check_ready(connection, [queue.name], timeout=5)

        with pytest.raises(asyncio.CancelledError):
            await asyncio.create_task(body())


async def test_nothing_is_cancelling_in_a_task_never_cancelled() -> None:
    async def body() -> bool:
        return cancelling()

    assert await asyncio.create_task(body()) is False
