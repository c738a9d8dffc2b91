"""The consumer: verify → parse → inbox → handler → outbox → commit → ack, written once.

``settle`` decides what becomes of one delivery and does everything but the ack:

* a delivery that fails any check of ``broker.envelope`` is dead-lettered with its reason
  and logged as a security or input event; no state changes;
* a delivery whose id is in the inbox with the same bytes is a redelivery: nothing happens;
  the same id with other bytes is a replayed message id and is dead-lettered;
* otherwise the handler runs in one transaction with the inbox row and the outbox rows of
  what it emits, and the transaction commits;
* a failure that may pass is retried through the agent's delay queues, and dead-lettered
  as ``retries_exhausted`` once the attempts run out.

``run`` acks each delivery only after ``settle`` returned, that is after the commit or after
the dead letter or retry copy was confirmed by the broker.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import aio_pika
import asyncpg
import pydantic
import structlog
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue

from broker import logs, outbox
from broker.context import Context
from broker.envelope import MAX_MESSAGE_BYTES, Freshness, Opened, open_delivery
from broker.errors import InputRejected, Reason, Rejected, SecurityRejected
from broker.pki import Identity
from broker.topology import Exchanges, Names
from broker.trust import TrustStore
from schemas.catalogue import Message

log = logs.get("kabuto.consumer")

Handler = Callable[[Any, Context], Awaitable[None]]
ATTEMPT_HEADER = "x-kabuto-attempt"
EVIDENCE_BYTES = 4096


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
    """What the consumer did with each delivery, for waiters (tests, the demo) and metrics."""

    def __init__(self) -> None:
        self._settled: list[Settled] = []
        self._changed = asyncio.Condition()

    async def record(self, settled: Settled) -> None:
        async with self._changed:
            self._settled.append(settled)
            self._changed.notify_all()

    async def wait_for(self, message_id: object, *, timeout: float = 15.0) -> Settled:
        """The first outcome recorded for ``message_id``, waiting for it up to ``timeout``."""
        key = str(message_id)
        return await self.wait(lambda s: s.message_id == key, timeout=timeout)

    async def wait(self, match: Callable[[Settled], bool], *, timeout: float = 15.0) -> Settled:
        """The first outcome that ``match`` accepts, waiting for it up to ``timeout``."""
        async with asyncio.timeout(timeout), self._changed:
            while True:
                for settled in self._settled:
                    if match(settled):
                        return settled
                await self._changed.wait()

    async def wait_count(self, match: Callable[[Settled], bool], count: int, *, timeout: float = 15.0) -> list[Settled]:
        """The first ``count`` outcomes that ``match`` accepts, waiting for them up to ``timeout``."""
        async with asyncio.timeout(timeout), self._changed:
            while len(found := [s for s in self._settled if match(s)]) < count:
                await self._changed.wait()
            return found[:count]

    async def reply(self, type_: str, correlation_id: object, *, timeout: float = 15.0) -> Settled:
        """The outcome of the ``type_`` message in the conversation ``correlation_id``."""
        key = str(correlation_id)
        return await self.wait(lambda s: s.type == type_ and s.correlation_id == key, timeout=timeout)

    def count(self, outcome: Outcome) -> int:
        return sum(1 for s in self._settled if s.outcome is outcome)


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
    max_message_bytes: int = MAX_MESSAGE_BYTES
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))

    async def run(self, queue: AbstractQueue) -> None:
        """Consume until cancelled; a delivery in flight is finished, never cut off."""
        async with queue.iterator() as deliveries:
            async for delivery in deliveries:
                work = asyncio.ensure_future(self._settle_and_ack(delivery))
                try:
                    await asyncio.shield(work)
                except asyncio.CancelledError:
                    await work
                    raise

    async def _settle_and_ack(self, delivery: AbstractIncomingMessage) -> None:
        settled = await self.settle(delivery)
        await delivery.ack()
        await self.outcomes.record(settled)

    async def settle(self, delivery: AbstractIncomingMessage) -> Settled:
        """Decide and carry out everything for one delivery except its ack."""
        with structlog.contextvars.bound_contextvars(
            agent=self.agent,
            message_id=delivery.message_id,
            type=delivery.type,
            correlation_id=None,
        ):
            try:
                opened = self._open(delivery)
            except Rejected as rejected:
                return await self._dead_letter(delivery, rejected)
            with structlog.contextvars.bound_contextvars(
                message_id=str(opened.envelope.message_id),
                type=opened.envelope.type,
                correlation_id=str(opened.envelope.correlation_id),
                causation_id=str(opened.envelope.causation_id or ""),
                sender=opened.envelope.sender,
            ):
                return await self._process(delivery, opened)

    def _open(self, delivery: AbstractIncomingMessage) -> Opened:
        opened = open_delivery(
            delivery.body,
            delivery.headers,
            trust=self.trust,
            hosted={i.user_id: i.participant.role for i in self.identities.values()},
            freshness=self.freshness,
            now=self.clock(),
            max_bytes=self.max_message_bytes,
        )
        if type(opened.message) not in self.handlers:
            raise InputRejected(Reason.UNKNOWN_MESSAGE_TYPE, f"{self.agent} does not handle {opened.spec.type}")
        return opened

    async def _process(self, delivery: AbstractIncomingMessage, opened: Opened) -> Settled:
        message_id = str(opened.envelope.message_id)
        try:
            duplicate = await self._transaction(opened)
        except Rejected as rejected:
            return await self._dead_letter(delivery, rejected)
        except (pydantic.ValidationError, asyncpg.DataError) as exc:  # deterministic: a retry fails alike
            detail = f"{type(exc).__name__}: {exc}"[:1000]
            return await self._dead_letter(delivery, InputRejected(Reason.DATA_INVALID, detail))
        # The one place any other failure is caught: it is retried, then dead-lettered.
        except Exception as exc:  # noqa: BLE001
            return await self._retry_or_give_up(delivery, exc)
        env = opened.envelope
        outcome = Outcome.DUPLICATE if duplicate else Outcome.PROCESSED
        log.info("duplicate_absorbed" if duplicate else "message_processed")
        return Settled(message_id, outcome, None, env.type, str(env.correlation_id))

    async def _transaction(self, opened: Opened) -> bool:
        """Run the handler with the inbox and outbox rows; True if it was a redelivery."""
        envelope = opened.envelope
        identity = self.identities[envelope.recipient or ""]
        async with self.pool.acquire() as connection, connection.transaction():
            inserted = await connection.fetchval(
                """INSERT INTO inbox (message_id, digest, message_type, sender)
                   VALUES ($1, $2, $3, $4) ON CONFLICT (message_id) DO NOTHING
                   RETURNING true""",
                envelope.message_id,
                opened.digest,
                envelope.type,
                envelope.sender,
            )
            if not inserted:
                await self._check_redelivery(connection, opened)
                return True
            context = Context(connection, identity, self.trust, self.clock(), envelope, opened.sender, opened.digest)
            await self.handlers[type(opened.message)](opened.message, context)
            await outbox.store(connection, self.agent, context.emitted)
        return False

    @staticmethod
    async def _check_redelivery(connection: asyncpg.Connection, opened: Opened) -> None:
        digest = await connection.fetchval("SELECT digest FROM inbox WHERE message_id = $1", opened.envelope.message_id)
        if digest != opened.digest:
            raise SecurityRejected(
                Reason.REPLAYED_MESSAGE_ID,
                f"message id {opened.envelope.message_id} was already used for other content",
            )

    async def _retry_or_give_up(self, delivery: AbstractIncomingMessage, exc: Exception) -> Settled:
        attempt = _attempt(delivery)
        detail = f"{type(exc).__name__}: {exc}"[:1000]
        if attempt > len(self.retry_delays_ms):
            log.error("retries_exhausted", attempts=attempt, error=detail)
            return await self._dead_letter(delivery, InputRejected(Reason.RETRIES_EXHAUSTED, detail), kind="transient")
        delay_ms = self.retry_delays_ms[attempt - 1]
        log.warning("retry_scheduled", attempt=attempt, delay_ms=delay_ms, error=detail, exc_info=exc)
        headers = dict(delivery.headers)
        headers[ATTEMPT_HEADER] = attempt + 1
        await self.exchanges.retry.publish(
            _copy(delivery, headers), routing_key=self.names.delay_key(self.agent, delay_ms)
        )
        return Settled(delivery.message_id, Outcome.RETRY_SCHEDULED)

    async def _dead_letter(
        self, delivery: AbstractIncomingMessage, rejected: Rejected, *, kind: str | None = None
    ) -> Settled:
        kind = kind or rejected.kind
        event = "security_event" if kind == "security" else "input_rejected"
        if kind == "transient":
            event = "dead_lettered"
        log.warning(event, reason=rejected.reason.value, detail=rejected.detail)
        headers = dict(delivery.headers)
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
        body = delivery.body
        if rejected.reason is Reason.MESSAGE_TOO_LARGE:  # keep evidence, not the payload of a flood
            headers["x-kabuto-original-size"] = len(body)
            body = body[:EVIDENCE_BYTES]
        await self.exchanges.dead.publish(
            outbox.amqp_message(delivery.message_id, delivery.type, body, headers), routing_key=self.agent
        )
        return Settled(delivery.message_id, Outcome.DEAD_LETTERED, rejected.reason)


def _attempt(delivery: AbstractIncomingMessage) -> int:
    raw = delivery.headers.get(ATTEMPT_HEADER, 1)
    return raw if isinstance(raw, int) and raw >= 1 else 1


def _copy(delivery: AbstractIncomingMessage, headers: dict[str, Any]) -> aio_pika.Message:
    return outbox.amqp_message(delivery.message_id, delivery.type, delivery.body, headers)
