"""Loops of rounds stop when their cancel was taken in during a round (stop 27, found by review).

The parked-retry loop and the heartbeat writer are loops of the same shape as the metrics sampler
(a round of broker or database work, then a wait): a cancel taken in during a round left them
running for ever, and ``AgentRuntime.run``'s TaskGroup waited for them for ever. They wait with
``progress.pause`` now, which stops a task asked to stop.

The sampler itself catches a list of errors that leaves out ``RuntimeError``, which is how
aio-pika/aiormq say a channel or connection closed under a caller (aio_pika/channel.py,
``ChannelInvalidStateError(RuntimeError)``; broker/runtime.py catches it for the same reason):
one such race ends the sampler task, and the gauges stop being updated until a restart.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import aiormq
import pytest

from broker import metrics
from broker.parked import ParkedRetry
from broker.progress import Heartbeats
from broker.topology import Names


class _TakesInOneCancel:
    """What aiormq or asyncpg can do: the first cancel lands in a round and is absorbed."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.absorbed = False
        self.rounds = 0

    async def round(self) -> None:
        self.rounds += 1
        if self.absorbed:
            return
        self.entered.set()
        try:
            await asyncio.Event().wait()  # never set: only the cancel ends the round
        except asyncio.CancelledError:
            self.absorbed = True  # taken in, not raised; the task is still being cancelled


async def _stops_within(task: asyncio.Task[Any], probe: _TakesInOneCancel, seconds: float) -> bool:
    await asyncio.wait_for(probe.entered.wait(), 5)
    task.cancel()
    await asyncio.wait({task}, timeout=seconds)
    stopped = task.done()
    if not stopped:  # clean up: a second cancel is not absorbed
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return stopped


class _ParkedRetry(ParkedRetry):
    probe: _TakesInOneCancel

    async def retry_once(self) -> int:
        await self.probe.round()
        return 0


async def test_parked_retry_stops_after_a_cancel_taken_in_during_a_round() -> None:
    retry = _ParkedRetry("exchange", None, None, timedelta(seconds=0.05))  # type: ignore[arg-type]
    retry.probe = _TakesInOneCancel()
    task = asyncio.create_task(retry.run())
    assert await _stops_within(task, retry.probe, 1.0), f"still retrying after its cancel ({retry.probe.rounds} rounds)"


class _Heartbeats(Heartbeats):
    probe: _TakesInOneCancel

    async def write(self, pool: Any) -> None:
        await self.probe.round()


async def test_heartbeats_stop_after_a_cancel_taken_in_during_a_write() -> None:
    beats = _Heartbeats()
    beats.probe = _TakesInOneCancel()
    task = asyncio.create_task(beats.run(None, timedelta(seconds=0.05)))  # type: ignore[arg-type]
    assert await _stops_within(task, beats.probe, 1.0), f"still beating after its cancel ({beats.probe.rounds} writes)"


class _ClosedUnder:
    async def __aenter__(self) -> None:
        raise aiormq.exceptions.ChannelInvalidStateError("No active transport in channel")

    async def __aexit__(self, *exc: object) -> None:
        return None


class _Connection:
    """Every channel asked for is closed under its caller; the third ask is noted."""

    def __init__(self) -> None:
        self.asked = 0
        self.thrice = asyncio.Event()

    def channel(self, **_: object) -> _ClosedUnder:
        self.asked += 1
        if self.asked >= 3:
            self.thrice.set()
        return _ClosedUnder()


class _Runtime:
    id = "exchange"
    pool = None
    names = Names("review2")

    def __init__(self) -> None:
        self.connection = _Connection()


async def test_the_sampler_outlives_a_channel_closed_under_it() -> None:
    runtime = _Runtime()
    sampler = asyncio.create_task(metrics._sample_forever([runtime], timedelta(seconds=0.01)))  # type: ignore[list-item]
    # three rounds, each meeting a closed channel: the sampler went on after the first
    thrice = asyncio.ensure_future(runtime.connection.thrice.wait())
    await asyncio.wait({sampler, thrice}, timeout=5, return_when=asyncio.FIRST_COMPLETED)
    thrice.cancel()
    try:
        if sampler.done():
            pytest.fail(f"the sampler ended, metrics frozen from now on: {sampler.exception()!r}")
    finally:
        sampler.cancel()
        await asyncio.gather(sampler, return_exceptions=True)
