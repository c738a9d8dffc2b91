"""``kabuto health``'s rules (issue 13): stopped, failed, silent, stuck and stalled tasks."""

from __future__ import annotations

from datetime import timedelta

from broker.health import Backlog, task_problems
from broker.progress import TaskRecord, TaskState

STALL = timedelta(seconds=60)
IDLE = Backlog(inbox_ready=0, outbox_pending=0, outbox_lag=None)


def task(name: str = "consumer", state: TaskState = TaskState.RUNNING, **ages: float | None) -> TaskRecord:
    def age(key: str, default: float | None) -> timedelta | None:
        value = ages.get(key, default)
        return None if value is None else timedelta(seconds=value)

    return TaskRecord(
        name,
        state,
        "",
        age("in_state", 600) or timedelta(),
        age("since_beat", 0) or timedelta(),
        age("since_progress", 5),
        age("busy_for", None),
    )


def test_running_tasks_that_beat_and_progress_are_healthy() -> None:
    assert task_problems([task("consumer"), task("relay"), task("heartbeat")], IDLE, STALL) == []


def test_idle_tasks_with_no_pending_work_are_healthy_however_long_they_wait() -> None:
    assert task_problems([task("consumer", since_progress=None), task("relay", since_progress=9999)], IDLE, STALL) == []


def test_a_failed_task_is_named_with_its_error() -> None:
    failed = TaskRecord("relay", TaskState.FAILED, "KeyError: 'x'", timedelta(1), timedelta(1), None, None)
    assert task_problems([task("consumer"), failed], IDLE, STALL) == ["relay failed: KeyError: 'x'"]


def test_an_agent_whose_tasks_all_stopped_is_reported_once() -> None:
    stopped = [task(n, TaskState.STOPPED, in_state=30) for n in ("consumer", "relay")]
    assert task_problems(stopped, IDLE, STALL) == ["the agent was stopped 30 s ago"]


def test_a_task_without_a_recent_heartbeat_means_a_dead_or_stuck_process() -> None:
    assert task_problems([task("consumer", since_beat=61)], IDLE, STALL) == [
        "consumer: no heartbeat for 61 s (the agent is down or stuck)"
    ]


def test_waiting_for_infrastructure_longer_than_the_window_is_unhealthy_shorter_is_not() -> None:
    long_wait = task("relay", TaskState.WAITING, in_state=90)
    short_wait = task("consumer", TaskState.WAITING, in_state=10)
    assert task_problems([long_wait, short_wait], IDLE, STALL) == ["relay has been waiting for 90 s: "]


def test_ages_are_read_as_of_the_last_heartbeat_not_as_of_now() -> None:
    """Found by make chaos: a row written 26 s before the check, just before PostgreSQL stopped
    and kept the writer out, said the consumer had been waiting 15 s; read as of now it looked
    41 s long, while the consumer had been running again since a second after that row."""
    stale = task("consumer", TaskState.WAITING, in_state=41, since_beat=26)
    assert task_problems([stale], IDLE, timedelta(seconds=30)) == []
    still = task("consumer", TaskState.WAITING, in_state=61, since_beat=26)
    assert task_problems([still], IDLE, timedelta(seconds=30)) == ["consumer has been waiting for 35 s: "]
    busy = task("relay", busy_for=50, since_beat=25)
    idle = task("consumer", since_progress=50, since_beat=25, in_state=50)
    backlog = Backlog(inbox_ready=3, outbox_pending=0, outbox_lag=None)
    assert task_problems([busy, idle], backlog, timedelta(seconds=30)) == []


def test_one_unit_of_work_taking_too_long_is_unhealthy() -> None:
    assert task_problems([task("consumer", busy_for=61)], IDLE, STALL) == [
        "consumer has been busy with one unit of work for 61 s"
    ]


def test_pending_work_without_progress_is_unhealthy() -> None:
    backlog = Backlog(inbox_ready=12, outbox_pending=40, outbox_lag=timedelta(minutes=5))
    records = [task("consumer", since_progress=120), task("relay", since_progress=None)]
    assert task_problems(records, backlog, STALL) == [
        "consumer: 12 deliveries waiting, none done for 120 s",
        "relay: 40 outbox rows pending, none done since it started",
    ]


def test_pending_work_with_recent_progress_or_a_young_backlog_is_healthy() -> None:
    busy = Backlog(inbox_ready=500, outbox_pending=300, outbox_lag=timedelta(seconds=10))
    assert task_problems([task("consumer", since_progress=1), task("relay", since_progress=None)], busy, STALL) == []
