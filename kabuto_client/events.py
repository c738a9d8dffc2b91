"""Events for integrators: check one, or replay the journal from a cursor.

``open_event`` (from ``broker.envelope``) accepts an event only if its signature holds, its
certificate chains to the Kabuto CA and is valid, it is addressed to no one, the signer's
role is one the catalogue allows to publish that event type, and it is fresh. An event an
investor forged into the events exchange fails the role check (``sender_not_authorized``).

``replay`` reads the stream ``<ns>.events.journal`` from a cursor — ``"first"``, ``"last"``,
``"next"``, an offset, or a time — with a prefetch and manual acks (both required by
RabbitMQ streams), and yields each entry with its offset. An integrator stores the offset of
the last entry it handled and resumes from ``offset + 1``: no gap, no duplicate. In a replay
an event may be up to the journal's retention old (30 days), so freshness is judged with
``JOURNAL_FRESHNESS``; a genuine event re-published by someone else carries an id the
integrator has already handled and is refused as a duplicate (pass the ids handled so far as
``seen``, as an agent's inbox would).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from broker.envelope import Freshness, Opened, open_event
from broker.errors import Rejected
from broker.topology import Names
from broker.trust import TrustStore

__all__ = ["JOURNAL_FRESHNESS", "JournalEntry", "open_event", "replay"]

JOURNAL_FRESHNESS = Freshness(max_age=timedelta(days=31), max_skew=timedelta(seconds=30))
Cursor = int | datetime | str


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One journal record: the verified event, or why it was refused."""

    offset: int
    event: Opened | None
    refused: str | None = None


async def replay(
    amqp_url: str,
    trust: TrustStore,
    *,
    start: Cursor = "first",
    namespace: str = "kabuto",
    freshness: Freshness = JOURNAL_FRESHNESS,
    prefetch: int = 100,
    seen: set[UUID] | None = None,
) -> AsyncIterator[JournalEntry]:
    """Every journal entry from ``start`` on, verified, in order; runs until the caller stops.

    ``seen`` holds the message ids already handled (an integrator's own inbox); an entry whose
    id is in it is refused as a duplicate, and each accepted id is added.
    """
    if isinstance(start, datetime) and start.tzinfo is None:
        raise ValueError("a journal cursor time must be timezone-aware")
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=prefetch)
        journal = await channel.declare_queue(Names(namespace).journal, passive=True)
        # Not queue.iterator(): closing it rejects what was prefetched, which a stream refuses.
        arrived: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        await journal.consume(arrived.put, arguments={"x-stream-offset": start})
        seen = set() if seen is None else seen
        while True:
            delivery = await arrived.get()
            yield _entry(delivery, trust, freshness, seen)
            await delivery.ack()
    finally:
        await connection.close()  # unacked stream deliveries are simply dropped; the cursor says where to resume


def _entry(delivery: AbstractIncomingMessage, trust: TrustStore, freshness: Freshness, seen: set[UUID]) -> JournalEntry:
    offset = int(delivery.headers["x-stream-offset"])  # type: ignore[arg-type]
    try:
        opened = open_event(delivery.body, delivery.headers, trust=trust, freshness=freshness, now=datetime.now(UTC))
    except Rejected as exc:
        return JournalEntry(offset, None, f"{exc.reason.value}: {exc.detail}")
    if opened.envelope.message_id in seen:
        return JournalEntry(offset, None, f"duplicate: {opened.envelope.message_id} was already in the journal")
    seen.add(opened.envelope.message_id)
    return JournalEntry(offset, opened)
