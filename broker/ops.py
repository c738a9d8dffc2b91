"""Operations: what ``kabuto status`` and the dead-letter commands show and do.

Status reads the broker (queue depth and consumers, by passive declaration) and each
agent's outbox (pending rows, parked rows, age of the oldest pending row). Dead letters are
read from an agent's dead-letter queue without consuming them for good: listing and
inspecting requeue what they read; replaying republishes the original bytes and headers to
the agent's inbox and removes the dead letter only after the broker confirmed the copy.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import aio_pika
import aiormq
import asyncpg

from broker import link, progress
from broker.access import agent_urls
from broker.db import agent_pool
from broker.health import Backlog, task_problems
from broker.link import close_within
from broker.metrics import outbox_figures
from broker.outbox import amqp_message
from broker.provenance import Provenance, provenance
from broker.settings import Settings
from broker.topology import Names, TopologyError, check_ready
from broker.trust import TrustStore

KABUTO_HEADERS = (
    "x-kabuto-reason",
    "x-kabuto-detail",
    "x-kabuto-kind",
    "x-kabuto-agent",
    "x-kabuto-routing-key",
    "x-kabuto-dead-lettered-at",
)


@dataclass(frozen=True, slots=True)
class AgentStatus:
    agent: str
    inbox_messages: int | None
    answers_messages: int | None
    consumers: int | None
    dead_letters: int | None
    outbox_pending: int
    outbox_failed: int
    outbox_lag: timedelta | None


async def status(settings: Settings, agents: Sequence[str]) -> list[AgentStatus]:
    names = Names(settings.namespace)
    connection = await link.connect(settings.amqp_url)
    try:
        result = []
        for agent in agents:
            queues = await _queues(connection, [names.inbox(agent), names.answers(agent), names.dead_letters(agent)])
            inbox = queues.get(names.inbox(agent))
            answers = queues.get(names.answers(agent))
            dead = queues.get(names.dead_letters(agent))
            pending, failed, lag = await _outbox(settings.database_url, agent)
            result.append(
                AgentStatus(
                    agent,
                    inbox[0] if inbox else None,
                    answers[0] if answers else None,
                    inbox[1] if inbox else None,
                    dead[0] if dead else None,
                    pending,
                    failed,
                    lag,
                )
            )
        return result
    finally:
        await connection.close()


async def _queues(connection: aio_pika.abc.AbstractConnection, names: list[str]) -> dict[str, tuple[int, int]]:
    found = {}
    for name in names:
        try:
            found.update(await check_ready(connection, [name], timeout=2))
        except TopologyError:
            continue  # not declared yet: the agent has never started
    return found


async def _outbox(database_url: str, agent: str) -> tuple[int, int, timedelta | None]:
    async with agent_pool(database_url, agent, max_size=1) as pool:
        figures = await outbox_figures(pool)
    return figures.pending, figures.parked, figures.lag


@dataclass(frozen=True, slots=True)
class DeadLetter:
    delivery_tag: int
    message_id: str | None
    type: str | None
    reason: str
    detail: str
    kind: str
    dead_lettered_at: str
    size: int
    headers: dict[str, Any]
    body: bytes


async def dead_letters(settings: Settings, agent: str, limit: int = 100) -> list[DeadLetter]:
    """Read up to ``limit`` dead letters of ``agent``; they stay in the queue."""
    names = Names(settings.namespace)
    connection = await link.connect(settings.amqp_url)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(names.dead_letters(agent), passive=True)
        letters = []
        for _ in range(limit):
            message = await queue.get(no_ack=False, fail=False)
            if message is None:
                break
            letters.append(_dead_letter(message))
        await channel.close()  # unacked reads go back to the queue
        return letters
    finally:
        await connection.close()


def _dead_letter(message: aio_pika.abc.AbstractIncomingMessage) -> DeadLetter:
    headers = dict(message.headers)
    reason, detail = headers.get("x-kabuto-reason"), headers.get("x-kabuto-detail", "")
    if reason is None:  # dead-lettered by the broker itself, e.g. past the delivery limit
        deaths = headers.get("x-death")
        first = deaths[0] if isinstance(deaths, list) and deaths else {}
        why = first.get("reason", "unknown") if isinstance(first, dict) else "unknown"
        reason = f"broker:{why!s}"
    return DeadLetter(
        delivery_tag=message.delivery_tag or 0,
        message_id=message.message_id,
        type=message.type,
        reason=str(reason),
        detail=str(detail),
        kind=str(headers.get("x-kabuto-kind", "broker")),
        dead_lettered_at=str(headers.get("x-kabuto-dead-lettered-at", "")),
        size=len(message.body),
        headers=headers,
        body=message.body,
    )


async def replay(settings: Settings, agent: str, message_id: str) -> bool:
    """Send one dead letter back to its agent's inbox, unchanged; True if it was found."""
    names = Names(settings.namespace)
    connection = await link.connect(settings.amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        queue = await channel.declare_queue(names.dead_letters(agent), passive=True)
        messages = await channel.declare_exchange(names.messages, passive=True)
        while True:
            message = await queue.get(no_ack=False, fail=False)
            if message is None:
                return False
            if message.message_id != message_id:
                continue  # left unacked: requeued when the channel closes
            headers = {
                k: v
                for k, v in message.headers.items()
                if k not in KABUTO_HEADERS
                and k
                not in (
                    "x-death",
                    "x-kabuto-attempt",
                    "x-first-death-exchange",
                    "x-first-death-queue",
                    "x-first-death-reason",
                )
            }
            routing_key = str(message.headers.get("x-kabuto-routing-key") or agent)
            await messages.publish(
                amqp_message(message_id, message.type, message.body, headers),
                routing_key=routing_key,
            )
            await message.ack()
            return True
    except aiormq.exceptions.ChannelNotFoundEntity as exc:
        raise TopologyError(f"no dead-letter queue for {agent}: has it ever started?") from exc
    finally:
        await asyncio.shield(close_within(connection))


async def outbox_failures(settings: Settings, agent: str) -> list[asyncpg.Record]:
    async with agent_pool(settings.database_url, agent, max_size=1) as pool:
        rows: list[asyncpg.Record] = await pool.fetch(
            "SELECT seq, message_id, message_type, routing_key, failed_at, error FROM outbox "
            "WHERE failed_at IS NOT NULL ORDER BY seq"
        )
        return rows


async def health(settings: Settings, agent: str) -> list[str]:
    """What is wrong with a running agent: its database, its inbox, its consumer, its tasks'
    heartbeats and progress (``broker.health``); empty if healthy. It looks with the agent's
    own logins (the compose health check runs in the agent's container, which has no other)."""
    problems = []
    tasks: list[progress.TaskRecord] | None = None
    pending, lag = 0, None
    urls = agent_urls(settings, agent)
    try:
        pending, failed, lag = await _outbox(urls.database, agent)
        if failed:
            problems.append(f"{failed} outbox message(s) parked as unroutable")
        tasks = await _tasks(urls.database, agent)
    except (OSError, asyncpg.PostgresError) as exc:
        problems.append(f"database: {exc}")
    names = Names(settings.namespace)
    try:
        connection = await link.connect(urls.amqp, timeout=5)
    except (OSError, aiormq.exceptions.AMQPError) as exc:
        return [*problems, f"broker: {exc!r}"]
    try:
        queues = await _queues(connection, [names.inbox(agent), names.answers(agent)])
    finally:
        await connection.close()
    inbox = queues.get(names.inbox(agent))
    answers = queues.get(names.answers(agent), (0, 0))
    if inbox is None:
        return [*problems, f"no inbox queue {names.inbox(agent)}: the agent never started"]
    idle = [
        name for name, (_, consumers) in ((names.inbox(agent), inbox), (names.answers(agent), answers)) if not consumers
    ]
    if idle:
        problems.append(f"nothing consumes {' or '.join(idle)}")
    if tasks is not None:
        if not tasks:
            problems.append("no task heartbeat recorded: the agent has not run since `kabuto migrate`")
        backlog = Backlog(inbox_ready=inbox[0] + answers[0], outbox_pending=pending, outbox_lag=lag)
        problems += task_problems(tasks, backlog, settings.stall_after)
    return problems


async def _tasks(database_url: str, agent: str) -> list[progress.TaskRecord]:
    async with agent_pool(database_url, agent, max_size=1) as pool:
        return await progress.read(pool)


@dataclass(frozen=True, slots=True)
class DeadLetterPage:
    """One page of an agent's dead letters, each with what its signature proves, and how many there are."""

    letters: list[tuple[DeadLetter, Provenance]]
    offset: int
    total: int

    @property
    def remaining(self) -> int:
        return max(0, self.total - self.offset - len(self.letters))


async def dead_letter_page(
    settings: Settings, agent: str, trust: TrustStore, *, offset: int = 0, limit: int = 100
) -> DeadLetterPage:
    """Dead letters ``offset`` to ``offset + limit`` of ``agent``, verified; they stay in the queue."""
    names = Names(settings.namespace)
    connection = await link.connect(settings.amqp_url)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(names.dead_letters(agent), passive=True)
        total = int(queue.declaration_result.message_count or 0)
        letters = []
        for index in range(offset + limit):
            message = await queue.get(no_ack=False, fail=False)
            if message is None:
                break
            if index >= offset:
                letter = _dead_letter(message)
                letters.append((letter, provenance(letter.body, letter.headers, trust)))
        await channel.close()  # unacked reads go back to the queue
        return DeadLetterPage(letters, offset, max(total, offset + len(letters)))
    except aiormq.exceptions.ChannelNotFoundEntity as exc:
        raise TopologyError(f"no dead-letter queue for {agent}: has it ever started?") from exc
    finally:
        await connection.close()
