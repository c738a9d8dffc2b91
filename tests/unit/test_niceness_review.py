"""Review of `kabuto run all`'s participant niceness (broker/supervisor.py Child.niceness,
broker/settings.py KABUTO_PARTICIPANT_NICENESS): real child processes, no mocks."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from agents.operations import _niceness
from agents.registry import AGENTS, PARTICIPANT_SIDE
from broker.settings import SettingsError, load
from broker.supervisor import Backoff, Child, supervise
from tests import support

ROOT = str(Path(__file__).resolve().parents[2])
# Each run of the child appends its niceness to a file, then exits (``restarts``) or waits.
CHILD = """import os, sys, time
with open(sys.argv[1], 'a') as f:
    f.write(str(os.nice(0)) + '\\n')
if sys.argv[2] == 'exit':
    sys.exit(1)
while True:
    time.sleep(1)
"""


async def _niceness_of_runs(tmp_path: Path, niceness: int, runs: int, mode: str) -> list[int]:
    out = tmp_path / "nice.txt"
    stop = asyncio.Event()
    child = Child("nice", (sys.executable, "-c", CHILD, str(out), mode), niceness=niceness)
    backoff = Backoff(initial=0.05, maximum=0.1, healthy_after=30, grace=5)
    task = asyncio.create_task(supervise([child], stop, backoff))

    def ran() -> bool:
        return out.exists() and len(out.read_text().split()) >= runs

    try:
        await support.eventually(ran, timeout=30)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    return [int(n) for n in out.read_text().split()][:runs]


@pytest.mark.parametrize("niceness", [0, 19])
async def test_the_child_runs_at_the_supervisors_niceness_plus_its_own(tmp_path: Path, niceness: int) -> None:
    base = os.nice(0)
    assert await _niceness_of_runs(tmp_path, niceness, 1, "wait") == [min(base + niceness, 19)]


async def test_a_restarted_child_keeps_its_niceness_and_does_not_add_it_twice(tmp_path: Path) -> None:
    base = os.nice(0)
    assert await _niceness_of_runs(tmp_path, 5, 3, "exit") == [min(base + 5, 19)] * 3


async def test_a_supervisor_that_already_runs_niced_starts_its_children_clamped_at_19(tmp_path: Path) -> None:
    """The supervisor at niceness 15 (started under `nice`): a child at +10 runs at 19, the most
    Linux allows, rather than failing to start."""
    out = tmp_path / "nested.txt"
    script = f"""
import asyncio, os, sys
sys.path.insert(0, {ROOT!r})
from broker.supervisor import Backoff, Child, supervise
os.nice(max(0, 15 - os.nice(0)))
async def main():
    stop = asyncio.Event()
    child = Child('nice', (sys.executable, '-c', {CHILD!r}, {str(out)!r}, 'exit'), niceness=10)
    await supervise([child], stop, Backoff(initial=5, grace=5), lambda _: stop.set())  # its one run
asyncio.run(main())
"""
    process = await asyncio.create_subprocess_exec(sys.executable, "-c", script)
    assert await asyncio.wait_for(process.wait(), 60) == 0
    assert out.read_text().split() == ["19"]


def test_only_the_participant_side_is_niced_and_the_bounds_are_0_to_19() -> None:
    settings = load({"KABUTO_PARTICIPANT_NICENESS": "19"})
    assert {a: _niceness(settings, a) for a in AGENTS} == {a: 19 if a in PARTICIPANT_SIDE else 0 for a in AGENTS}
    assert load({"KABUTO_PARTICIPANT_NICENESS": "0"}).participant_niceness == 0
    assert load({}).participant_niceness == 10
    assert {"exchange", "settlement", "issuer", "custody"}.isdisjoint(PARTICIPANT_SIDE)
    for bad in ("-1", "20", " ", "1.5"):
        with pytest.raises(SettingsError, match="KABUTO_PARTICIPANT_NICENESS"):
            load({"KABUTO_PARTICIPANT_NICENESS": bad})
