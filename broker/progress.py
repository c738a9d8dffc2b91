"""Heartbeats and progress of an agent's tasks, written to its schema for ``kabuto health``.

Each supervised task (consumer, relay, background job) has a ``TaskBeat``: its state
(running, waiting for the broker or database, stopped, failed), when it last finished a
unit of work, and since when it is busy with the current one. ``Heartbeats.run`` writes
every beat to the ``runtime_tasks`` table at a fixed interval, so a row whose ``beat_at``
is old means the process is down or its event loop is stuck. Ages are measured on the
monotonic clock and written relative to the database's ``now()``, so the agent's wall
clock plays no part. ``kabuto health`` reads the rows with ``read``.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum

import asyncpg

from broker import logs

log = logs.get("kabuto.progress")


class TaskState(StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    WAITING = "waiting"  # for the broker or the database; the detail says which and why
    STOPPED = "stopped"
    FAILED = "failed"


@dataclass(slots=True)
class TaskBeat:
    """What one task is doing, kept in memory by the task and written out by ``Heartbeats``."""

    task: str
    state: TaskState = TaskState.STARTING
    detail: str = ""
    state_since: float = field(default_factory=time.monotonic)
    progress_at: float | None = None
    busy_since: float | None = None
    _changed: asyncio.Event = field(default_factory=asyncio.Event, repr=False, compare=False)

    def _set(self, state: TaskState, detail: str = "") -> None:
        if state is not self.state:
            self.state_since = time.monotonic()
        self.state, self.detail = state, detail
        self._changed.set()
        self._changed = asyncio.Event()

    async def until(self, state: TaskState, *, timeout: float = 15.0) -> None:
        """Wait until the task enters ``state`` (for tests and operators' tools)."""
        async with asyncio.timeout(timeout):
            while self.state is not state:
                await self._changed.wait()

    def running(self) -> None:
        self._set(TaskState.RUNNING)

    def waiting(self, detail: str) -> None:
        self._set(TaskState.WAITING, detail)

    def stopped(self) -> None:
        self._set(TaskState.STOPPED)

    def failed(self, detail: str) -> None:
        self._set(TaskState.FAILED, detail)

    def progressed(self) -> None:
        self.progress_at = time.monotonic()
        self._changed.set()
        self._changed = asyncio.Event()

    async def until_progress(self, since: float, *, timeout: float = 15.0) -> None:
        """Wait until the task has completed a unit of work at or after ``since`` (monotonic)."""
        async with asyncio.timeout(timeout):
            while self.progress_at is None or self.progress_at < since:
                await self._changed.wait()

    @contextmanager
    def busy(self) -> Iterator[None]:
        """One unit of work: busy while inside, progress when it completes."""
        self.busy_since = time.monotonic()
        try:
            yield
            self.progressed()
        finally:
            self.busy_since = None

    @contextmanager
    def round(self) -> Iterator[None]:
        """One round of a periodic job: busy while inside; once a round completes the task is
        running — again, after an outage during which its supervisor marked it waiting."""
        with self.busy():
            yield
        self.running()


def _age(moment: float | None, now: float) -> float | None:
    return None if moment is None else max(0.0, now - moment)


def stopping() -> bool:
    """True once the running task has been asked to stop (``Task.cancel``), whatever it raised since.

    A loop that catches an error and goes on must ask this first: a cancellation may reach it
    as another error (aiormq and asyncpg answer one with a closed channel or connection, and in
    Python 3.11 a timeout expiring in the same step turns it into ``TimeoutError``).
    """
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def pause(seconds: float) -> None:
    """Wait ``seconds`` between two rounds of a loop — a schedule, not synchronisation — unless the
    task was asked to stop. aiormq and asyncpg can take in a cancellation that lands inside a
    round without raising it; the loop would then go on for ever, and whatever waits for its task
    (an agent stopping) with it (stop 27: the metrics sampler, then by review the heartbeats, the
    parked retries and the other periodic jobs, all of which wait here)."""
    if stopping():
        raise asyncio.CancelledError
    await asyncio.sleep(seconds)


@dataclass(slots=True)
class Heartbeats:
    """The beats of one agent's tasks, and the writer that records them."""

    beats: dict[str, TaskBeat] = field(default_factory=dict)

    def beat(self, task: str) -> TaskBeat:
        return self.beats.setdefault(task, TaskBeat(task))

    async def run(self, pool: asyncpg.Pool, interval: timedelta) -> None:
        """Write every beat each ``interval`` until cancelled; an outage only skips beats."""
        while True:
            try:
                async with asyncio.timeout(interval.total_seconds() * 2):
                    await self.write(pool)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError) as exc:
                if stopping():
                    raise asyncio.CancelledError from exc
                log.debug("heartbeat_skipped", error=repr(exc)[:200])
            await pause(interval.total_seconds())

    async def write(self, pool: asyncpg.Pool) -> None:
        now = time.monotonic()
        await pool.executemany(
            """INSERT INTO runtime_tasks AS t (task, state, detail, state_since, beat_at, progress_at, busy_since, pid)
               VALUES ($1, $2, $3, now() - make_interval(secs => $4), now(),
                       now() - make_interval(secs => $5), now() - make_interval(secs => $6), $7)
               ON CONFLICT (task) DO UPDATE SET state = excluded.state, detail = excluded.detail,
                   state_since = excluded.state_since, beat_at = excluded.beat_at,
                   progress_at = excluded.progress_at, busy_since = excluded.busy_since, pid = excluded.pid""",
            [
                (
                    b.task,
                    b.state.value,
                    b.detail,
                    _age(b.state_since, now),
                    _age(b.progress_at, now),
                    _age(b.busy_since, now),
                    os.getpid(),
                )
                for b in self.beats.values()
            ],
        )


@dataclass(frozen=True, slots=True)
class TaskRecord:
    """A task's last written beat, with ages measured by the database at reading time."""

    task: str
    state: TaskState
    detail: str
    in_state: timedelta
    since_beat: timedelta
    since_progress: timedelta | None
    busy_for: timedelta | None


async def read(connection: asyncpg.Connection | asyncpg.Pool) -> list[TaskRecord]:
    rows = await connection.fetch(
        """SELECT task, state, detail, now() - state_since AS in_state, now() - beat_at AS since_beat,
                  now() - progress_at AS since_progress, now() - busy_since AS busy_for
           FROM runtime_tasks ORDER BY task"""
    )
    return [
        TaskRecord(
            r["task"],
            TaskState(r["state"]),
            r["detail"],
            r["in_state"],
            r["since_beat"],
            r["since_progress"],
            r["busy_for"],
        )
        for r in rows
    ]
