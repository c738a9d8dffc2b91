"""Supervision (issue 13): an outage restarts a task with back-off, a defect stops the agent."""

from __future__ import annotations

import asyncio

import aiormq
import asyncpg
import pytest

from broker.progress import TaskBeat, TaskState
from broker.supervision import AgentFailed, Backoff, ConnectionLost, is_infrastructure, supervise

QUICK = Backoff(first=0.001, cap=0.004)


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.InternalClientError("unexpected state after a restart"),  # it killed a relay (issue 13)
        asyncpg.CannotConnectNowError("the database system is starting up"),
        asyncpg.AdminShutdownError("terminating connection due to administrator command"),
        asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        asyncpg.InterfaceError("connection is closed"),
        # A session idle in a transaction past broker.db.IDLE_IN_TRANSACTION, ended by PostgreSQL.
        asyncpg.IdleInTransactionSessionTimeoutError("terminating connection due to idle-in-transaction timeout"),
        ConnectionRefusedError(111, "refused"),
        aiormq.exceptions.ChannelInvalidStateError("writer is None"),  # an ack on a dead channel
        aiormq.exceptions.AMQPConnectionError("reset"),
        aiormq.exceptions.DeliveryError(None, None),
        ConnectionLost("LISTEN connection closed"),
    ],
)
def test_outages_of_our_own_infrastructure_are_recoverable(error: BaseException) -> None:
    assert is_infrastructure(error)


@pytest.mark.parametrize(
    "error",
    [
        RuntimeError("a defect"),
        KeyError("x"),
        asyncpg.UndefinedTableError("relation does not exist"),
        asyncpg.InvalidPasswordError("wrong password"),
        aiormq.exceptions.ProbableAuthenticationError("refused login"),
        aiormq.exceptions.ChannelAccessRefused("no permission"),
        aiormq.exceptions.ChannelPreconditionFailed("queue declared with other arguments"),
    ],
)
def test_defects_and_misconfiguration_are_not(error: BaseException) -> None:
    assert not is_infrastructure(error)


async def test_a_task_interrupted_by_outages_is_restarted_until_it_runs() -> None:
    beat, attempts, running = TaskBeat("relay"), [], asyncio.Event()

    async def body() -> None:
        attempts.append(beat.state)
        if len(attempts) <= 3:
            raise asyncpg.InternalClientError("restart in progress")
        beat.running()
        running.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(supervise(beat, body, QUICK))
    await asyncio.wait_for(running.wait(), 5)
    assert attempts == [TaskState.STARTING, TaskState.WAITING, TaskState.WAITING, TaskState.WAITING]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert beat.state is TaskState.STOPPED


@pytest.mark.parametrize(
    "answer",
    [
        aiormq.exceptions.ChannelInvalidStateError("writer is None"),
        ConnectionLost("the channel closed as we stopped"),
        TimeoutError(),  # asyncio.timeout expiring in the same step as the cancellation (3.11)
    ],
    ids=["channel_invalid_state", "connection_lost", "timeout"],
)
async def test_a_task_asked_to_stop_stops_whatever_its_body_raises_on_the_way_out(answer: Exception) -> None:
    """The cause of a hang at shutdown: a cancelled body that answered with an outage error
    was restarted, the cancellation was lost, and the agent's task group waited forever."""
    beat, starts, running = TaskBeat("relay"), [], asyncio.Event()

    async def body() -> None:
        starts.append(1)
        running.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise answer from None

    task = asyncio.create_task(supervise(beat, body, QUICK))
    await asyncio.wait_for(running.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    assert starts == [1] and beat.state is TaskState.STOPPED


async def test_a_defect_ends_the_task_with_agent_failed_and_records_why() -> None:
    beat = TaskBeat("consumer")

    async def body() -> None:
        raise KeyError("missing handler")

    with pytest.raises(AgentFailed, match="consumer failed: KeyError"):
        await supervise(beat, body, QUICK)
    assert beat.state is TaskState.FAILED and "missing handler" in beat.detail


async def test_a_task_that_returns_is_a_defect_too() -> None:
    async def body() -> None:
        return None

    with pytest.raises(AgentFailed, match="returned"):
        await supervise(TaskBeat("job"), body, QUICK)


def test_back_off_doubles_up_to_its_cap() -> None:
    backoff = Backoff(first=0.1, cap=5.0)
    delays = [0.1]
    for _ in range(8):
        delays.append(backoff.next(delays[-1]))
    assert delays == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0]


async def test_a_scheduled_job_is_running_again_from_its_restart_not_from_its_next_round() -> None:
    """Found by `make chaos`: a job whose next round was 30 s away stayed *waiting* that long
    after the outage had ended, and `kabuto health` called its agent unhealthy."""
    beat, seen, sleeping = TaskBeat("periodic_recycle"), [], asyncio.Event()

    async def body() -> None:
        seen.append(beat.state)
        if len(seen) <= 2:
            raise asyncpg.CannotConnectNowError("the database system is starting up")
        sleeping.set()
        await asyncio.Event().wait()  # until the next round, far away

    task = asyncio.create_task(supervise(beat, body, QUICK, reports_itself=False))
    await asyncio.wait_for(sleeping.wait(), 5)
    assert seen == [TaskState.RUNNING] * 3 and beat.state is TaskState.RUNNING
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
