"""A relay window's mark deferred to go with the next window's read (stop 30, broker/outbox.py): an
independent suite written against bd9f1f2, which found a row published again after a run ended
while its mark waited on the database (mended: the next run waits for that mark)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from datetime import timedelta
from typing import Any

import asyncpg

from agents.investor.app import AGENT as AGENT_INVESTOR
from agents.issuer.app import AGENT as AGENT_ISSUER
from broker import outbox
from broker.consumer import Outcome
from broker.context import Context
from broker.runtime import AgentRuntime, running, started
from broker.settings import Settings
from tests import support

PENDING = "SELECT count(*) FROM outbox WHERE published_at IS NULL AND failed_at IS NULL"


async def pending(runtime: AgentRuntime) -> int:
    return int(await runtime.pool.fetchval(PENDING))


@contextlib.asynccontextmanager
async def issuer_and_investor(settings: Settings):  # type: ignore[no-untyped-def]
    """The issuer running with an offering open, and an investor agent whose relay the test runs."""
    async with started([AGENT_ISSUER], settings) as rt, AgentRuntime(AGENT_INVESTOR, settings) as investor:
        await support.open_offering(rt["issuer"])
        yield rt["issuer"], investor


async def relay_settled(runtime: AgentRuntime, since: float, task: asyncio.Task[None] | None = None) -> None:
    """Wait until a pass of the relay started after ``since`` has completed and no other begun
    (or ``task``, running it, ended)."""
    beat = runtime.relay.beat

    def waiting() -> bool:
        return beat.progress_at is not None and beat.progress_at >= since and beat.busy_since is None

    await support.eventually(lambda: (task is not None and task.done()) or waiting())


async def request_processed(investor: AgentRuntime, issuer: AgentRuntime) -> None:
    """One request from the investor agent, processed by the issuer."""
    await support.request(investor, "alice")
    await issuer.outcomes.wait(lambda s: s.outcome is Outcome.PROCESSED)


@contextlib.asynccontextmanager
async def relay_task(runtime: AgentRuntime, *, settled: bool = True):  # type: ignore[no-untyped-def]
    """The agent's relay running; ``settled``: past its first pass and waiting for a commit, so
    that a commit made now wakes it once, and a window's mark held for MARK_WITHIN is not taken
    by a late wake."""
    since = time.monotonic()
    task = asyncio.create_task(runtime.relay.run())
    if settled:
        await relay_settled(runtime, since, task)
    try:
        yield task
    finally:
        task.cancel()
        await asyncio.wait({task})


async def test_a_burst_publishes_every_row_exactly_once(settings: Settings) -> None:
    """Normal operation under bursts: every request reaches the issuer once (no DUPLICATE), and
    every row ends marked."""
    patient = dataclasses.replace(settings, outbox_idle_poll=timedelta(minutes=10))
    async with support.agents(patient, "investor", "issuer") as rt:
        investor, issuer = rt["investor"], rt["issuer"]
        await support.open_offering(issuer)
        for _ in range(4):
            await asyncio.gather(*(support.request(investor, "alice", 100) for _ in range(10)))
        await issuer.outcomes.wait_count(lambda s: s.outcome is Outcome.PROCESSED, 40, timeout=30)
        await support.eventually(lambda: _zero(investor), timeout=10)
        assert issuer.outcomes.count(Outcome.DUPLICATE) == 0


async def _zero(runtime: AgentRuntime) -> bool:
    return await pending(runtime) == 0


async def test_marks_are_held_until_the_next_commit_or_mark_within(settings: Settings, monkeypatch: Any) -> None:
    """With MARK_WITHIN widened (a constant, not a mock) the deferral is observable: the row is
    confirmed and processed downstream yet still pending in the outbox; stopping the relay then
    marks it (the finally's _mark_quietly)."""
    monkeypatch.setattr(outbox, "MARK_WITHIN", 30.0)
    async with issuer_and_investor(settings) as (issuer, investor):
        async with relay_task(investor) as task:
            await request_processed(investor, issuer)
            assert await pending(investor) == 1  # confirmed, processed, not marked
            task.cancel()
            await asyncio.wait({task})
        assert await pending(investor) == 0


async def test_listen_connection_lost_while_marks_are_held_marks_them(settings: Settings, monkeypatch: Any) -> None:
    monkeypatch.setattr(outbox, "MARK_WITHIN", 30.0)
    async with issuer_and_investor(settings) as (issuer, investor):
        async with relay_task(investor) as task:
            await request_processed(investor, issuer)
            assert await support.terminate_backends(settings, "kabuto-investor-listen") == 1
            await asyncio.wait({task}, timeout=10)
            assert task.done() and "LISTEN" in str(task.exception())
        assert await pending(investor) == 0
        async with relay_task(investor):
            await support.request(investor, "alice", 100)
            await issuer.outcomes.wait_count(lambda s: s.outcome is Outcome.PROCESSED, 2)
        assert issuer.outcomes.count(Outcome.DUPLICATE) == 0


async def test_an_unroutable_row_among_deferred_windows(settings: Settings) -> None:
    """Rows to nobody committed among routable ones while the relay publishes: the routable ones
    are processed once and marked, the others parked, none both."""
    patient = dataclasses.replace(settings, outbox_idle_poll=timedelta(minutes=10))
    async with support.agents(patient, "investor", "issuer") as rt:
        investor, issuer = rt["investor"], rt["issuer"]
        await support.open_offering(issuer)

        async def to_nobody(ctx: Context) -> None:
            ctx.emit(support.issuance_request("alice"), to="nobody")

        for _ in range(3):
            await asyncio.gather(
                *(support.request(investor, "alice", 100) for _ in range(5)), investor.command("alice", to_nobody)
            )
        await issuer.outcomes.wait_count(lambda s: s.outcome is Outcome.PROCESSED, 15, timeout=30)

        async def settled() -> bool:
            return await pending(investor) == 0

        await support.eventually(settled)
        both = await investor.pool.fetchval(
            "SELECT count(*) FROM outbox WHERE published_at IS NOT NULL AND failed_at IS NOT NULL"
        )
        parked = await investor.pool.fetchval("SELECT count(*) FROM outbox WHERE failed_at IS NOT NULL")
        assert (both, parked) == (0, 3)
        assert issuer.outcomes.count(Outcome.DUPLICATE) == 0


async def test_an_agent_stopped_while_marks_are_held_leaves_nothing_pending(
    settings: Settings, monkeypatch: Any
) -> None:
    """The whole runtime stopping (TaskGroup cancel through supervise) with marks held."""
    monkeypatch.setattr(outbox, "MARK_WITHIN", 30.0)
    async with started([AGENT_ISSUER], settings) as rt:
        issuer = rt["issuer"]
        await support.open_offering(issuer)
        async with AgentRuntime(AGENT_INVESTOR, settings) as investor:
            since = time.monotonic()
            async with asyncio.timeout(10), running(investor):
                await relay_settled(investor, since)
                await request_processed(investor, issuer)
                assert await pending(investor) == 1
            assert await pending(investor) == 0


async def test_a_run_ended_while_its_mark_waits_on_the_database_is_not_followed_by_a_second_publish(
    settings: Settings, monkeypatch: Any
) -> None:
    """The LISTEN connection is lost while a window's mark is held, and the database is slow to
    take the mark (a lock on the row stands for a stall longer than MARK_ON_END). The run that
    ends gives up waiting but its mark goes on; the next run, started at once as the supervisor
    does, waits for that mark before it reads, and the row is not published again. Found by
    review: the next run read the row as pending while the mark waited, and published it twice."""
    monkeypatch.setattr(outbox, "MARK_WITHIN", 30.0)
    async with issuer_and_investor(settings) as (issuer, investor):
        locker = await asyncpg.connect(settings.database_url, server_settings={"search_path": "investor"})
        try:
            async with relay_task(investor) as task:
                await request_processed(investor, issuer)
                transaction = locker.transaction()
                await transaction.start()
                await locker.execute("SELECT 1 FROM outbox FOR UPDATE")
                assert await support.terminate_backends(settings, "kabuto-investor-listen") == 1
                await asyncio.wait({task}, timeout=10)
                assert task.done()
                assert investor.relay._marking is not None  # the ended run's mark, still going
            async with relay_task(investor, settled=False):  # the supervisor's restart
                await support.eventually(lambda: investor.relay._marking is None)  # waiting for it
                await transaction.rollback()  # the stall ends within the bound
                await support.eventually(lambda: _zero(investor))
                await support.request(investor, "alice")  # published after anything published again
                await issuer.outcomes.wait_count(lambda s: s.outcome is Outcome.PROCESSED, 2)
        finally:
            if not locker.is_closed():
                await locker.close()
        assert issuer.outcomes.count(Outcome.DUPLICATE) == 0
