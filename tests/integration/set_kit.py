"""What the tests of the set-based handlers share (docs/netting.md, step 1): an agent opened but
not run, signed messages published and taken off its queue in order, then settled as one
group-committed batch (``group_commit.settle_batch``, as its consumer does under load) or one at
a time (``Consumer.settle``) — so which deliveries share a batch is the test's choice, not the
broker's — and each call of a set handler noted."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import aio_pika
import asyncpg
from aio_pika.abc import AbstractIncomingMessage

from broker import group_commit
from broker.consumer import Settled
from broker.context import Context
from broker.envelope import Sealed
from broker.runtime import AgentDefinition, AgentRuntime
from broker.set_based import SetBased
from broker.settings import Settings
from broker.topology import Names
from schemas.catalogue import Message
from tests import support

# The queue the messages land on, by the namespace's names (an agent's inbox, or its answers queue).
Queue = Callable[[Names], str]


def recording(handler: SetBased[Any], note: Callable[[list[Any]], None]) -> SetBased[Any]:
    """The real set handler, with ``note`` given the messages of each call first."""

    async def handle_set(items: Sequence[tuple[Any, Context]]) -> None:
        note([message for message, _ in items])
        await handler.handle_set(items)

    return SetBased(handle_set, keys=handler.keys, phase=handler.phase)


def with_handlers(real: AgentDefinition, handlers: Mapping[type[Message], Any]) -> AgentDefinition:
    """``real`` with some of its handlers replaced (by recording or reference ones), its batch
    scope kept and its background jobs left out: an agent opened, not run."""
    return AgentDefinition(real.id, real.role, {**real.handlers, **handlers}, batch_scope=real.batch_scope)


def noted(name: str, calls: list[tuple[str, list[int]]]) -> Callable[[list[Any]], None]:
    """For ``recording``: a set call noted by its handler's name and the instructions it was given."""
    return lambda messages: calls.append((name, [m.instruction for m in messages]))


@asynccontextmanager
async def taken(
    settings: Settings, sealed: Sequence[Sealed], queue: Queue
) -> AsyncIterator[list[AbstractIncomingMessage]]:
    """``sealed`` published and taken off ``queue``, in order; acked after."""
    for each in sealed:
        await support.publish_sealed(settings, each)
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        source = await channel.declare_queue(queue(Names(settings.namespace)), passive=True)
        deliveries = [await source.get(no_ack=False, timeout=5) for _ in sealed]
        assert [d.message_id for d in deliveries] == [str(s.envelope.message_id) for s in sealed]
        yield deliveries
        await group_commit.ack(deliveries)


async def as_one_batch(settings: Settings, rt: AgentRuntime, sealed: Sequence[Sealed], queue: Queue) -> list[Settled]:
    async with taken(settings, sealed, queue) as deliveries:
        return await group_commit.settle_batch(rt.consumer, deliveries)


async def one_at_a_time(settings: Settings, rt: AgentRuntime, sealed: Sequence[Sealed], queue: Queue) -> list[Settled]:
    async with taken(settings, sealed, queue) as deliveries:
        return [await rt.consumer.settle(d) for d in deliveries]


def outcomes(settled: Sequence[Settled]) -> list[str]:
    return [s.outcome.value for s in settled]


# One message a group caused: the place of its cause in the group, its type, routing key,
# recipient and payload (as the test normalises it).
Caused = tuple[int, str, str, str | None, Any]


async def caused(
    connection: asyncpg.Connection | asyncpg.Pool,
    sealed: Sequence[Sealed],
    payload: Callable[[dict[str, Any]], Any],
    *,
    own_conversation: Callable[[str], bool] = lambda _: True,
) -> list[Caused]:
    """What the outbox holds that ``sealed`` caused, by cause, each cause's messages by routing
    key (events last) and in outbox order for each key; each message of a type answering in its
    cause's conversation (``own_conversation``) is checked to be in it.

    That is the order the agents keep: each queue receives an agent's messages in the order they
    were emitted, but a batch's messages to one queue travel together (a packed bundle:
    broker.outbox.packed), so one cause's messages to two queues may be stored in either order."""
    place = {str(s.envelope.message_id): i for i, s in enumerate(sealed)}
    found: list[Caused] = []
    for row in await connection.fetch(
        "SELECT message_type, routing_key, body FROM outbox_messages ORDER BY seq, place"
    ):
        envelope = json.loads(row["body"])
        cause = envelope.get("causation_id")
        if cause not in place:
            continue
        if own_conversation(envelope["type"]):
            source = sealed[place[cause]].envelope
            assert envelope["correlation_id"] == str(source.correlation_id), envelope["type"]
        found.append(
            (place[cause], row["message_type"], row["routing_key"], envelope["recipient"], payload(envelope["payload"]))
        )
    return sorted(found, key=lambda c: (c[0], c[3] is None, c[2]))  # stable: each key's order kept
