"""``kabuto run all`` runs each agent as its own OS process and keeps it running (issues 8, 13):
a child that dies comes back by itself with back-off, and a stop reaches every child."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

from agents.registry import PARTICIPANT_SIDE
from broker import ops
from broker.settings import AGENT_IDS, Settings
from broker.supervisor import Backoff, Child, Exit, supervise
from tests import support


def test_back_off_doubles_while_a_child_keeps_dying_and_resets_once_it_ran_long_enough() -> None:
    backoff = Backoff(initial=0.5, maximum=4, healthy_after=30)
    delays = [0.0]
    for _ in range(6):
        delays.append(backoff.after(delays[-1], ran=0.1))
    assert delays[1:] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert backoff.after(4.0, ran=31) == 0.5


async def test_a_child_exiting_non_zero_is_restarted_with_growing_delays_until_stopped() -> None:
    exits: asyncio.Queue[Exit] = asyncio.Queue()
    stop = asyncio.Event()
    failing = Child("failing", (sys.executable, "-c", "raise SystemExit(3)"))
    task = asyncio.create_task(supervise([failing], stop, Backoff(initial=0.05, maximum=0.4), exits.put_nowait))
    seen = [await asyncio.wait_for(exits.get(), 30) for _ in range(5)]
    stop.set()
    await asyncio.wait_for(task, 30)
    assert all(e.code == 3 for e in seen)
    assert [e.restart_in for e in seen] == [0.05, 0.1, 0.2, 0.4, 0.4]


def _child_reporting_ready(name: str, fifo: Path, setup: str = "") -> Child:
    """A child that says it is ready through a named pipe once ``setup`` ran, then idles."""
    os.mkfifo(fifo)
    code = f"import signal, time\n{setup}\nopen({str(fifo)!r}, 'w').write('ready')\nwhile True: time.sleep(1)"
    return Child(name, (sys.executable, "-c", code))


async def test_stop_sends_sigterm_and_kills_a_child_that_ignores_it_after_the_grace(tmp_path: Path) -> None:
    polite = _child_reporting_ready("polite", tmp_path / "polite")
    stubborn = _child_reporting_ready(
        "stubborn", tmp_path / "stubborn", "signal.signal(signal.SIGTERM, signal.SIG_IGN)"
    )
    exits: list[Exit] = []
    stop = asyncio.Event()
    task = asyncio.create_task(supervise([polite, stubborn], stop, Backoff(grace=1.0), exits.append))
    for fifo in ("polite", "stubborn"):  # blocks until the child opened, wrote and closed its end
        assert await asyncio.wait_for(asyncio.to_thread((tmp_path / fifo).read_text), 30) == "ready"
    stop.set()
    await asyncio.wait_for(task, 30)
    codes = {e.name: e.code for e in exits}
    assert codes == {"polite": -signal.SIGTERM, "stubborn": -signal.SIGKILL}
    assert all(e.restart_in is None for e in exits)


async def test_a_child_starts_at_its_niceness_above_the_supervisors(tmp_path: Path) -> None:
    """``Child.niceness`` is added as the child starts: what `kabuto run all` gives the agents on
    the participants' side (Settings.participant_niceness)."""
    code = f"import os, time\nopen({str(tmp_path / 'nice')!r}, 'w').write(str(os.nice(0)))\nwhile True: time.sleep(1)"
    os.mkfifo(tmp_path / "nice")
    stop = asyncio.Event()
    task = asyncio.create_task(supervise([Child("nice", (sys.executable, "-c", code), niceness=3)], stop))
    reported = await asyncio.wait_for(asyncio.to_thread((tmp_path / "nice").read_text), 30)
    stop.set()
    await asyncio.wait_for(task, 30)
    assert int(reported) == os.nice(0) + 3


async def _children(process: asyncio.subprocess.Process) -> dict[str, int]:
    """Read the supervisor's log until every agent is ready; the pid of each agent's process."""
    assert process.stderr is not None
    pids: dict[str, int] = {}
    async with asyncio.timeout(120):  # seven Python processes starting at once on two cores
        while b'"agents_ready"' not in (line := await process.stderr.readline()):
            assert line, "kabuto run all exited before its agents were ready"
            if b'"child_started"' in line:
                event = json.loads(line)
                pids[event["child"]] = event["pid"]
    return pids


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").exists() and Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


async def test_run_all_runs_one_process_per_agent_and_brings_a_killed_one_back(settings: Settings) -> None:
    argv = (sys.executable, "-m", "agents.cli", "run", "all")
    process = await asyncio.create_subprocess_exec(
        *argv, env=support.environment(settings), stderr=asyncio.subprocess.PIPE
    )
    assert process.stderr is not None
    try:
        pids = await _children(process)
        assert sorted(pids) == sorted(AGENT_IDS) and len(set(pids.values())) == len(AGENT_IDS)
        # the market's core at the supervisor's priority, the participants' side below it
        base = os.getpriority(os.PRIO_PROCESS, process.pid)
        nice = {agent: os.getpriority(os.PRIO_PROCESS, pid) - base for agent, pid in pids.items()}
        lower = min(base + settings.participant_niceness, 19) - base  # Linux stops at 19
        assert nice == {a: lower if a in PARTICIPANT_SIDE else 0 for a in AGENT_IDS}
        assert {a for a, n in nice.items() if n} == {"investor", "brokerage", "credit"}
        assert process.pid not in pids.values()
        os.kill(pids["exchange"], signal.SIGKILL)  # a crash: the supervisor starts it again
        async with asyncio.timeout(60):
            while b'"child_started"' not in (line := await process.stderr.readline()):
                assert line, "kabuto run all exited instead of restarting the exchange"
        restarted = json.loads(line)
        assert restarted["child"] == "exchange" and restarted["pid"] != pids["exchange"]
        async with asyncio.timeout(60):  # the new exchange process says it is consuming again
            while not (b'"agents_ready"' in (line := await process.stderr.readline()) and b'["exchange"]' in line):
                assert line, "kabuto run all exited before the exchange was back"
        async with asyncio.timeout(30):  # "ready" comes just before its consumer registers at the broker
            while (await ops.status(settings, ["exchange"]))[0].consumers != 1:  # noqa: ASYNC110 — no event for it
                await asyncio.sleep(0.1)
        drain = asyncio.create_task(process.stderr.read())
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 60) == 0
        log = await drain
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert b'"child_exited"' not in log  # the stop is not a crash
    assert b'"children_stopped"' in log
    assert not any(_alive(pid) for pid in [*pids.values(), restarted["pid"]])
