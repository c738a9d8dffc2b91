"""``kabuto health`` and ``kabuto status`` look again at a queue the broker reads as (0 messages, 0 consumers): RabbitMQ
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
from broker.topology import Names


@asynccontextmanager
async def unconsumed_queue(
    settings: Settings, name: str = "unsure"
) -> AsyncIterator[tuple[AbstractConnection, AbstractQueue]]:
    connection = await aio_pika.connect(settings.amqp_url)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(
            f"{settings.namespace}.{name}", durable=True, arguments={"x-queue-type": "quorum"}
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
        found = await ops._looked_again(connection, await ops._queues(connection, [queue.name]), [queue.name])
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
        found = await ops._looked_again(connection, await ops._queues(connection, [queue.name]), [queue.name])
    assert found == {queue.name: (0, 0)}
    assert len(looks) == ops.UNSURE_LOOKS


async def test_status_reads_an_inbox_consumed_after_its_first_look_as_consumed(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``kabuto status`` reads every agent's queues at once, then looks again at an inbox read as
    (0, 0); the issuer's inbox here is a queue of the test's, consumed from the first look on."""
    read = ops._queues
    looks: list[list[str]] = []

    async with unconsumed_queue(settings, Names(settings.namespace).inbox("issuer").split(".", 1)[1]) as (_, inbox):

        async def consumed_after_the_first_look(
            conn: aio_pika.abc.AbstractConnection, names: list[str]
        ) -> dict[str, tuple[int, int]]:
            found = await read(conn, names)
            looks.append(list(names))
            if len(looks) == 1:
                await inbox.consume(ignore)
            return found

        monkeypatch.setattr(ops, "_queues", consumed_after_the_first_look)
        (status,) = await ops.status(settings, ["issuer"])
    assert status.consumers == 1
    assert looks[1:] == [[inbox.name]]  # only the inbox was looked at again
