"""Operations: what ``kabuto status`` and the dead-letter commands show and do.

Status reads the broker (queue depth and consumers, by passive declaration) and each
agent's outbox (pending rows, parked rows, age of the oldest pending row). Dead letters are
read from an agent's dead-letter queue without consuming them for good: listing and
inspecting requeue what they read; replaying republishes the original bytes and headers to
the agent's inbox and removes the dead letter only after the broker confirmed the copy.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import aio_pika
import aiormq
import asyncpg

from broker import instance, link, progress
from broker.access import agent_urls
from broker.amqp_values import republishable
from broker.bundle import BUNDLE_TYPE, ITEMS_HEADER, BundleMalformed, Item, carried, narrowed_to
from broker.db import agent_pool
from broker.health import Backlog, task_problems
from broker.link import close_within
from broker.metrics import outbox_figures
from broker.outbox import bundle_message, sent_again
from broker.provenance import Provenance, provenance
from broker.settings import Settings
from broker.topology import Names, TopologyError, check_ready
from broker.trust import TrustStore
from schemas.envelope import SIGNATURE_HEADERS

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
        queues = await _queues(
            connection, [q for a in agents for q in (names.inbox(a), names.answers(a), names.dead_letters(a))]
        )
        await _looked_again(connection, queues, [names.inbox(agent) for agent in agents])
        result = []
        for agent in agents:
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


async def none_running(settings: Settings, agents: Sequence[str]) -> None:
    """Return once no instance of any of ``agents`` runs in the namespace (none holds its lease),
    waiting up to ``KABUTO_INSTANCE_WAIT`` for them all; ``InstanceHeld`` past it
    (broker/instance.py). Each lease is looked at with its agent's own login, as the agent would
    take it (a passive declare needs no permission: docs/security.md)."""
    wait = settings.instance_wait.total_seconds()
    deadline = time.monotonic() + wait
    names = Names(settings.namespace)
    for agent in agents:
        connection = await link.connect(agent_urls(settings, agent).amqp)
        try:
            await instance.until_free(connection, names, agent, wait, deadline)
        finally:
            await connection.close()


async def _queues(connection: aio_pika.abc.AbstractConnection, names: list[str]) -> dict[str, tuple[int, int]]:
    found = {}
    for name in names:
        try:  # a queue not declared yet (the agent has never started) is left out at once
            found.update(await check_ready(connection, [name], timeout=2, missing_ok=True))
        except TopologyError:
            continue  # declared, but without a leader for 2 s
    return found


# A quorum queue whose leader does not answer the broker within 250 ms reads (0 messages, 0
# consumers) rather than an error (docs/resilience.md): status and health look at such a reading of
# a queue an agent consumes again before they say nothing consumes it. Any other reading is the
# broker's answer.
UNSURE_LOOKS = 3
UNSURE_PAUSE = 0.25


async def _looked_again(
    connection: aio_pika.abc.AbstractConnection, found: dict[str, tuple[int, int]], consumed: list[str]
) -> dict[str, tuple[int, int]]:
    """``found`` (``_queues``' readings), with those of ``consumed`` queues that read (0, 0) read
    again, up to ``UNSURE_LOOKS`` looks in all; one pause between looks serves every queue."""
    for _ in range(UNSURE_LOOKS - 1):
        unsure = [name for name in consumed if found.get(name) == (0, 0)]
        if not unsure:
            break
        await asyncio.sleep(UNSURE_PAUSE)  # the broker's next answer; nothing to wait on but time
        found.update(await _queues(connection, unsure))
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
    # A packed item's (broker.bundle): the bytes of the bundle whose seal is its only signature.
    sealed_in: bytes | None = None


async def dead_letters(settings: Settings, agent: str, limit: int = 100) -> list[DeadLetter]:
    """Read up to ``limit`` dead letters of ``agent``; they stay in the queue. A bundle the broker
    dead-lettered whole (past the delivery limit) is listed item by item, each with its own id."""
    names = Names(settings.namespace)
    connection = await link.connect(settings.amqp_url)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(names.dead_letters(agent), passive=True)
        letters: list[DeadLetter] = []
        while len(letters) < limit:
            message = await queue.get(no_ack=False, fail=False)
            if message is None:
                break
            letters += _dead_letters(message)
        await channel.close()  # unacked reads go back to the queue
        return letters[:limit]
    finally:
        await connection.close()


def _dead_letters(message: aio_pika.abc.AbstractIncomingMessage) -> list[DeadLetter]:
    letter = _dead_letter(message)
    items = _items(message)
    if items is None:
        return [letter]
    return [
        replace(
            letter,
            message_id=item.message_id,
            type=item.type,
            detail=f"{letter.detail} ({_place(message, n, len(items))})".strip(),
            size=len(item.body),
            headers=_item_headers(item, letter.headers),
            body=item.body,
            sealed_in=None if item.signed_alone else message.body,
        )
        for n, item in enumerate(items)
    ]


def _item_headers(item: Item, bundle: Mapping[str, Any]) -> dict[str, Any]:
    """A listed item's headers: its own signature's and why it is dead. A seal's signature is the
    bundle's, not the item's: it is kept only for a packed item, which has no other."""
    if not item.signed_alone:
        return dict(bundle)
    return {**item.headers, **{k: v for k, v in bundle.items() if k not in SIGNATURE_HEADERS}}


def _place(message: aio_pika.abc.AbstractIncomingMessage, n: int, count: int) -> str:
    if ITEMS_HEADER in message.headers:  # a packed bundle, narrowed to the items dead in it
        return "a packed item, carried by its sealed bundle"
    return f"item {n + 1} of {count} of bundle {message.message_id}"


def _items(message: aio_pika.abc.AbstractIncomingMessage) -> list[Item] | None:
    """A dead-lettered bundle's items (those it carries: ``bundle.carried``); None for a single
    message or a bundle that is not one."""
    if message.type != BUNDLE_TYPE:
        return None
    try:
        return carried(message.body, message.headers)
    except BundleMalformed:
        return None  # dead-lettered as bundle_malformed: shown, and replayed, as it came


def _dead_letter(message: aio_pika.abc.AbstractIncomingMessage) -> DeadLetter:
    headers = dict(message.headers)
    reason, detail = headers.get("x-kabuto-reason"), headers.get("x-kabuto-detail", "")
    if reason is None:  # dead-lettered by the broker itself, e.g. past the delivery limit
        reason = f"broker:{_death(headers).get('reason', 'unknown')!s}"
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
    """Send one dead letter back to its agent's inbox, unchanged; True if it was found. An item of
    a bundle the broker dead-lettered goes back alone, and the rest of its bundle stays dead."""
    names = Names(settings.namespace)
    connection = await link.connect(settings.amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        queue = await channel.declare_queue(names.dead_letters(agent), passive=True)
        messages = await channel.declare_exchange(names.messages, passive=True)
        dead = await channel.declare_exchange(names.dead, passive=True)
        while True:
            message = await queue.get(no_ack=False, fail=False)
            if message is None:
                return False
            items = _items(message) if message.message_id != message_id else None
            found = [i for i in items or () if i.message_id == message_id]
            if message.message_id != message_id and not found:
                continue  # left unacked: requeued when the channel closes
            routing_key = _sent_to(message.headers, agent)
            if not found:
                await messages.publish(
                    _as_sent(message.message_id, message.type, message.body, message.headers), routing_key
                )
            else:
                item = found[0]
                await messages.publish(_replayed(message, item), routing_key)
                rest = [i for i in items or () if i is not item]
                if rest:  # the rest of the bundle stays dead, as it was, to be replayed on its own
                    await dead.publish(_kept(message, rest, routing_key), routing_key=agent)
            await message.ack()
            return True
    except aiormq.exceptions.ChannelNotFoundEntity as exc:
        raise TopologyError(f"no dead-letter queue for {agent}: has it ever started?") from exc
    finally:
        await asyncio.shield(close_within(connection))


# What the broker and the consumer add to a dead letter; taken off when it is sent again.
_DEATH_HEADERS = (
    *KABUTO_HEADERS,
    "x-death",
    "x-kabuto-attempt",
    "x-first-death-exchange",
    "x-first-death-queue",
    "x-first-death-reason",
)


def _sent_to(headers: Mapping[str, Any], agent: str) -> str:
    """The routing key a dead letter was sent with: the consumer records it; the broker's own
    dead-lettering (past the delivery limit) leaves it in ``x-death``. The agent's name is the
    last resort, which only an agent hosting itself binds (not the investor agent)."""
    recorded = headers.get("x-kabuto-routing-key")
    if recorded:
        return str(recorded)
    keys = _death(headers).get("routing-keys")
    return str(keys[0]) if isinstance(keys, list) and keys else agent


def _death(headers: Mapping[str, Any]) -> Mapping[str, Any]:
    """The broker's latest record of how a message died (``x-death``), or nothing."""
    deaths = headers.get("x-death")
    return deaths[0] if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict) else {}


def _as_sent(message_id: str | None, type_: str | None, body: bytes, headers: Mapping[str, Any]) -> aio_pika.Message:
    return sent_again(message_id, type_, body, {k: v for k, v in headers.items() if k not in _DEATH_HEADERS})


def _replayed(message: aio_pika.abc.AbstractIncomingMessage, item: Item) -> aio_pika.Message:
    """One item of a dead-lettered bundle sent again: alone, with its signature; or, a packed item
    (broker.bundle), which has none of its own, the bundle sealed as it was, narrowed to it."""
    if item.signed_alone:
        return _as_sent(item.message_id, item.type, item.body, item.headers)
    return _as_sent(item.message_id, BUNDLE_TYPE, message.body, narrowed_to(message.headers, [item]))


def _kept(message: aio_pika.abc.AbstractIncomingMessage, rest: list[Item], routing_key: str) -> aio_pika.Message:
    """What is left of a dead-lettered bundle, dead still, with the headers that say why and
    where it was sent (``x-death``, which said so, is not kept)."""
    headers = {k: v for k, v in message.headers.items() if k != "x-death"}
    headers.setdefault("x-kabuto-reason", _dead_letter(message).reason)
    headers["x-kabuto-routing-key"] = routing_key
    if not all(item.signed_alone for item in rest):
        # packed items are signed by the seal alone: the bundle stays whole, narrowed to them
        return sent_again(message.message_id, BUNDLE_TYPE, message.body, narrowed_to(headers, rest))
    # The seal covered the whole bundle, not what is left of it: its items are checked alone.
    return bundle_message(rest, republishable({k: v for k, v in headers.items() if k not in SIGNATURE_HEADERS}))


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
        consumed = [names.inbox(agent), names.answers(agent)]
        queues = await _looked_again(connection, await _queues(connection, consumed), consumed)
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


_Order = tuple[datetime, str, int]


class _Earliest:
    """The ``keep`` letters with the smallest order among all offered, in a bounded heap."""

    def __init__(self, keep: int) -> None:
        self._keep = keep
        self._heap: list[tuple[_Latest, int, DeadLetter]] = []
        self.seen = 0

    def offer(self, order: _Order, letter: DeadLetter) -> None:
        self.seen += 1
        entry = (_Latest(order), self.seen, letter)
        if len(self._heap) < self._keep:
            heapq.heappush(self._heap, entry)
        elif self._heap and self._heap[0][0].order > order:
            heapq.heapreplace(self._heap, entry)

    def sorted(self) -> list[DeadLetter]:
        return [letter for _, _, letter in sorted(self._heap, key=lambda e: (e[0].order, e[1]))]


@dataclass(frozen=True, slots=True)
class _Latest:
    """Orders the heap latest first, so its top is the letter to drop for an earlier one."""

    order: _Order

    def __lt__(self, other: _Latest) -> bool:
        return self.order > other.order


def _died_at(headers: Mapping[str, Any]) -> datetime:
    """When a letter was dead-lettered: the consumer says so; the broker's ``x-death`` has a time."""
    said = headers.get("x-kabuto-dead-lettered-at")
    if isinstance(said, str):
        try:
            return datetime.fromisoformat(said)
        except ValueError:
            pass
    when = _death(headers).get("time")
    if isinstance(when, datetime):
        return when if when.tzinfo else when.replace(tzinfo=UTC)
    return datetime.min.replace(tzinfo=UTC)


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
    """Dead letters ``offset`` to ``offset + limit`` of ``agent`` in the order they died, verified;
    they stay in the queue.

    Every page reads the whole queue: a quorum queue puts back what a reader handed back in an
    order of its own, so the queue's order is not the same from one page to the next (found by
    review: offset pages skipped and repeated letters). Letters are ordered by when they were
    dead-lettered, then by the delivery's id and their place in it (a bundle's items keep theirs),
    none of which changes between reads;
    only the first ``offset + limit`` are kept while reading.
    """
    names = Names(settings.namespace)
    connection = await link.connect(settings.amqp_url)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(names.dead_letters(agent), passive=True)
        first = _Earliest(offset + limit)
        while (message := await queue.get(no_ack=False, fail=False)) is not None:
            for place, letter in enumerate(_dead_letters(message)):  # a bundle dead-lettered whole: each item
                first.offer((_died_at(letter.headers), message.message_id or "", place), letter)
        await channel.close()  # unacked reads go back to the queue
        page = [
            (letter, provenance(letter.body, letter.headers, trust, sealed_in=letter.sealed_in))
            for letter in first.sorted()[offset:]
        ]
        return DeadLetterPage(page, offset, first.seen)
    except aiormq.exceptions.ChannelNotFoundEntity as exc:
        raise TopologyError(f"no dead-letter queue for {agent}: has it ever started?") from exc
    finally:
        await connection.close()
