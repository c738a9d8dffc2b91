"""The transactional outbox and its relay.

``store`` writes sealed messages in the caller's transaction; the insert's trigger (migration
0075) sends a NOTIFY that PostgreSQL delivers only on commit. The relay LISTENs for it,
publishes pending rows in sequence order with publisher confirms and mandatory routing, and
marks a row published only after the broker confirmed it. A crash between the confirm and the mark publishes the
row again; receivers absorb the duplicate in their inbox, because the bytes are identical.
An unroutable message is an error: the row is parked as failed, logged, and counted by
``kabuto status``; the rows after it still go, so one bad address cannot stall an agent.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import aio_pika
import asyncpg
from aio_pika.abc import AbstractExchange

from broker import logs
from broker.amqp_values import republishable
from broker.bundle import BUNDLE_TYPE, CONTENT_TYPE, Bundling, Item, Place, pack, sealed_bytes
from broker.db import notify_channel
from broker.envelope import Sealed, sign_headers
from broker.pki import Identity
from broker.progress import TaskBeat, stopping
from broker.supervision import ConnectionLost
from broker.topology import Exchanges, Names
from schemas import catalogue
from schemas.envelope import SIGNER_HEADER, Envelope

log = logs.get("kabuto.outbox")
# How long a window's marks wait for the next commit, to go with its read (OutboxRelay.run).
MARK_WITHIN = 0.05
# How long a run that ends waits for its last marks, and the next run for them if still going.
MARK_ON_END = 2.0


async def store(connection: asyncpg.Connection, messages: Sequence[Sealed], packing: Bundling | None = None) -> None:
    """Add sealed messages to the outbox within the caller's transaction. The insert wakes the
    agent's relay when the transaction commits (its trigger, migration 0075).

    ``packing``: what the messages send to one of Kabuto's queues under one key is stored as one
    packed bundle (``packed``); without it, every message is a row of its own, signed."""
    if (columns := rows(messages, packing)) is not None:
        await connection.execute(_STORE, *columns)


# The store's parameters: the outbox rows column by column, in their order.
Rows = tuple[list[object], ...]


def rows(messages: Sequence[Sealed], packing: Bundling | None) -> Rows | None:
    """``messages`` as outbox rows (``store``), the parameters of ``store_statement``; None for none,
    so that nothing is inserted and the relay is not woken."""
    if not messages:
        return None
    each = [_row(group[0]) if len(group) == 1 else _bundle_row(group) for group in packed(messages, packing)]
    return tuple(list(column) for column in zip(*each, strict=True))


def packed(messages: Sequence[Sealed], packing: Bundling | None) -> list[list[Sealed]]:
    """``messages`` cut into what is stored together (``Bundling.cut``): those not yet signed
    for one of Kabuto's queues under one key in a packed bundle, each other message alone; so
    each queue still receives an agent's messages in the order they were emitted."""
    if packing is None:
        return [[sealed] for sealed in messages]
    places = [
        Place(
            packing.queue_of(_exchange(sealed.envelope), routing_key(sealed.envelope)),
            len(sealed.body),
            key=sealed.signer,
            alone=sealed.signed is not None,  # signed already: it travels with its signature
        )
        for sealed in messages
    ]
    return [[messages[index] for index in group] for group in packing.cut(places)]


def store_statement(first: int) -> str:
    """The insert of a batch's outbox rows (``rows``), its parameters numbered from ``first`` (a
    statement may hold it as a CTE: ``broker.inbox.claim_storing``). One statement for a batch's
    messages, in their order (the seq the relay publishes by): one execution, where one per row
    cost the database three times as much (docs/performance.md, stop 24)."""
    p = [f"${first + k}" for k in range(6)]
    return f"""INSERT INTO outbox (message_id, message_type, exchange, routing_key, body, headers)
            SELECT message_id, message_type, exchange, routing_key, body, headers::jsonb
            FROM unnest({p[0]}::uuid[], {p[1]}::text[], {p[2]}::text[], {p[3]}::text[], {p[4]}::bytea[], {p[5]}::text[])
                 WITH ORDINALITY AS m (message_id, message_type, exchange, routing_key, body, headers, n)
            ORDER BY n"""


_STORE = store_statement(1)


def _row(sealed: Sealed) -> tuple[object, ...]:
    env = sealed.envelope
    return (env.message_id, env.type, _exchange(env), routing_key(env), sealed.body, json.dumps(sealed.headers))


def _bundle_row(group: Sequence[Sealed]) -> tuple[object, ...]:
    """One row for ``group`` (messages for one queue, under one key): a bundle of its items,
    unsigned, sealed by that key in this process as it packs them (broker.bundle)."""
    sealer = group[0].key
    body = pack([Item(str(m.envelope.message_id), m.envelope.type, {}, m.body) for m in group])
    headers = json.dumps(seal_headers(sealer, body, packed=True))
    return (uuid.uuid4(), BUNDLE_TYPE, "messages", routing_key(group[0].envelope), body, headers)


def _exchange(env: Envelope) -> str:
    return "events" if env.recipient is None else "messages"


def routing_key(env: Envelope) -> str:
    """An event by its type; a message by its recipient, an answer to the recipient's answers queue."""
    if env.recipient is None:
        return env.type
    spec = catalogue.lookup(env.type, env.version)
    return Names.answers_key(env.recipient) if spec is not None and spec.answer else env.recipient


def amqp_message(
    message_id: str | None, message_type: str | None, body: bytes, headers: Mapping[str, Any]
) -> aio_pika.Message:
    """A persistent AMQP message; the body is published byte for byte."""
    return aio_pika.Message(
        body,
        headers=dict(headers),
        message_id=message_id,
        type=message_type,
        content_type=CONTENT_TYPE if message_type == BUNDLE_TYPE else "application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )


def sent_again(
    message_id: str | None, message_type: str | None, body: bytes, headers: Mapping[str, Any]
) -> aio_pika.Message:
    """A delivery published again (its retry copy, its dead letter, an operator's replay) with the
    headers it came with, each value one that can be written back (``amqp_values.republishable``,
    B95): what others wrote into them travels outside every signature."""
    return amqp_message(message_id, message_type, body, republishable(headers))


def bundle_message(
    items: Sequence[Item], headers: Mapping[str, Any], sealer: Identity | None = None
) -> aio_pika.Message:
    """A persistent bundle of ``items`` (broker.bundle), named after its first item, sealed by
    ``sealer``: its signature over the bundle's bytes in the headers a message's travels in."""
    body = pack(items)
    if sealer is not None:
        headers = {**headers, **seal_headers(sealer, body)}
    return amqp_message(f"{items[0].message_id}+{len(items) - 1}", BUNDLE_TYPE, body, headers)


def seal_headers(sealer: Identity, body: bytes, *, packed: bool = False) -> dict[str, str]:
    """A bundle's seal (broker.bundle): ``sealer``'s signature over ``SEAL_CONTEXT`` (a packed
    bundle's: ``PACKED_SEAL_CONTEXT``) and the bundle's bytes, in the headers a message's
    signature travels in."""
    return sign_headers(sealer, sealed_bytes(body, packed=packed))


def sealer_of(
    items: Sequence[Item], signed_here: Sequence[bool], identities: Mapping[str, Identity]
) -> Identity | None:
    """Of ``identities`` (by fingerprint), the one that signed the most items, if any did, and
    every item naming it was signed in this process as it is (``signed_here``, one per item:
    broker.signed_here). A seal vouches for every item of its key, so one item of a key that
    this process did not sign as it stands leaves that key out."""
    signers: Counter[str] = Counter()
    spoiled: set[str] = set()
    for item, here in zip(items, signed_here, strict=True):
        signer = item.headers.get(SIGNER_HEADER, "")
        if here:
            signers[signer] += 1
        else:
            spoiled.add(signer)
    held = [(count, fp) for fp, count in signers.items() if fp in identities and fp not in spoiled]
    return identities[max(held)[1]] if held else None


@dataclass(slots=True)
class OutboxRelay:
    agent: str
    pool: asyncpg.Pool
    exchanges: Exchanges
    database_url: str
    batch: int
    idle_poll: timedelta
    bundling: Bundling = field(default_factory=Bundling)
    # The agent's identities by fingerprint: a bundle is sealed by the one that signed its items.
    sealers: Mapping[str, Identity] = field(default_factory=dict)
    beat: TaskBeat = field(default_factory=lambda: TaskBeat("relay"))
    # Set when a row for one of Kabuto's agents is parked (the agent has not declared its queues
    # yet), so that the parked rows are tried again soon (broker.parked.SOON).
    parked: asyncio.Event = field(default_factory=asyncio.Event)
    _wake: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    # The last run's marks, still going when it ended (``_mark_quietly``).
    _marking: asyncio.Future[None] | None = field(default=None, init=False)
    _listener_lost: bool = field(default=False, init=False)

    async def run(self) -> None:
        """Publish until cancelled; wake on commit, and every ``idle_poll`` as a safety net.

        A window's rows are marked published with the read of the next window, in one round trip
        (``relay_window.MARK_AND_READ``), when rows are committed while it is published or within
        ``MARK_WITHIN`` after — under load, nearly always: the relay's statements a window were
        two (docs/performance.md, stop 30). Otherwise they are marked alone, and the relay waits.
        A mark is bookkeeping: a row confirmed and not yet marked is only published again if
        the agent stops before marking it, and its receiver absorbs it.

        Any failure of the broker or the database (a publish on a dead channel, the LISTEN
        connection terminated, PostgreSQL restarting) ends the run with that error; the
        relay's supervisor starts it again on a new session with a new LISTEN connection,
        and the pending rows, still pending, are published then.
        """
        await self._mark_left()
        listener = await self._listen()
        marks: list[int] = []  # confirmed, not marked yet
        try:
            self.beat.running()
            while True:
                if stopping():  # a cancel a publish or a mark took in without raising it
                    raise asyncio.CancelledError
                self._wake.clear()
                if self._listener_lost:
                    raise ConnectionLost("the relay's LISTEN connection was closed")
                with self.beat.busy():
                    if await self._publish_next(marks) == self.batch or (
                        marks and await self._woken_within(MARK_WITHIN)
                    ):
                        continue  # more rows are waiting: the mark goes with their read
                    await self._mark(marks)
                if stopping():  # a cancel a publish took in without raising it: not a whole idle poll later
                    raise asyncio.CancelledError
                try:
                    async with asyncio.timeout(self.idle_poll.total_seconds()):
                        await self._wake.wait()
                except TimeoutError as exc:
                    if stopping():
                        raise asyncio.CancelledError from exc
        finally:
            await self._mark_quietly(marks)
            await _close_quietly(listener)

    async def _listen(self) -> asyncpg.Connection:
        self._listener_lost = False
        listener = await asyncpg.connect(
            self.database_url, timeout=10, server_settings={"application_name": f"kabuto-{self.agent}-listen"}
        )
        listener.add_termination_listener(self._on_listener_lost)
        await listener.add_listener(notify_channel(self.agent), self._on_notify)
        return listener

    def _on_notify(self, *_: object) -> None:
        self._wake.set()

    def _on_listener_lost(self, *_: object) -> None:
        self._listener_lost = True
        self._wake.set()

    async def publish_pending(self) -> int:
        """Publish one batch of pending rows in order, marked once confirmed; return how many
        were handled."""
        return await self._publish_next(None)

    async def _publish_next(self, marks: list[int] | None) -> int:
        """Read and publish the next window; ``marks``: the rows confirmed before, marked by the
        read, and this window's confirmed rows added for the next (None: marked here)."""
        # A window at a time, confirmed together (broker.relay_window); imported here, as it builds on this module.
        from broker.relay_window import MARK_AND_READ, publish_window

        rows = await self.pool.fetch(MARK_AND_READ, marks or [], self.batch)  # none to mark: a read
        if marks:
            marks.clear()
        if rows and await publish_window(
            self.agent, self.pool, self.exchanges, rows, self.bundling, self.sealers, marks
        ):
            self.parked.set()
        return len(rows)

    async def _woken_within(self, seconds: float) -> bool:
        """Whether a commit wakes the relay within ``seconds``."""
        try:
            async with asyncio.timeout(seconds):
                await self._wake.wait()
        except TimeoutError:
            return False
        return True

    async def _mark(self, marks: list[int]) -> None:
        from broker.relay_window import MARK_PUBLISHED

        if marks:
            await self.pool.execute(MARK_PUBLISHED, marks)
            marks.clear()

    async def _mark_quietly(self, marks: list[int]) -> None:
        """A run ends with rows confirmed and not marked: marked if the database answers within
        ``MARK_ON_END``. Past that the mark goes on, and the next run waits for it before it reads
        (``_mark_left``), rather than publish the rows again (found by review: the next run
        started 0.1 s later read them as pending while the mark still waited on the database)."""
        if not marks:
            return
        self._marking = asyncio.ensure_future(self._mark(list(marks)))
        try:
            async with asyncio.timeout(MARK_ON_END):
                await asyncio.shield(self._marking)
        except (TimeoutError, asyncio.CancelledError):
            log.warning("outbox_marks_pending", rows=len(marks))
        except Exception as exc:  # noqa: BLE001 — the run is ending; the rows are published again and absorbed
            log.warning("outbox_marks_left", rows=len(marks), error=repr(exc)[:200])

    async def _mark_left(self) -> None:
        """Wait for the mark the last run left going (``_mark_quietly``), at most ``MARK_ON_END``
        more: past that its rows are read as pending, published again and absorbed."""
        left, self._marking = self._marking, None
        if left is None:
            return
        try:
            async with asyncio.timeout(MARK_ON_END):
                await asyncio.shield(left)
        except TimeoutError:
            log.warning("outbox_marks_left", rows="unknown")
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("outbox_marks_left", error=repr(exc)[:200])

    def _exchange(self, name: str) -> AbstractExchange:
        return self.exchanges.events if name == "events" else self.exchanges.messages


async def _close_quietly(connection: asyncpg.Connection) -> None:
    if connection.is_closed():
        return
    try:
        async with asyncio.timeout(5):
            await connection.close()
    except (OSError, TimeoutError, asyncpg.InterfaceError, asyncpg.PostgresError):
        connection.terminate()
