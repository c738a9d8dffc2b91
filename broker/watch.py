"""What ``kabuto status`` shows per agent, read again on every refresh of ``--watch``.

From the broker: the inbox queue's depth and consumers and the dead-letter queue's depth. From
the agent's own tables: the outbox (pending, parked, lag), the publish rate (outbox rows
confirmed in the last ``window``) and the deliver rate (inbox rows committed in the last
``window``) — rates from the agents' own books, so they need no metrics endpoint. The last
error is the newer of the agent's newest dead letter and its newest parked outbox row; dead
letters are read again only when their count changed, so watching an agent with many costs
one passive declare per refresh.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta

import aiormq
import asyncpg
from aio_pika.abc import AbstractConnection

from broker import link, ops
from broker.db import agent_pool
from broker.metrics import OutboxFigures, outbox_figures
from broker.settings import Settings
from broker.topology import Names, inspect_queue

DEAD_LETTERS_READ = 500


@dataclass(frozen=True, slots=True)
class LastError:
    at: str  # ISO time, as the dead letter's header or the outbox row carries it
    what: str


@dataclass(frozen=True, slots=True)
class AgentView:
    agent: str
    inbox_depth: int | None  # None: the queue was never declared (the agent never started)
    answers_depth: int | None
    consumers: int | None
    dead_letters: int | None
    outbox: OutboxFigures
    published_per_second: float
    delivered_per_second: float
    last_error: LastError | None


class Watcher:
    """Open once, then ``snapshot()`` on every refresh; holds one pool per agent."""

    def __init__(self, settings: Settings, connection: AbstractConnection, pools: dict[str, asyncpg.Pool]) -> None:
        self._settings = settings
        self._names = Names(settings.namespace)
        self._connection = connection
        self._pools = pools
        self._dead: dict[str, tuple[int, LastError | None]] = {}

    @classmethod
    @asynccontextmanager
    async def open(cls, settings: Settings, agents: Sequence[str]) -> AsyncIterator[Watcher]:
        async with AsyncExitStack() as stack:
            connection = await link.connect(settings.amqp_url)
            stack.push_async_callback(connection.close)
            pools = {}
            for agent in agents:
                pools[agent] = await stack.enter_async_context(agent_pool(settings.database_url, agent, max_size=1))
            yield cls(settings, connection, pools)

    async def snapshot(self, window: timedelta = timedelta(seconds=60)) -> list[AgentView]:
        return [await self._view(agent, pool, window) for agent, pool in self._pools.items()]

    async def _view(self, agent: str, pool: asyncpg.Pool, window: timedelta) -> AgentView:
        names = self._names
        inbox = await _queue(self._connection, names.inbox(agent))
        answers = await _queue(self._connection, names.answers(agent))
        dead = await _queue(self._connection, names.dead_letters(agent))
        published, delivered, parked = await _activity(pool, window)
        dead_count = dead[0] if dead else None
        last = _newer(await self._last_dead_letter(agent, dead_count), parked)
        return AgentView(
            agent=agent,
            inbox_depth=inbox[0] if inbox else None,
            answers_depth=answers[0] if answers else None,
            consumers=inbox[1] if inbox else None,
            dead_letters=dead_count,
            outbox=await outbox_figures(pool),
            published_per_second=published / window.total_seconds(),
            delivered_per_second=delivered / window.total_seconds(),
            last_error=last,
        )

    async def _last_dead_letter(self, agent: str, count: int | None) -> LastError | None:
        if not count:
            return None
        cached = self._dead.get(agent)
        if cached is not None and cached[0] == count:
            return cached[1]
        letters = await ops.dead_letters(self._settings, agent, limit=DEAD_LETTERS_READ)
        newest = max(letters, key=lambda d: d.dead_lettered_at, default=None)
        last = LastError(newest.dead_lettered_at, f"{newest.reason}: {newest.detail}") if newest else None
        self._dead[agent] = (count, last)
        return last


async def _queue(connection: AbstractConnection, name: str) -> tuple[int, int] | None:
    """(messages, consumers), or None at once if the queue was never declared."""
    try:
        return await inspect_queue(connection, name)
    except aiormq.exceptions.ChannelNotFoundEntity:
        return None


async def _activity(pool: asyncpg.Pool, window: timedelta) -> tuple[int, int, LastError | None]:
    row = await pool.fetchrow(
        """SELECT (SELECT coalesce(sum(public.kabuto_messages_in(message_type, body)), 0) FROM outbox
                   WHERE published_at > now() - $1::interval) AS published,
                  (SELECT count(*) FROM inbox WHERE received_at > now() - $1::interval) AS delivered,
                  (SELECT failed_at FROM outbox WHERE failed_at IS NOT NULL ORDER BY failed_at DESC LIMIT 1)
                      AS parked_at,
                  (SELECT error FROM outbox WHERE failed_at IS NOT NULL ORDER BY failed_at DESC LIMIT 1) AS error""",
        window,
    )
    parked = LastError(row["parked_at"].isoformat(), f"outbox parked: {row['error']}") if row["parked_at"] else None
    return row["published"], row["delivered"], parked


def _newer(a: LastError | None, b: LastError | None) -> LastError | None:
    if a is None or b is None:
        return a or b
    return a if a.at >= b.at else b
