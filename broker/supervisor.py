"""Supervision of agents as OS processes: one child per agent, restarted with back-off.

One Python process runs one core at most, and seven agents in one process took turns on it.
``supervise`` starts each child (for ``kabuto run all``, a ``kabuto run AGENT`` per agent), and
when one exits while no stop was asked — a crash, a non-zero exit, a kill — starts it again
after a delay that doubles from ``Backoff.initial`` up to ``Backoff.maximum``, and falls back
to ``initial`` once a child has run for ``Backoff.healthy_after``. A child that dies at once
on every start is thus retried ever more slowly, never in a hot loop, and never given up on:
the cause (a database or broker outage) is usually one that passes.

``stop`` being set sends SIGTERM to every child, whose own signal handling stops it cleanly
(a delivery in flight is finished and acked); a child still running after ``grace`` is killed,
and what it had not acked is redelivered on the next start.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from broker import logs

log = logs.get("kabuto.supervisor")
PR_SET_PDEATHSIG = 1


@dataclass(frozen=True, slots=True)
class Child:
    name: str
    argv: tuple[str, ...]
    # Added to the process's niceness as it starts (0: the supervisor's own priority).
    niceness: int = 0


@dataclass(frozen=True, slots=True)
class Backoff:
    initial: float = 0.5
    maximum: float = 30.0
    healthy_after: float = 30.0
    grace: float = 20.0

    def after(self, delay: float, ran: float) -> float:
        """The delay before the next start, given the last delay and how long the child ran."""
        return self.initial if ran >= self.healthy_after else min(self.maximum, max(self.initial, delay * 2))


@dataclass(frozen=True, slots=True)
class Exit:
    """One exit of a child, for the log and for tests."""

    name: str
    code: int
    ran: float
    restart_in: float | None  # None: it stopped because stop was asked


OnExit = Callable[[Exit], None]


def _ignore(_: Exit) -> None:
    pass


async def supervise(
    children: Sequence[Child], stop: asyncio.Event, backoff: Backoff = Backoff(), on_exit: OnExit = _ignore
) -> None:
    """Keep every child running until ``stop`` is set; then stop them all and return."""
    async with asyncio.TaskGroup() as tasks:
        for child in children:
            tasks.create_task(_keep_running(child, stop, backoff, on_exit), name=f"supervise-{child.name}")
    log.info("children_stopped", children=[c.name for c in children])


async def _keep_running(child: Child, stop: asyncio.Event, backoff: Backoff, on_exit: OnExit) -> None:
    delay = 0.0  # the first restart waits ``initial``, each quick one after it twice the last
    while not stop.is_set():
        started = time.monotonic()
        process = await asyncio.create_subprocess_exec(*child.argv, preexec_fn=functools.partial(_prepare, child))
        log.info("child_started", child=child.name, pid=process.pid, niceness=child.niceness)
        code = await _until_exit_or_stop(process, stop, backoff.grace)
        ran = time.monotonic() - started
        if stop.is_set():
            on_exit(Exit(child.name, code, ran, None))
            return
        delay = backoff.after(delay, ran)
        on_exit(Exit(child.name, code, ran, delay))
        log.error("child_exited", child=child.name, code=code, ran_s=round(ran, 1), restart_in_s=delay)
        await _wait(stop, delay)


def _prepare(child: Child) -> None:
    """In the child before exec: its niceness, and its end with the supervisor's."""
    if child.niceness:
        os.nice(child.niceness)
    _die_with_parent()


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM if the supervisor itself dies (Linux), so no agent is orphaned."""
    if sys.platform == "linux":
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


async def _until_exit_or_stop(process: asyncio.subprocess.Process, stop: asyncio.Event, grace: float) -> int:
    """The child's exit code; on ``stop``, SIGTERM first and SIGKILL after ``grace``."""
    exited = asyncio.ensure_future(process.wait())
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not exited.done():
            process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(grace):
                    await asyncio.shield(exited)
            except TimeoutError:
                log.error("child_killed", pid=process.pid, grace_s=grace)
                process.kill()
        return await exited
    finally:
        stopping.cancel()
        if not exited.done():  # cancelled ourselves: never leave an orphan behind
            process.kill()
            await process.wait()


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    try:
        async with asyncio.timeout(seconds):
            await stop.wait()
    except TimeoutError:
        pass
