"""Journal replay from a cursor: resume after a disconnect with no gap and no duplicate (issue 9).

The events journal is a RabbitMQ stream; ``kabuto_client.replay`` consumes it from an offset or
a time (``x-stream-offset``), verifies each entry with ``open_event`` and yields it with its
offset. An integrator keeps the last offset it handled and resumes from the next one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import aclosing
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from uuid import UUID

import aio_pika

from broker import topology
from broker.envelope import Sealed, seal
from broker.pki import KeyStore
from broker.settings import Settings
from broker.topology import Names
from broker.trust import TrustStore
from kabuto_client import JournalEntry, replay
from schemas.trading import TradeExecuted


def trade(n: int) -> TradeExecuted:
    return TradeExecuted(matching_number=n, issue_code="KBT", price=Decimal(1000), quantity=n, amount=Decimal(1000 * n))


async def publish_events(settings: Settings, events: list[Sealed]) -> None:
    connection = await aio_pika.connect(settings.amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchanges = await topology.declare_exchanges(channel, Names(settings.namespace))
        for sealed in events:
            await exchanges.events.publish(
                aio_pika.Message(sealed.body, headers=dict(sealed.headers), message_id=str(sealed.envelope.message_id)),
                routing_key=sealed.envelope.type,
            )
    finally:
        await connection.close()


async def take(entries: AsyncIterator[JournalEntry], count: int) -> list[JournalEntry]:
    taken: list[JournalEntry] = []
    async with asyncio.timeout(15):
        async for entry in entries:
            taken.append(entry)
            if len(taken) == count:
                break
    return taken


async def test_replay_resumes_after_a_disconnect_with_no_gap_and_no_duplicate(
    settings: Settings, keys: KeyStore
) -> None:
    exchange, alice = keys.load_identity("exchange"), keys.load_identity("alice")
    now = datetime.now(UTC)
    genuine = [seal(exchange, trade(n), recipient=None, now=now) for n in range(1, 11)]
    forged = seal(alice, trade(99), recipient=None, now=now)  # an investor publishing into the events exchange
    await publish_events(settings, [*genuine[:5], forged, *genuine[5:]])
    trust = TrustStore(keys.ca_certificate())

    async with aclosing(replay(settings.amqp_url, trust, start="first", namespace=settings.namespace)) as first:
        session_one = await take(first, 6)  # then the integrator is cut off
    resume_at = session_one[-1].offset + 1
    async with aclosing(replay(settings.amqp_url, trust, start=resume_at, namespace=settings.namespace)) as second:
        session_two = await take(second, 5)

    entries = session_one + session_two
    offsets = [e.offset for e in entries]
    assert offsets == list(range(offsets[0], offsets[0] + 11))  # no gap, no duplicate
    accepted = [e.event.message for e in entries if e.event is not None]
    assert [m.matching_number for m in accepted if isinstance(m, TradeExecuted)] == list(range(1, 11))
    refused = [e.refused or "" for e in entries if e.event is None]
    assert len(refused) == 1 and refused[0].startswith("sender_not_authorized")


async def test_a_republished_event_is_a_duplicate_even_across_sessions(settings: Settings, keys: KeyStore) -> None:
    event = seal(keys.load_identity("exchange"), trade(1), recipient=None, now=datetime.now(UTC))
    await publish_events(settings, [event, event, event])
    trust, handled = TrustStore(keys.ca_certificate()), set[UUID]()
    ns = settings.namespace
    async with aclosing(replay(settings.amqp_url, trust, start="first", namespace=ns, seen=handled)) as entries:
        first, second = await take(entries, 2)
    async with aclosing(replay(settings.amqp_url, trust, start=second.offset + 1, namespace=ns, seen=handled)) as rest:
        (third,) = await take(rest, 1)
    assert first.event is not None and first.event.envelope.message_id == event.envelope.message_id
    assert handled == {event.envelope.message_id}
    for copy in (second, third):
        assert copy.event is None and (copy.refused or "").startswith("duplicate")


async def test_replay_from_a_time_starts_at_the_events_published_since(settings: Settings, keys: KeyStore) -> None:
    exchange = keys.load_identity("exchange")
    before = datetime.now(UTC) - timedelta(seconds=1)
    await publish_events(settings, [seal(exchange, trade(n), recipient=None, now=datetime.now(UTC)) for n in (1, 2)])
    trust = TrustStore(keys.ca_certificate())
    async with aclosing(replay(settings.amqp_url, trust, start=before, namespace=settings.namespace)) as entries:
        got = await take(entries, 2)
    assert [e.event.message.matching_number for e in got if e.event and isinstance(e.event.message, TradeExecuted)] == [
        1,
        2,
    ]
