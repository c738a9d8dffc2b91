"""What makes a running agent unhealthy, decided from its tasks' heartbeats and its pending work.

``kabuto health`` gathers the facts (the ``runtime_tasks`` rows, the inbox depth, the
outbox backlog) and ``task_problems`` decides, with no I/O: a task that failed or stopped,
a task whose heartbeat is older than ``stall_after`` (the process is down or its loop is
stuck), a task waiting for the broker or the database longer than that, one unit of work
taking longer than that, or pending work — deliveries in the inbox, rows in the outbox —
with no progress for that long — each measured as of the task's last heartbeat, what the agent
knew then. One problem per task, the most serious first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from broker.progress import TaskRecord, TaskState


@dataclass(frozen=True, slots=True)
class Backlog:
    """Work waiting for the agent: deliveries ready in its inbox, rows pending in its outbox."""

    inbox_ready: int | None
    outbox_pending: int
    outbox_lag: timedelta | None


def task_problems(records: Sequence[TaskRecord], backlog: Backlog, stall_after: timedelta) -> list[str]:
    if records and all(r.state is TaskState.STOPPED for r in records):
        since = min(r.in_state for r in records)
        return [f"the agent was stopped {_s(since)} ago"]
    problems = []
    for record in records:
        problem = _problem(record, backlog, stall_after)
        if problem:
            problems.append(problem)
    return problems


def _problem(r: TaskRecord, backlog: Backlog, stall: timedelta) -> str | None:
    if r.state is TaskState.FAILED:
        return f"{r.task} failed: {r.detail}"
    if r.state is TaskState.STOPPED:
        return f"{r.task} stopped {_s(r.in_state)} ago"
    if r.since_beat > stall:
        return f"{r.task}: no heartbeat for {_s(r.since_beat)} (the agent is down or stuck)"
    # What the row says held when it was written; nothing is known of the time since. Read as
    # of now, a row written before a database outage that kept the writer out showed a task
    # "waiting" for the outage's length after it had long been running again (make chaos).
    in_state = _at_beat(r.in_state, r.since_beat)
    busy_for = r.busy_for and _at_beat(r.busy_for, r.since_beat)
    since_progress = r.since_progress and _at_beat(r.since_progress, r.since_beat)
    if r.state is TaskState.WAITING and in_state > stall:
        return f"{r.task} has been waiting for {_s(in_state)}: {r.detail}"
    if busy_for is not None and busy_for > stall:
        return f"{r.task} has been busy with one unit of work for {_s(busy_for)}"
    idle = since_progress is None or since_progress > stall
    if not idle or in_state <= stall:
        return None
    quiet = f"none done for {_s(since_progress)}" if since_progress else "none done since it started"
    if r.task == "consumer" and backlog.inbox_ready:
        return f"consumer: {backlog.inbox_ready} deliveries waiting, {quiet}"
    if r.task == "relay" and backlog.outbox_pending and backlog.outbox_lag and backlog.outbox_lag > stall:
        return f"relay: {backlog.outbox_pending} outbox rows pending, {quiet}"
    return None


def _at_beat(age: timedelta, since_beat: timedelta) -> timedelta:
    """An age read now, as it was when the row was written."""
    return max(age - since_beat, timedelta())


def _s(age: timedelta | None) -> str:
    return f"{int((age or timedelta()).total_seconds())} s"
