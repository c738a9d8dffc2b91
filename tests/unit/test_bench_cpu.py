"""The profiling tool's arithmetic (bench/cpu.py): CPU read from /proc, a trade's share of it, and
py-spy's folded samples summed by function."""

from __future__ import annotations

import os
import time

from bench.cpu import cpu_seconds, per_trade, pids_named, summary

SAMPLES = [
    "run (broker/event_loop.py:35);settle (broker/consumer.py:230);execute (asyncpg/connection.py:318) 6\n",
    "run (broker/event_loop.py:35);settle (broker/consumer.py:231);open (broker/envelope.py:150) 3\n",
    "run (broker/event_loop.py:36) 1\n",
    "\n",
]


def test_cpu_of_this_process_grows_as_it_works_and_a_process_gone_counts_nothing() -> None:
    before = cpu_seconds(os.getpid())
    deadline = time.process_time() + 0.05
    while time.process_time() < deadline:
        pass
    assert cpu_seconds(os.getpid()) > before
    assert cpu_seconds(2**22 + 1) == 0.0  # above the kernel's largest pid


def test_processes_are_found_by_their_command_name() -> None:
    with open(f"/proc/{os.getpid()}/comm") as comm:
        name = comm.read().strip()
    assert os.getpid() in pids_named(name)
    assert pids_named("no-such-command-here") == []


def test_a_trade_s_share_is_each_name_s_difference_in_milliseconds_the_largest_first() -> None:
    spent = per_trade({"exchange": 1.0, "rabbitmq": 2.0}, {"exchange": 3.0, "rabbitmq": 2.5, "bench": 0.1}, 100)
    assert spent == [("exchange", 20.0), ("rabbitmq", 5.0), ("bench", 1.0)]


def test_samples_by_where_they_were_by_every_frame_on_their_stack_and_below_a_frame() -> None:
    total, own = summary(SAMPLES)
    assert total == 10
    assert own == {
        "execute (asyncpg/connection.py)": 6,
        "open (broker/envelope.py)": 3,
        "run (broker/event_loop.py)": 1,
    }
    _, inclusive = summary(SAMPLES, inclusive=True)
    assert inclusive["run (broker/event_loop.py)"] == 10  # one frame however many lines it is on
    assert inclusive["settle (broker/consumer.py)"] == 9
    _, below = summary(SAMPLES, under="settle")
    assert below == {"execute (asyncpg/connection.py)": 6, "open (broker/envelope.py)": 3}
    _, at_the_top = summary(SAMPLES, under="open")
    assert at_the_top == {"(self)": 3}
