"""A cancel that a library takes in without raising is still honoured (stop 27). aiormq and asyncpg
can absorb a cancellation that lands while a channel or a connection is busy; a loop that then
went on (the metrics sampler, found when an agent process never finished stopping, about once in
ten runs of tests/integration/test_settled_heap.py and once in CI) held its agent's stop for
ever. Every loop of rounds waits between them with ``progress.pause``, which stops a task asked
to stop; ``check_ready`` does not take an AMQP error that stood in for a cancel for a leader
election. And a task nobody is stopping is never taken for one that is.
"""

from __future__ import annotations

import asyncio

import aio_pika
import pytest

from broker.progress import pause, stopping
from broker.settings import Settings
from broker.topology import check_ready


async def swallow_own_cancel() -> None:
    """What aiormq can do: the task is cancelled, and the CancelledError never reaches its code."""
    task = asyncio.current_task()
    assert task is not None
    task.cancel()
    try:
        await asyncio.Event().wait()  # never set: only the cancel ends the wait
    except asyncio.CancelledError:
        pass  # taken in, not raised; the task is still being cancelled
    assert stopping()


async def test_a_pause_between_rounds_stops_a_task_whose_cancel_was_taken_in() -> None:
    rounds = 0

    async def loop() -> None:
        nonlocal rounds
        await swallow_own_cancel()
        while True:
            rounds += 1
            await pause(0.01)

    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(asyncio.create_task(loop()), 5)
    assert rounds == 1


async def test_a_pause_waits_its_time_in_a_task_nobody_stops() -> None:
    async def body() -> bool:
        await pause(0.01)
        return stopping()

    assert await asyncio.create_task(body()) is False


async def _fails() -> None:
    """Runs once the group's body has finished (the body only starts it), and fails."""
    raise ValueError("a child failed")


async def test_check_ready_answers_in_a_task_that_survived_a_failed_task_group(settings: Settings) -> None:
    """Python 3.11 can leave a task's cancel count above zero when nobody is stopping it: a
    TaskGroup whose child fails after the group's body finished cancels its parent and never
    uncancels it (CPython gh-116720, fixed in 3.12). check_ready must still answer there when
    every queue does (found by review: a first version raised CancelledError)."""
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(f"{settings.namespace}.probe", exclusive=True)  # gone with the connection

        async def body() -> object:
            try:
                async with asyncio.TaskGroup() as tasks:
                    tasks.create_task(_fails())
            except* ValueError:
                pass  # handled; this task goes on (nobody asked it to stop)
            return await check_ready(connection, [queue.name], timeout=5)

        assert await asyncio.create_task(body()) == {queue.name: (0, 0)}
