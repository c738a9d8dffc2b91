"""Parked outbox rows: what was unroutable, and sending it again once it can be routed.

The relay parks a row the broker could not route (``mandatory`` returned it), typically a
reply to an external participant whose reply queue did not exist yet. Parked rows are kept,
never dropped. ``ParkedRetry`` tries the oldest parked row of each routing key every
``interval``, and soon after a row for one of Kabuto's agents was parked (``SOON``): when it
is confirmed — a queue for that recipient has appeared — it is marked published and the other
parked rows for that key go back to the relay, which publishes them in order. Operators list
and resend rows with ``kabuto outbox`` (``listing``, ``unpark``); a resent row that is still
unroutable is parked again.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from uuid import UUID

import aiormq
import asyncpg

from broker import logs
from broker.db import notify_channel
from broker.outbox import amqp_message
from broker.progress import TaskBeat, pause, stopping
from broker.topology import Exchanges

log = logs.get("kabuto.parked")
UNROUTABLE = "unroutable%"


class RowState(StrEnum):
    PENDING = "pending"
    PARKED = "parked"
    PUBLISHED = "published"


@dataclass(frozen=True, slots=True)
class OutboxRow:
    seq: int
    message_id: UUID
    message_type: str
    routing_key: str
    created_at: datetime
    state: RowState
    error: str | None


def _row(record: asyncpg.Record) -> OutboxRow:
    if record["published_at"] is not None:
        state = RowState.PUBLISHED
    elif record["failed_at"] is not None:
        state = RowState.PARKED
    else:
        state = RowState.PENDING
    return OutboxRow(
        record["seq"],
        record["message_id"],
        record["message_type"],
        record["routing_key"],
        record["created_at"],
        state,
        record["error"],
    )


async def listing(pool: asyncpg.Pool, *, parked_only: bool, limit: int) -> list[OutboxRow]:
    """Rows not yet published (pending and parked), or only the parked ones, oldest first."""
    records = await pool.fetch(
        """SELECT seq, message_id, message_type, routing_key, created_at, published_at, failed_at, error
           FROM outbox WHERE published_at IS NULL AND ($1::bool IS FALSE OR failed_at IS NOT NULL)
           ORDER BY seq LIMIT $2""",
        parked_only,
        limit,
    )
    return [_row(r) for r in records]


async def unpark(connection: asyncpg.Connection, agent: str, message_id: UUID | None = None) -> int:
    """Give parked rows (one, or all) back to the relay; returns how many."""
    result: str = await connection.execute(
        """UPDATE outbox SET failed_at = NULL, error = NULL
           WHERE failed_at IS NOT NULL AND published_at IS NULL AND ($1::uuid IS NULL OR message_id = $1)""",
        message_id,
    )
    count = int(result.split()[-1])
    if count:
        await connection.execute("SELECT pg_notify($1, '')", notify_channel(agent))
    return count


# Seconds between the tries that follow a row just parked for one of Kabuto's agents: on a first
# start the agents come up in any order, and a message to one that has not declared its queues
# yet waits for it this long rather than a whole interval (15.5 s in all; after that, the
# interval). A reply to an external participant waits for the interval or an operator's resend.
SOON = (0.5, 1.0, 2.0, 4.0, 8.0)


@dataclass(slots=True)
class ParkedRetry:
    agent: str
    pool: asyncpg.Pool
    exchanges: Exchanges
    interval: timedelta
    beat: TaskBeat = field(default_factory=lambda: TaskBeat("parked-retry"))
    # Set by the relay when it parks a row for one of Kabuto's agents (``OutboxRelay.parked``).
    parked: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        """Retry parked rows every ``interval`` until cancelled, and at ``SOON`` after the relay
        parked one for an agent, until none is left parked.

        A lost broker or database connection ends the run: the runtime's supervisor
        (``broker.supervision``) waits for the infrastructure and starts it on a new session.
        """
        while True:
            if stopping():  # a cancel a round took in without raising it (broker.progress.pause)
                raise asyncio.CancelledError
            try:
                async with asyncio.timeout(self.interval.total_seconds()):
                    await self.parked.wait()
            except TimeoutError:
                with self.beat.round():
                    await self.retry_once()
                continue
            self.parked.clear()
            for delay in SOON:
                await pause(delay)
                with self.beat.round():
                    still_parked = await self.retry_once()
                if not still_parked:
                    break

    async def retry_once(self) -> int:
        """Probe each parked routing key with its oldest row; returns how many keys are still parked."""
        heads = await self.pool.fetch(
            """SELECT DISTINCT ON (routing_key) seq, message_id, message_type, exchange, routing_key, body, headers
               FROM outbox WHERE failed_at IS NOT NULL AND published_at IS NULL AND error LIKE $1
               ORDER BY routing_key, seq""",
            UNROUTABLE,
        )
        still_parked = 0
        for head in heads:
            if not await self._publish(head):
                still_parked += 1
        return still_parked

    async def _publish(self, head: asyncpg.Record) -> bool:
        exchange = self.exchanges.events if head["exchange"] == "events" else self.exchanges.messages
        message = amqp_message(str(head["message_id"]), head["message_type"], head["body"], json.loads(head["headers"]))
        try:
            await exchange.publish(message, routing_key=head["routing_key"], mandatory=True)
        except aiormq.exceptions.PublishError:
            return False  # still no queue for this recipient
        async with self.pool.acquire() as connection, connection.transaction():
            # No longer parked: a published row kept its failed_at and counted as parked for ever
            # in `kabuto status` and the metrics (found by make chaos).
            await connection.execute(
                "UPDATE outbox SET published_at = now(), failed_at = NULL, error = NULL WHERE seq = $1", head["seq"]
            )
            await connection.execute(
                """UPDATE outbox SET failed_at = NULL, error = NULL
                   WHERE routing_key = $1 AND failed_at IS NOT NULL AND published_at IS NULL AND error LIKE $2""",
                head["routing_key"],
                UNROUTABLE,
            )
            await connection.execute("SELECT pg_notify($1, '')", notify_channel(self.agent))
        log.info("parked_rows_routable", routing_key=head["routing_key"], first=str(head["message_id"]))
        return True
