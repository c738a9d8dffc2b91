"""Group commit: several deliveries settled in one transaction.

The broker pushes up to ``prefetch`` deliveries ahead; ``Deliveries`` hands them to the
consumer in batches of what has already arrived (never waiting to fill a batch, so a lone
message is not delayed). ``settle_batch`` then does for a batch what ``Consumer.settle``
does for one delivery, with one connection, one transaction and one commit (one WAL flush)
for all of them:

* every delivery is verified and parsed first, outside the transaction — as it arrives, when
  the consumer gave ``Deliveries`` an opener (below); one that fails a check is dead-lettered
  with its reason, exactly as alone;
* the others run in delivery order, so order per book and per account is the queue's order.
  First all at once: the handlers run one after the other with no savepoint, then one
  statement claims every inbox row and writes every outbox row (``inbox.claim_storing``).
  That is the common case, and it costs one round trip for the batch on top of the handlers'
  own statements. A delivery the inbox holds already (a redelivery, a replayed id) makes that
  statement roll the transaction back, and the batch runs all at once again with its claim
  first (``inbox.claim_all``), so that the redeliveries' handlers do not run. An agent
  may keep something across the handlers of such a batch (``BatchScope``: the exchange's books,
  settlement's account locks), since no savepoint there releases a lock; its end may still
  refuse the batch, which then runs as below. Consecutive deliveries taken by one set-based
  handler (``broker.set_based``: of one type, or of the several it is registered for) go to it
  in one call, so that it reads and
  writes their rows with one statement per table rather than a few per delivery;
* if any handler refuses (``Rejected``) or fails, that transaction is rolled back whole and
  the batch runs again with each delivery in its own savepoint: the one that refused or
  failed is rolled back to its savepoint alone and, after the commit, dead-lettered or
  scheduled for retry — a poisoned delivery never takes the rest of its batch down (at most
  ``SAVEPOINTS_AT_MOST`` deliveries a transaction, so that PostgreSQL keeps every
  subtransaction in shared memory);
* if the transaction cannot commit at all (the connection broke, a serialization failure),
  nothing of it happened: the batch is settled again one delivery at a time through
  ``Consumer.settle``, each in its own transaction, as before group commit. When the one that
  failed was a later savepoint transaction, the deliveries of those before it committed: they
  conclude with what they recorded, and only the rest are settled again.

Acks follow the commit (``Consumer.run``), one frame for the batch, so exactly-once through
the inbox is unchanged: a crash before the ack redelivers the whole batch, and the inbox
absorbs every delivery of it.
"""

from __future__ import annotations

import asyncio
import functools
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import (
    AbstractAsyncContextManager,
    AbstractContextManager,
    AsyncExitStack,
    asynccontextmanager,
    nullcontext,
)
from contextvars import ContextVar
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING

import aiormq
import asyncpg
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue, ConsumerTag

from broker import inbox, logs, outbox, set_based
from broker.bundle import Delivery, unbundled
from broker.context import Context
from broker.db import Writes
from broker.envelope import Opened, Sealed
from broker.errors import Rejected, rejection_of
from broker.supervision import is_infrastructure
from schemas.catalogue import Message

if TYPE_CHECKING:
    from broker.consumer import Consumer, Settled

log = logs.get("kabuto.consumer")
# What an agent keeps across the handlers of one batch and finishes before the commit
# (the exchange's warm books: agents/exchange/warm_book.py); entered only when the batch runs
# all at once, left with an error if any handler raised. It is given the messages its
# handlers are about to handle, in order (the deliveries the inbox had not seen), so it may
# read ahead for them (the exchange's acceptance views: agents/exchange/read_ahead.py).
BatchScope = Callable[[asyncpg.Connection, Sequence[Message]], AbstractAsyncContextManager[None]]
# A delivery verified and parsed (or refused, with its reason) as it arrived; None when it
# was not, or opening it raised something else: it is opened again when its batch takes it.
Opening = Opened | Rejected | None
Opener = Callable[[Delivery], Opening]
CANCEL_WITHIN = 5.0  # seconds the broker has to confirm a consumer's cancel when it stops
# A batch run again a savepoint each commits at most this many deliveries a transaction.
# PostgreSQL keeps a transaction's first 64 subtransactions in shared memory
# (PGPROC_MAX_CACHED_SUBXIDS); past them, every snapshot taken on the server looks the rest up in
# pg_subtrans for as long as the transaction lasts, which slows every agent's statements, not
# only this batch's. A savepoint that writes is a subtransaction, and a batch may hold
# KABUTO_BATCH_SIZE (128) deliveries and one bundle more. What a transaction committed before a
# later one failed is absorbed by the inbox when the batch is settled again alone.
SAVEPOINTS_AT_MOST = 64


class Deliveries:
    """The deliveries the broker pushed to this consumer, taken in batches of what has arrived.

    Several queues are taken in the order given: a batch takes whatever the first has, then
    the next (the agent's answers queue ahead of its inbox, so work under way is finished
    before new work is started). Each queue's deliveries stay in their order.

    A bundle (``broker.bundle``) is unpacked as it arrives and its items are taken together,
    never split between two batches, so the batch that holds them acks the bundle once all
    are settled. A batch may thus exceed its limit by one bundle.

    With an ``opener``, each delivery is opened (its signature verified, its envelope and
    payload parsed and checked: ``Consumer.open_ahead``) as it arrives, and ``opened`` hands
    the results over with its batch. A delivery arrives while the consumer waits for
    PostgreSQL on the batch before it, so its opening fills time the event loop would
    otherwise spend idle, rather than lengthening its own batch (issue 8: order entry was
    bound by the exchange's consumer, busy settling every moment and idle in a third of them).

    On exit the consumers are cancelled and every delivery not yet taken is handed back
    (nack with requeue), so a stop loses nothing and redelivers it to the next consumer.
    """

    def __init__(self, *queues: AbstractQueue, opener: Opener | None = None) -> None:
        self._queues = queues
        self._opener = opener
        # What each delivery in the buffers opened to, by its identity: an entry lives only
        # while its delivery is held here, so an identity is never another delivery's.
        self._ahead: dict[int, Opening] = {}
        self._buffers: list[deque[list[Delivery]]] = [deque() for _ in queues]
        self._arrival = asyncio.Event()
        # A queue's channel closed: nothing more will arrive.
        self._ended = False
        self._tags: list[tuple[AbstractQueue, ConsumerTag]] = []

    async def __aenter__(self) -> Deliveries:
        for buffer, queue in zip(self._buffers, self._queues, strict=True):
            queue.close_callbacks.add(self._closed)
            self._tags.append((queue, await queue.consume(functools.partial(self._arrived, buffer))))
        return self

    async def _arrived(self, buffer: deque[list[Delivery]], delivery: AbstractIncomingMessage) -> None:
        items = unbundled(delivery)
        if self._opener is not None:
            for item in items:
                self._ahead[id(item)] = self._opened_ahead(self._opener, item)
        buffer.append(items)
        self._arrival.set()

    @staticmethod
    def _opened_ahead(opener: Opener, item: Delivery) -> Opening:
        """Never raises: in aio-pika's consume callback an error is only logged, and the delivery
        would be lost to its batch."""
        try:
            return opener(item)
        except Exception:  # noqa: BLE001 — opened again when its batch takes it
            return None

    def _closed(self, *_: object) -> None:
        self._ended = True
        self._arrival.set()

    async def next_batch(self, limit: int) -> list[Delivery] | None:
        """Wait for one delivery, then take whatever else is already here, up to ``limit``
        (a bundle whole); None once a channel has closed and every delivery that arrived
        before was taken."""
        while not any(self._buffers):
            if self._ended:
                return None
            self._arrival.clear()
            await self._arrival.wait()
        batch: list[Delivery] = []
        for buffer in self._buffers:
            while buffer and (not batch or len(batch) + len(buffer[0]) <= limit):
                batch.extend(buffer.popleft())
            if buffer:
                break  # what is left of this queue goes first in the next batch, before later queues'
        return batch

    def opened(self, batch: Sequence[Delivery]) -> list[Opening]:
        """What each delivery of a batch just taken opened to as it arrived (None: not opened)."""
        return [self._ahead.pop(id(delivery), None) for delivery in batch]

    async def __aexit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        for queue, tag in self._tags:
            queue.close_callbacks.discard(self._closed)
            if not queue.channel.is_closed:
                await self._cancel(queue, tag)
        for buffer in self._buffers:
            while buffer:
                delivery = buffer.popleft()[0]  # a bundle's items share its one delivery
                if not delivery.channel.is_closed:
                    await delivery.nack(requeue=True)
        self._ahead.clear()

    async def _cancel(self, queue: AbstractQueue, tag: ConsumerTag) -> None:
        """Stop the broker's deliveries, waiting for its answer ``CANCEL_WITHIN`` seconds at most.

        Unbounded, this wait hung a stopping agent — and the whole test suite — for as long as a
        busy broker left a quorum queue's ``basic.cancel`` unanswered. Past the bound aiormq
        closes the channel, which cancels the consumer and requeues every unacked delivery.
        """
        try:
            await queue.cancel(tag, timeout=CANCEL_WITHIN)
        except (TimeoutError, aiormq.exceptions.AMQPError, RuntimeError) as exc:
            log.warning("consumer_cancel_unanswered", queue=queue.name, error=repr(exc)[:200])


@dataclass(slots=True)
class _Item:
    """One delivery of a batch on its way through the shared transaction."""

    delivery: Delivery
    opened: Opened
    duplicate: bool = False
    rejected: Rejected | None = None
    failure: Exception | None = None
    context: Context | None = field(default=None, repr=False)
    # Its savepoint transaction committed, though a later one of the batch may fail.
    committed: bool = False


async def settle_batch(
    consumer: Consumer, deliveries: Sequence[Delivery], ahead: Sequence[Opening] = ()
) -> list[Settled]:
    """Decide and carry out everything for a batch except the acks; one outcome per delivery, in order.

    ``ahead``: what the deliveries opened to as they arrived (``Deliveries.opened``), if they were.
    """
    openings = list(ahead) or [None] * len(deliveries)
    if len(deliveries) == 1:
        return [await consumer.settle(deliveries[0], openings[0])]
    settled: dict[int, Settled] = {}
    items: dict[int, _Item] = {}
    consumer.trust.look_at_revocations()  # the batch is judged by the list as it is now (B56)
    for index, (delivery, opening) in enumerate(zip(deliveries, openings, strict=True)):
        try:
            items[index] = _Item(delivery, consumer.opened(delivery, opening))
        except Rejected as rejected:
            with _bound(consumer, delivery):
                settled[index] = await consumer._dead_letter(delivery, rejected)
    try:
        await _transaction(consumer, list(items.values()))
    except Exception as exc:  # noqa: BLE001 — what did not commit is settled again alone
        alone = sum(not item.committed for item in items.values())
        log.warning("group_commit_fell_back", deliveries=alone, error=repr(exc))
        for index, item in items.items():
            if item.committed:  # by a savepoint transaction before the one that failed: not a redelivery
                settled[index] = await _conclude(consumer, item)
            else:
                settled[index] = await consumer.settle(item.delivery, item.opened)
        return [settled[i] for i in range(len(deliveries))]
    for index, item in items.items():
        settled[index] = await _conclude(consumer, item)
    return [settled[i] for i in range(len(deliveries))]


async def _transaction(consumer: Consumer, items: list[_Item]) -> None:
    if not items:
        return
    async with consumer.pool.acquire() as connection:
        try:
            if not await _all_at_once(consumer, connection, items, claim_first=not _distinct(items)):
                _forget(items)
                await _all_at_once(consumer, connection, items, claim_first=True)
            return
        except _OneRefused as refused:
            log.info("group_commit_savepoints", deliveries=len(items), cause=repr(refused.__cause__))
        _forget(items)
        for start in range(0, len(items), SAVEPOINTS_AT_MOST):
            chunk = items[start : start + SAVEPOINTS_AT_MOST]
            async with connection.transaction():
                await _one_savepoint_each(consumer, connection, chunk)
            for item in chunk:
                item.committed = True


class _OneRefused(Exception):
    """A delivery of the batch refused or failed: the batch runs again, a savepoint each."""


async def _all_at_once(
    consumer: Consumer, connection: asyncpg.Connection, items: list[_Item], *, claim_first: bool
) -> bool:
    """Every handler in one transaction, no savepoint; False if it rolled back because a
    delivery was in the inbox already.

    Claimed first (``claim_first``): the inbox rows before the handlers, which then skip the
    redeliveries, and the outbox rows after. Otherwise the claim goes with the outbox rows, in
    one statement after the handlers (``inbox.claim_storing``), and any delivery seen before
    rolls the whole transaction back: the caller then runs the batch again, claimed first."""
    riders: list[Writes] = []
    reset = _RIDERS.set(riders)
    try:
        async with connection.transaction():
            if claim_first:
                fresh = await inbox.claim_all(connection, [item.opened for item in items])
                for item, new in zip(items, fresh, strict=True):
                    item.duplicate = not new
            await _handle_all(consumer, connection, [item for item in items if not item.duplicate])
            if claim_first:
                await _store(consumer, connection, items)
                for writes in riders:
                    await writes.execute(connection)
            else:
                opened = [item.opened for item in items]
                await inbox.claim_storing(connection, opened, _rows(consumer, items), riders)
    except inbox.SeenBefore as seen:
        log.info("group_commit_seen_before", deliveries=len(items), detail=str(seen))
        return False
    finally:
        _RIDERS.reset(reset)
    return True


# The last writes of a batch run all at once, made by the statement that claims it (``ride``).
_RIDERS: ContextVar[list[Writes] | None] = ContextVar("riders", default=None)


def ride(writes: Writes) -> bool:
    """Have ``writes`` made by the statement that claims the batch under way and stores its
    outbox rows (``inbox.claim_storing``), one round trip fewer; False outside a batch run all at
    once, and the caller writes them itself. For a batch scope's last writes (the exchange's held
    transfer requests) or a handler's appends that nothing reads back (the investor agent's
    record of what settlement said): nothing the batch runs after them may read what they write.
    The same appends twice in a batch (two runs of one handler; ``Writes.appends``) are joined
    into one rider (``Writes.joined``); other riders of one batch name their CTEs apart (a clash
    fails the claim, and the batch runs again a delivery at a time)."""
    riders = _RIDERS.get()
    if riders is None:
        return False
    for place, rider in enumerate(riders):
        if (both := rider.joined(writes)) is not None:
            riders[place] = both
            return True
    riders.append(writes)
    return True


async def ride_or_write(connection: asyncpg.Connection, writes: Writes) -> None:
    """``writes`` riding in the batch's claim (``ride``), or made now where there is none."""
    if not ride(writes):
        await writes.execute(connection)


async def _handle_all(consumer: Consumer, connection: asyncpg.Connection, handled: list[_Item]) -> None:
    try:
        async with consumer.batch_scope(connection, [item.opened.message for item in handled]):
            for run in set_based.runs(handled, _message, consumer.handlers.__getitem__):
                await _handle_run(consumer, connection, run)
    except Exception as exc:
        if is_infrastructure(exc) and not isinstance(exc, Rejected):
            raise  # the transaction itself is gone: the batch falls back (and waits out an outage)
        raise _OneRefused from exc


def _distinct(items: list[_Item]) -> bool:
    """No message id twice in the batch: only then may its claim wait for its handlers."""
    return len({item.opened.envelope.message_id for item in items}) == len(items)


def _forget(items: list[_Item]) -> None:
    """What a rolled-back run decided about each delivery, before the batch runs again."""
    for item in items:
        item.duplicate, item.context = False, None


async def _store(consumer: Consumer, connection: asyncpg.Connection, items: list[_Item]) -> None:
    """What the batch's handled deliveries emitted, in their order, as one store: what it sends
    one of Kabuto's queues is one packed bundle (broker.outbox.packed)."""
    await outbox.store(connection, _emitted(items), consumer.packing)


def _rows(consumer: Consumer, items: list[_Item]) -> outbox.Rows | None:
    """``_store``'s rows, for the statement that claims the batch with them."""
    return outbox.rows(_emitted(items), consumer.packing)


def _emitted(items: list[_Item]) -> list[Sealed]:
    return [sealed for item in items if item.context for sealed in item.context.emitted]


def _message(item: _Item) -> Message:
    return item.opened.message


async def _handle_run(consumer: Consumer, connection: asyncpg.Connection, run: list[_Item]) -> None:
    """One delivery by its handler, or a run by its set-based handler (one call)."""
    if len(run) == 1:
        item = run[0]
        with _bound(consumer, item.delivery, item.opened):
            item.context = await consumer.handle(connection, item.opened)
        return
    types = "+".join(dict.fromkeys(item.opened.envelope.type for item in run))  # a run may mix types
    with logs.bound(agent=consumer.agent, type=types, run=len(run)):
        contexts = await consumer.handle_set(connection, [item.opened for item in run])
    for item, context in zip(run, contexts, strict=True):
        item.context = context


async def _one_savepoint_each(consumer: Consumer, connection: asyncpg.Connection, items: list[_Item]) -> None:
    """Each delivery in a savepoint of its own; what those kept emitted stored together at the end,
    in the transaction that commits them (found by an independent suite: stored a delivery at a
    time, nothing of the batch was packed)."""
    for item in items:
        with _bound(consumer, item.delivery, item.opened):
            await _savepoint(consumer, connection, item)
    await _store(consumer, connection, items)


async def _savepoint(consumer: Consumer, connection: asyncpg.Connection, item: _Item) -> None:
    try:
        async with connection.transaction():
            item.context = await consumer.apply(connection, item.opened, store=False)
            item.duplicate = item.context is None
    except Exception as exc:
        if is_infrastructure(exc) and not isinstance(exc, Rejected):
            raise  # the transaction itself is gone: the batch falls back (and waits out an outage)
        item.context = None
        item.rejected = rejection_of(exc)  # as the consumer judges a delivery handled alone
        if item.rejected is None:
            item.failure = exc


def no_scope(_: asyncpg.Connection, __: Sequence[Message]) -> AbstractAsyncContextManager[None]:
    return nullcontext()


def scopes(*each: BatchScope) -> BatchScope:
    """One batch scope of several, entered in order and left in reverse (each finishes before
    the one it was entered after)."""

    @asynccontextmanager
    async def combined(connection: asyncpg.Connection, messages: Sequence[Message]) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            for scope in each:
                await stack.enter_async_context(scope(connection, messages))
            yield

    return combined


async def ack(batch: Sequence[Delivery]) -> None:
    """Ack a settled batch: one frame per channel it came on (the answers queue has its own),
    since every earlier delivery of that channel was in this batch or acked with the batches
    before it — a batch takes each queue's deliveries from the front."""
    last: dict[int, Delivery] = {}
    for delivery in batch:
        last[id(delivery.channel)] = delivery
    for delivery in last.values():
        await delivery.ack(multiple=True)


async def _conclude(consumer: Consumer, item: _Item) -> Settled:
    with _bound(consumer, item.delivery, item.opened):
        if item.rejected is not None:
            return await consumer._dead_letter(item.delivery, item.rejected)
        if item.failure is not None:
            return await consumer._retry_or_give_up(item.delivery, item.failure)
        return consumer.committed(item.opened, duplicate=item.duplicate)


def _bound(consumer: Consumer, delivery: Delivery, opened: Opened | None = None) -> AbstractContextManager[None]:
    if opened is None:
        return logs.bound(agent=consumer.agent, message_id=delivery.message_id, type=delivery.type, correlation_id=None)
    return logs.bound_to(opened.envelope, agent=consumer.agent)
