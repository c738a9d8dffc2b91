"""The consumer: verify → parse → inbox → handler → outbox → commit → ack, written once.

``settle`` decides what becomes of one delivery and does everything but the ack:

* a delivery that fails any check of ``broker.envelope`` is dead-lettered with its reason
  and logged as a security or input event; no state changes;
* a delivery whose id is in the inbox with the same bytes is a redelivery: nothing happens;
  the same id with other bytes is a replayed message id and is dead-lettered;
* otherwise the handler runs in one transaction with the inbox row and the outbox rows of
  what it emits, and the transaction commits;
* a failure that may pass is retried through the agent's delay queues, and dead-lettered
  as ``retries_exhausted`` once the attempts run out;
* a failure of our own infrastructure is not the message's: when the database cannot be
  reached the delivery is held, unacked and uncounted, until PostgreSQL answers, and then
  processed (``broker.supervision``; a lost broker session is its supervisor's business).

``run`` acks each delivery only after ``settle`` returned, that is after the commit or after
the dead letter or retry copy was confirmed by the broker.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import aio_pika
import asyncpg
from aio_pika.abc import AbstractQueue

from broker import group_commit, inbox, logs, metrics, outbox
from broker.bundle import BundledDelivery, Bundling, Delivery, dead_letter_of, malformed, sealed_bytes, sent_alone
from broker.context import Context
from broker.envelope import (
    MAX_MESSAGE_BYTES,
    Freshness,
    Opened,
    check_size,
    open_delivery,
    still_valid,
    verified_signer,
)
from broker.errors import InputRejected, Reason, Rejected, SecurityRejected, rejection_of
from broker.pki import Identity
from broker.progress import TaskBeat
from broker.set_based import SetBased
from broker.supervision import ConnectionLost, is_infrastructure, until_database_answers
from broker.topology import Exchanges, Names
from broker.trust import TrustStore
from schemas.catalogue import Message, MessageSpec
from schemas.envelope import SIGNATURE_HEADER

log = logs.get("kabuto.consumer")

Handler = Callable[[Any, Context], Awaitable[None]]
ATTEMPT_HEADER = "x-kabuto-attempt"
HELD_WHILE_ANSWERING = 3
STOP_GRACE = 15.0  # seconds a batch in flight may take to finish once the consumer is stopped
EVIDENCE_BYTES = 4096
# Refusals that depend on the moment of the check: one made on arrival is made again when the
# batch takes the delivery (``Consumer.opened``).
MOMENT_REASONS = frozenset(
    {
        Reason.STALE_MESSAGE,
        Reason.CERTIFICATE_EXPIRED,
        Reason.CERTIFICATE_NOT_YET_VALID,
        Reason.CERTIFICATE_REVOKED,
        Reason.CLEAR_ACCOUNT_REFUSED,
    }
)


class Outcome(StrEnum):
    PROCESSED = "processed"
    DUPLICATE = "duplicate"
    DEAD_LETTERED = "dead_lettered"
    RETRY_SCHEDULED = "retry_scheduled"


@dataclass(frozen=True, slots=True)
class Settled:
    message_id: str | None
    outcome: Outcome
    reason: Reason | None = None
    type: str | None = None
    correlation_id: str | None = None


class Outcomes:
    """What the consumer did with recent deliveries, for waiters (tests, the demo) and metrics.

    Memory is bounded: the last ``history`` outcomes are kept, so a waiter that starts late
    still finds a recent one, and every waiter sees each outcome recorded while it waits,
    however many there are. Totals per outcome are counters, not lists.
    """

    def __init__(self, history: int = 10_000) -> None:
        self._recent: deque[Settled] = deque(maxlen=history)
        self._totals: Counter[Outcome] = Counter()
        self._waiters: set[_Waiter] = set()

    def __len__(self) -> int:
        return len(self._recent)

    async def record(self, settled: Settled) -> None:
        self._recent.append(settled)
        self._totals[settled.outcome] += 1
        for waiter in list(self._waiters):
            waiter.offer(settled)

    async def wait_for(self, message_id: object, *, timeout: float = 15.0) -> Settled:
        """The first outcome recorded for ``message_id``, waiting for it up to ``timeout``."""
        key = str(message_id)
        return await self.wait(lambda s: s.message_id == key, timeout=timeout)

    async def wait(self, match: Callable[[Settled], bool], *, timeout: float = 15.0) -> Settled:
        """The first outcome that ``match`` accepts, waiting for it up to ``timeout``."""
        return (await self.wait_count(match, 1, timeout=timeout))[0]

    async def wait_count(self, match: Callable[[Settled], bool], count: int, *, timeout: float = 15.0) -> list[Settled]:
        """The first ``count`` outcomes that ``match`` accepts, waiting for them up to ``timeout``."""
        waiter = _Waiter(match, count)
        for settled in self._recent:
            waiter.offer(settled)
        if waiter.done.done():
            return waiter.found
        self._waiters.add(waiter)
        try:
            async with asyncio.timeout(timeout):
                await waiter.done
            return waiter.found
        finally:
            self._waiters.discard(waiter)

    async def reply(self, type_: str, correlation_id: object, *, timeout: float = 15.0) -> Settled:
        """The outcome of the ``type_`` message in the conversation ``correlation_id``."""
        key = str(correlation_id)
        return await self.wait(lambda s: s.type == type_ and s.correlation_id == key, timeout=timeout)

    def count(self, outcome: Outcome) -> int:
        """How many deliveries had ``outcome`` since the consumer started."""
        return self._totals[outcome]


class _Waiter:
    def __init__(self, match: Callable[[Settled], bool], count: int) -> None:
        self.match, self.count = match, count
        self.found: list[Settled] = []
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def offer(self, settled: Settled) -> None:
        if not self.done.done() and self.match(settled):
            self.found.append(settled)
            if len(self.found) >= self.count:
                self.done.set_result(None)


@dataclass(slots=True)
class Consumer:
    agent: str
    pool: asyncpg.Pool
    trust: TrustStore
    identities: Mapping[str, Identity]
    handlers: Mapping[type[Message], Handler]
    exchanges: Exchanges
    names: Names
    freshness: Freshness
    retry_delays_ms: tuple[int, ...]
    outcomes: Outcomes = field(default_factory=Outcomes)
    # Deliveries settled in one transaction at most (broker.group_commit); 1 is one by one.
    batch_size: int = 1
    max_message_bytes: int = MAX_MESSAGE_BYTES
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    # Versions with clear accounts are handled until then (None: refused already).
    clear_accounts_until: datetime | None = None
    beat: TaskBeat = field(default_factory=lambda: TaskBeat("consumer"))
    batch_scope: group_commit.BatchScope = group_commit.no_scope
    # What a batch sends to one of Kabuto's queues under one key is stored as one packed bundle
    # (broker.outbox.store); None: every message a row of its own.
    packing: Bundling | None = None
    # Set while the broker knows this consumer on every queue it takes (``kabuto run`` says
    # ``agents_ready`` only then).
    consuming: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self, *queues: AbstractQueue) -> None:
        """Consume until cancelled; a batch in flight is finished, never cut off, unless it takes
        longer than ``STOP_GRACE`` after the stop (the broker or the database not answering):
        then it is cancelled unacked, redelivered to the next consumer and absorbed by the
        inbox if it had committed — a stop never waits on a service for ever.

        ``queues`` are taken in that order (``group_commit.Deliveries``): the answers queue,
        then the inbox. Raises ``ConnectionLost`` (or the broker's error) when a channel closes
        under it; its supervisor then consumes again on a new session, and the broker
        redelivers whatever was not acked.
        """
        async with group_commit.Deliveries(*queues, opener=self.open_ahead) as deliveries:
            self.beat.running()
            self.consuming.set()
            try:
                while (batch := await deliveries.next_batch(self.batch_size)) is not None:
                    work = asyncio.ensure_future(self._settle_and_ack(batch, deliveries.opened(batch)))
                    try:
                        await asyncio.shield(work)
                    except asyncio.CancelledError:
                        await _finish_within(work, STOP_GRACE)
                        raise
            finally:
                self.consuming.clear()
        raise ConnectionLost(f"the broker stopped delivering from {', '.join(q.name for q in queues)}")

    async def _settle_and_ack(self, batch: list[Delivery], ahead: list[group_commit.Opening]) -> None:
        """Acks only after the batch's commit (or its dead letters and retries) are done."""
        started = time.perf_counter()
        with self.beat.busy():
            outcomes = await group_commit.settle_batch(self, batch, ahead)
            await group_commit.ack(batch)
        took = time.perf_counter() - started
        metrics.batch_settled(self.agent, len(batch), took)
        elapsed = took / len(batch)
        for settled in outcomes:
            await self.outcomes.record(settled)
            metrics.observe(self.agent, settled, elapsed)

    async def settle(self, delivery: Delivery, ahead: group_commit.Opening = None) -> Settled:
        """Decide and carry out everything for one delivery except its ack (``ahead``: what it
        opened to as it arrived, if it was)."""
        with logs.bound(
            agent=self.agent,
            message_id=delivery.message_id,
            type=delivery.type,
            correlation_id=None,
        ):
            self.trust.look_at_revocations()  # judged by the list as it is now (B56)
            try:
                opened = self.opened(delivery, ahead)
            except Rejected as rejected:
                return await self._dead_letter(delivery, rejected)
            with logs.bound_to(opened.envelope):
                return await self._process(delivery, opened)

    def open_ahead(self, delivery: Delivery) -> Opened | Rejected:
        """Open a delivery as it arrives, before its batch is taken: the costly part (the
        signature, the parsing) is then done while the consumer waits on the batch before it.
        A refusal is kept; what else it raises ``Deliveries`` drops, and the delivery is opened
        again when its batch takes it, meeting the error there as it always did."""
        try:
            return self._open(delivery)
        except Rejected as rejected:
            return rejected

    def opened(self, delivery: Delivery, ahead: group_commit.Opening) -> Opened:
        """The delivery opened, with every decision made at this moment; raises ``Rejected``.

        Opened as it arrived: the checks that depend on the moment are made again now (the
        signer's certificate valid and not revoked, the message fresh, the clear-accounts
        cut-over), so a delivery that waited in the buffer — behind a batch that waited out a
        database outage, say — is judged as it would have been opened now. The inbox keeps a
        message's row only as long as such a message is fresh (broker.pruning), so a replay must
        be judged stale when it is claimed, not when it arrived (found by review).

        Refused as it arrived: the refusal stands, unless it was for the moment (stale, a
        certificate expired, not yet valid or revoked, the cut-over passed); then, as when it
        was not opened, it is opened now, whole. No other check can pass later than it failed,
        and a flood of bad signatures costs one check each, not two (found by review).
        """
        if isinstance(ahead, Rejected) and ahead.reason not in MOMENT_REASONS:
            raise ahead
        if not isinstance(ahead, Opened):
            return self._open(delivery)
        now = self.clock()
        still_valid(ahead, delivery.headers, trust=self.trust, freshness=self.freshness, now=now)
        self._check_cut_over(ahead, now)
        return ahead

    def _open(self, delivery: Delivery) -> Opened:
        if (why := malformed(delivery)) is not None:
            raise InputRejected(Reason.BUNDLE_MALFORMED, why)
        now = self.clock()
        opened = open_delivery(
            delivery.body,
            delivery.headers,
            trust=self.trust,
            hosted={i.user_id: i.participant.role for i in self.identities.values()},
            freshness=self.freshness,
            now=now,
            max_bytes=self.max_message_bytes,
            vouched=self._sealed_by(delivery, now),
        )
        if type(opened.message) not in self.handlers:
            raise InputRejected(Reason.UNKNOWN_MESSAGE_TYPE, f"{self.agent} does not handle {opened.spec.type}")
        if Names.is_answers_key(delivery.routing_key) and not opened.spec.answer:
            # The answers queue is taken ahead of the inbox: new work sent there would jump the queue.
            raise SecurityRejected(Reason.MISROUTED, f"{opened.spec.type} is not an answer; it goes to the inbox")
        self._check_cut_over(opened, now)
        return opened

    def _sealed_by(self, delivery: Delivery, now: datetime) -> str | None:
        """Who sealed the bundle that carried ``delivery`` (broker.bundle), if the seal verifies."""
        if not isinstance(delivery, BundledDelivery):
            return None
        return delivery.sealed_by(lambda body, headers, packed: self._seal(body, headers, now, packed=packed))

    def _seal(self, body: bytes, headers: Mapping[str, Any], now: datetime, *, packed: bool) -> str | None:
        if SIGNATURE_HEADER not in headers:
            return None  # sealed by no one: a relay of an earlier release
        try:
            check_size(body, headers, self.max_message_bytes)
            return verified_signer(sealed_bytes(body, packed=packed), headers, self.trust, now).fingerprint
        except (Rejected, ValueError, TypeError) as exc:  # whatever is wrong with a seal, each item is checked alone
            reason = exc.reason.value if isinstance(exc, Rejected) else type(exc).__name__
            log.warning("bundle_seal_refused", agent=self.agent, reason=reason, detail=str(exc)[:500])
            return None

    def _check_cut_over(self, opened: Opened, now: datetime) -> None:
        if opened.spec.clear_accounts:
            check_cut_over(opened.spec, self.clear_accounts_until, now)

    async def _process(self, delivery: Delivery, opened: Opened) -> Settled:
        try:
            duplicate = await self._transaction_held(opened)
        # The one place a failure is caught: a rejection (or data refused, which a retry would
        # meet alike) is dead-lettered; any other is retried, then dead-lettered.
        except Exception as exc:  # noqa: BLE001
            rejected = rejection_of(exc)
            if rejected is not None:
                return await self._dead_letter(delivery, rejected)
            return await self._retry_or_give_up(delivery, exc)
        return self.committed(opened, duplicate=duplicate)

    def committed(self, opened: Opened, *, duplicate: bool) -> Settled:
        """The outcome of a delivery whose transaction committed."""
        env = opened.envelope
        outcome = Outcome.DUPLICATE if duplicate else Outcome.PROCESSED
        log.info("duplicate_absorbed" if duplicate else "message_processed")
        return Settled(str(env.message_id), outcome, None, env.type, str(env.correlation_id))

    async def _transaction_held(self, opened: Opened) -> bool:
        """The transaction, tried again once the database answers if it failed for want of one.

        An outage of our own database is not a failure of the message: the delivery is held
        (not acked, not retried, never dead-lettered) and, since deliveries are settled one
        at a time, nothing else is taken until PostgreSQL answers, however long that takes.
        """
        answered_at_once = 0
        while True:
            try:
                return await self._transaction(opened)
            except Exception as exc:
                if not is_infrastructure(exc) or isinstance(exc, Rejected):
                    raise
                # A connection error while the database answers at once, again and again,
                # is this message's doing (or a defect), not an outage: retry it as a failure.
                waited = await until_database_answers(self.pool, self.beat, exc)
                answered_at_once = 0 if waited else answered_at_once + 1
                if answered_at_once > HELD_WHILE_ANSWERING:
                    raise

    async def _transaction(self, opened: Opened) -> bool:
        """Run the handler with the inbox and outbox rows; True if it was a redelivery.

        The handler runs first, and the inbox row is claimed in the statement that stores what
        it emitted (``inbox.claim_storing``): one round trip fewer. If that fails, it is rolled
        back whole and the claim is made alone, as it used to come first: it absorbs a
        redelivery, refuses a replayed id, and waits for a transaction that holds the claim (one
        that claimed first). Claimed now, the delivery is handled again if it was the claim that
        failed, and otherwise fails as its handler did — run once, so a failure is retried on
        the agent's back-off, never at once.

        What the claim first did and this cannot (found by review): make a second run of the
        same delivery wait from its start for a first one still under way. That takes two
        consumers of one agent's queues at once; Kabuto runs one (a consumer finishes its batch
        before it takes the next, a new session's too), and a second instance of an agent is
        outside what it supports (docs/decisions.md, issue 8)."""
        async with self.pool.acquire() as connection:
            try:
                async with connection.transaction():
                    context = await self.handle(connection, opened)
                    await inbox.claim_storing(connection, [opened], outbox.rows(context.emitted, self.packing))
                    return False
            except Exception as exc:  # whatever the handler raised: re-raised below for _process to judge
                if is_infrastructure(exc) and not isinstance(exc, Rejected):
                    raise
                failure = exc  # first: was it a redelivery, whose claim it never reached?
            async with connection.transaction():
                if isinstance(failure, inbox.SeenBefore):
                    return await self.apply(connection, opened) is None
                if not await inbox.claim(connection, opened):
                    return True
                raise failure

    async def apply(self, connection: asyncpg.Connection, opened: Opened, *, store: bool = True) -> Context | None:
        """In the caller's transaction: the inbox row, the handler, the outbox rows (``store``;
        else the caller stores what the context emitted, with the rest of its batch's).

        None if the delivery was already in the inbox with the same bytes (a redelivery).
        """
        if not await inbox.claim(connection, opened):
            return None
        context = await self.handle(connection, opened)
        if store:
            await outbox.store(connection, context.emitted, self.packing)
        return context

    async def handle(self, connection: asyncpg.Connection, opened: Opened) -> Context:
        """Run the handler of a claimed delivery in the caller's transaction; what it emitted is in the context."""
        context = self.context(connection, opened)
        await self.handlers[type(opened.message)](opened.message, context)
        return context

    async def handle_set(self, connection: asyncpg.Connection, run: Sequence[Opened]) -> list[Context]:
        """Run a ``SetBased`` handler on a run of claimed deliveries it takes (``set_based.runs``)
        in the caller's transaction; a context each, in order."""
        contexts = [self.context(connection, opened) for opened in run]
        handler = self.handlers[type(run[0].message)]
        assert isinstance(handler, SetBased)
        await handler.handle_set([(opened.message, ctx) for opened, ctx in zip(run, contexts, strict=True)])
        return contexts

    def context(self, connection: asyncpg.Connection, opened: Opened) -> Context:
        envelope = opened.envelope
        identity = self.identities[envelope.recipient or ""]
        return Context(
            connection,
            identity,
            self.trust,
            self.clock(),
            envelope,
            opened.sender,
            opened.digest,
            max_message_bytes=self.max_message_bytes,
        )

    async def _retry_or_give_up(self, delivery: Delivery, exc: Exception) -> Settled:
        attempt = _attempt(delivery)
        detail = f"{type(exc).__name__}: {exc}"[:1000]
        if attempt > len(self.retry_delays_ms):
            log.error("retries_exhausted", attempts=attempt, error=detail)
            return await self._dead_letter(delivery, InputRejected(Reason.RETRIES_EXHAUSTED, detail), kind="transient")
        delay_ms = self.retry_delays_ms[attempt - 1]
        log.warning("retry_scheduled", attempt=attempt, delay_ms=delay_ms, error=detail, exc_info=exc)
        await self.exchanges.retry.publish(
            _copy(delivery, {ATTEMPT_HEADER: attempt + 1}), routing_key=self.names.delay_key(self.agent, delay_ms)
        )
        return Settled(delivery.message_id, Outcome.RETRY_SCHEDULED)

    async def _dead_letter(self, delivery: Delivery, rejected: Rejected, *, kind: str | None = None) -> Settled:
        kind = kind or rejected.kind
        event = "security_event" if kind == "security" else "input_rejected"
        if kind == "transient":
            event = "dead_lettered"
        log.warning(event, reason=rejected.reason.value, detail=rejected.detail)
        dead = dead_letter_of(delivery)
        if dead is None:  # its bundle is dead-lettered whole already
            return Settled(delivery.message_id, Outcome.DEAD_LETTERED, rejected.reason)
        message_id, type_, body, headers = dead
        headers.update(
            {
                "x-kabuto-reason": rejected.reason.value,
                "x-kabuto-detail": rejected.detail[:1000],
                "x-kabuto-kind": kind,
                "x-kabuto-agent": self.agent,
                "x-kabuto-routing-key": delivery.routing_key or "",
                "x-kabuto-dead-lettered-at": datetime.now(UTC).isoformat(),
            }
        )
        if rejected.reason is Reason.MESSAGE_TOO_LARGE:  # keep evidence, not the payload of a flood
            headers["x-kabuto-original-size"] = len(body)
            body = body[:EVIDENCE_BYTES]
        await self.exchanges.dead.publish(outbox.sent_again(message_id, type_, body, headers), routing_key=self.agent)
        return Settled(delivery.message_id, Outcome.DEAD_LETTERED, rejected.reason)


def check_cut_over(spec: MessageSpec, until: datetime | None, now: datetime) -> None:
    """R-001-06: a version with account information in clear only before the cut-over."""
    if until is None or now >= until:
        raise InputRejected(
            Reason.CLEAR_ACCOUNT_REFUSED,
            f"{spec.type} v{spec.version} carries account information in clear; send the version that "
            "seals it to the settlement agent's key" + (f" (accepted until {until.isoformat()})" if until else ""),
        )


def _attempt(delivery: Delivery) -> int:
    raw = delivery.headers.get(ATTEMPT_HEADER, 1)
    return raw if isinstance(raw, int) and raw >= 1 else 1


def _copy(delivery: Delivery, added: Mapping[str, Any]) -> aio_pika.Message:
    """What is sent again for ``delivery`` (``bundle.sent_alone``), with ``added`` headers."""
    message_id, type_, body, headers = sent_alone(delivery)
    return outbox.sent_again(message_id, type_, body, {**headers, **added})


async def _finish_within(work: asyncio.Future[None], seconds: float) -> None:
    """Let ``work`` finish for ``seconds`` at most, then cancel it. The consumer is stopping, so
    how the work ended is logged, not raised."""
    done, _ = await asyncio.wait({work}, timeout=seconds)
    if not done:
        work.cancel()
        log.warning("delivery_in_flight_abandoned_at_stop", after_s=seconds)
        await asyncio.wait({work})
    failure = None if work.cancelled() else work.exception()
    if failure is not None:
        log.warning("delivery_in_flight_failed_at_stop", error=repr(failure)[:300])
