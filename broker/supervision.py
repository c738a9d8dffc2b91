"""Supervision of an agent's tasks: restarted after an outage, the process stopped by anything else.

Every long-running task of an agent (consumer, outbox relay, background jobs) runs under
``supervise``. A failure of our own infrastructure — the broker or the database unreachable,
a connection cut, a channel closed under us, a LISTEN connection terminated — is expected
and recoverable: the task is logged as interrupted, waits with capped exponential back-off
and starts again with fresh connections, however long the outage lasts. Any other exception
escaping a task is a defect the process cannot recover from: it is logged as
``task_failed`` and raised as ``AgentFailed``, which ends the agent's task group and makes
``kabuto run`` exit non-zero, so that an outer supervisor (compose, systemd, ``kabuto run
all``) restarts the process.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiormq
import asyncpg

from broker import logs
from broker.errors import KabutoError
from broker.progress import TaskBeat, stopping

log = logs.get("kabuto.supervision")


class ConnectionLost(KabutoError):
    """A connection a task depends on closed under it (broker channel, LISTEN connection)."""


class AgentFailed(KabutoError):
    """A task met a failure it cannot recover from; the process must stop and be restarted."""


# Failures of infrastructure, never of a message. ``OSError`` covers refused and reset
# connections (asyncpg raises them while PostgreSQL is down) and ``TimeoutError``.
INFRASTRUCTURE: tuple[type[BaseException], ...] = (
    OSError,
    EOFError,
    ConnectionLost,
    aiormq.exceptions.AMQPConnectionError,
    aiormq.exceptions.ChannelInvalidStateError,
    aiormq.exceptions.ChannelClosed,
    aiormq.exceptions.ConnectionClosed,
    aiormq.exceptions.DeliveryError,  # the broker nacked a publish: try again later
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
    # The session sat idle in a transaction past its limit and PostgreSQL ended it (broker.db).
    asyncpg.IdleInTransactionSessionTimeoutError,
)
# Failures of the broker that a reconnection does not mend: a wrong login, a refused
# permission, a queue declared with other arguments.
PERMANENT: tuple[type[BaseException], ...] = (
    aiormq.exceptions.ProbableAuthenticationError,
    aiormq.exceptions.ChannelAccessRefused,
    aiormq.exceptions.ChannelPreconditionFailed,
)


def is_infrastructure(exc: BaseException) -> bool:
    return isinstance(exc, INFRASTRUCTURE) and not isinstance(exc, PERMANENT)


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delays between restarts: ``first``, doubling up to ``cap``; reset after ``settled`` s of work."""

    first: float = 0.1
    cap: float = 5.0
    settled: float = 10.0

    def next(self, delay: float) -> float:
        return min(max(delay * 2, self.first), self.cap)


async def supervise(
    beat: TaskBeat, body: Callable[[], Awaitable[None]], backoff: Backoff = Backoff(), *, reports_itself: bool = True
) -> None:
    """Run ``body`` until cancelled, restarting it after each infrastructure failure.

    A task that ``reports_itself`` (consumer, relay) marks itself running once it has its
    connections; any other (a scheduled job, sleeping until its next round) is running from
    each start: it was *waiting* only while held here in back-off, and learns at its next
    round whether the outage is over.
    """
    delay = backoff.first
    while True:
        started = time.monotonic()
        if not reports_itself:
            beat.running()
        try:
            await body()
            raise AgentFailed(f"{beat.task} returned; a supervised task runs until cancelled")
        except asyncio.CancelledError:
            beat.stopped()
            raise
        except Exception as exc:
            if stopping():
                # Asked to stop, the body raised something else on its way out (aiormq and
                # asyncpg may answer a cancellation with a closed-channel or connection error,
                # and a timeout expiring at the same moment turns it into TimeoutError).
                # Restarting would swallow the cancellation and its task group would wait forever.
                beat.stopped()
                raise asyncio.CancelledError from exc
            if isinstance(exc, AgentFailed):  # the task says the agent must stop (broker.instance)
                beat.failed(f"{type(exc).__name__}: {exc}")
                log.critical("task_failed", task=beat.task, error=f"{type(exc).__name__}: {exc}")
                raise
            if not is_infrastructure(exc):
                beat.failed(f"{type(exc).__name__}: {exc}")
                log.critical("task_failed", task=beat.task, error=repr(exc), exc_info=exc)
                raise AgentFailed(f"{beat.task} failed: {type(exc).__name__}: {exc}") from exc
            if time.monotonic() - started >= backoff.settled:
                delay = backoff.first
            beat.waiting(f"{type(exc).__name__}: {exc}"[:300])
            log.warning("task_interrupted", task=beat.task, error=repr(exc)[:300], restart_in_s=round(delay, 2))
        await asyncio.sleep(delay)  # back-off while the broker or database recovers
        delay = backoff.next(delay)


async def until_database_answers(pool: asyncpg.Pool, beat: TaskBeat, cause: BaseException) -> bool:
    """Wait, however long, until ``pool`` answers a query again; True if it did not at once."""
    beat.waiting(f"database: {type(cause).__name__}: {cause}"[:300])
    log.warning("database_unreachable_holding_delivery", task=beat.task, error=repr(cause)[:300])
    delay, backoff, waited = Backoff().first, Backoff(), False
    while True:
        try:
            async with asyncio.timeout(10):
                await pool.fetchval("SELECT 1")
        except Exception as exc:
            if not is_infrastructure(exc):
                raise
            if stopping():
                raise asyncio.CancelledError from exc
            waited = True
            await asyncio.sleep(delay)  # back-off until PostgreSQL answers
            delay = backoff.next(delay)
            continue
        beat.running()
        log.info("database_answers_again", task=beat.task, waited=waited)
        return waited
