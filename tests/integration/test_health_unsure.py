"""``kabuto health`` looks again at a queue the broker reads as (0 messages, 0 consumers): RabbitMQ
gives that reading, not an error, for a quorum queue whose leader is slow to answer
(rabbit_quorum_queue:stat/1; docs/resilience.md), so one such reading is not yet "nothing
consumes". Real broker, a quorum queue of the test's own."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aio_pika
import pytest
from aio_pika.abc import AbstractConnection, AbstractIncomingMessage, AbstractQueue

from broker import ops
from broker.settings import Settings


@asynccontextmanager
async def unconsumed_queue(settings: Settings) -> AsyncIterator[tuple[AbstractConnection, AbstractQueue]]:
    connection = await aio_pika.connect(settings.amqp_url)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(
            f"{settings.namespace}.unsure", durable=True, arguments={"x-queue-type": "quorum"}
        )
        try:
            yield connection, queue
        finally:
            await channel.queue_delete(queue.name)
    finally:
        await connection.close()


async def ignore(message: AbstractIncomingMessage) -> None:
    return None


async def test_a_consumer_seen_on_a_second_look_is_not_reported_missing(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    looks: list[dict[str, tuple[int, int]]] = []
    read = ops._queues

    async with unconsumed_queue(settings) as (connection, queue):

        async def consumed_after_the_first_look(
            conn: aio_pika.abc.AbstractConnection, names: list[str]
        ) -> dict[str, tuple[int, int]]:
            found = await read(conn, names)  # the real broker's reading
            looks.append(dict(found))
            if len(looks) == 1:
                await queue.consume(ignore)  # a consumer the broker knows of from now on
            return found

        monkeypatch.setattr(ops, "_queues", consumed_after_the_first_look)
        found = await ops._consumed_or_not(connection, [queue.name])
    assert looks == [{queue.name: (0, 0)}, {queue.name: (0, 1)}]
    assert found == {queue.name: (0, 1)}


async def test_a_queue_nothing_consumes_is_read_as_such_after_every_look(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    looks: list[dict[str, tuple[int, int]]] = []
    read = ops._queues

    async def counted(conn: aio_pika.abc.AbstractConnection, names: list[str]) -> dict[str, tuple[int, int]]:
        looks.append(found := await read(conn, names))
        return found

    monkeypatch.setattr(ops, "_queues", counted)
    async with unconsumed_queue(settings) as (connection, queue):
        found = await ops._consumed_or_not(connection, [queue.name])
    assert found == {queue.name: (0, 0)}
    assert len(looks) == ops.UNSURE_LOOKS
