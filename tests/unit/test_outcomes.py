"""The consumer's outcomes do not grow with the messages handled (issue 13), and waiters still
see every outcome recorded while they wait."""

from __future__ import annotations

import asyncio

from broker.consumer import Outcome, Outcomes, Settled


def settled(i: int, outcome: Outcome = Outcome.PROCESSED) -> Settled:
    return Settled(f"m{i}", outcome, None, "certificate.issued", f"c{i}")


async def test_history_is_bounded_however_many_messages_are_handled() -> None:
    outcomes = Outcomes(history=1_000)
    for i in range(50_000):
        await outcomes.record(settled(i, Outcome.DUPLICATE if i % 10 == 0 else Outcome.PROCESSED))
    assert len(outcomes) == 1_000
    assert outcomes.count(Outcome.PROCESSED) == 45_000  # totals are counters, exact past the history
    assert outcomes.count(Outcome.DUPLICATE) == 5_000
    assert (await outcomes.wait_for("m49999", timeout=0.1)).correlation_id == "c49999"


async def test_a_waiter_counts_every_match_recorded_while_it_waits_beyond_the_history() -> None:
    outcomes = Outcomes(history=10)
    waiting = asyncio.create_task(outcomes.wait_count(lambda s: s.outcome is Outcome.PROCESSED, 500, timeout=5))
    await asyncio.sleep(0)  # let the waiter register before anything is recorded
    for i in range(500):
        await outcomes.record(settled(i))
    found = await waiting
    assert [s.message_id for s in found] == [f"m{i}" for i in range(500)]
    assert len(outcomes) == 10
    assert not outcomes._waiters  # a finished waiter is dropped


async def test_a_late_waiter_finds_a_recent_outcome_and_an_expired_one_times_out() -> None:
    outcomes = Outcomes(history=3)
    for i in range(5):
        await outcomes.record(settled(i))
    assert (await outcomes.reply("certificate.issued", "c4", timeout=0.1)).message_id == "m4"
    try:
        await outcomes.wait_for("m0", timeout=0.05)
    except TimeoutError:
        pass
    else:
        raise AssertionError("m0 fell out of the bounded history; waiting for it must time out")
    assert not outcomes._waiters  # a timed-out waiter is dropped too
