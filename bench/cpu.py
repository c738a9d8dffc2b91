"""Where a trade's CPU goes: every process of the machine's services counted, per trade.

    python -m bench.cpu --trades 1000                      # a burst, as the bench's flow places it
    python -m bench.cpu --rate 80 --seconds 10             # the open loop at 80 trades/s
    python -m bench.cpu --trades 1000 --spy var/spy        # and py-spy's samples of each agent
    python -m bench.cpu --rate 100 --by-type               # and what each agent published, by type
    python -m bench.cpu --rate 100 --census 15             # and each agent's 15 commonest statements
    python -m bench.cpu summary var/spy/settlement.txt     # a sample file's functions, self time
    python -m bench.cpu summary var/spy/settlement.txt --inclusive --under settle_batch

Prints the CPU milliseconds a trade of each agent's process, of PostgreSQL's backends by their
``application_name`` (each agent's pool and its relay's LISTEN connection; the bench's own, a
blank name), of PostgreSQL's other processes, of RabbitMQ and of this process; then the part of
the time each agent's consumer was busy (its ``kabuto_consumer_*`` metrics: near 100 % the agent
is where a trade waits); then what each agent's outbox holds a trade, rows and messages (with
``--by-type``, those stored during the trades by message type and by where the rows went: a row
is an AMQP publication; with ``--census``, each agent's statements by their text, a trade and a
batch, the agents run with ``KABUTO_STATEMENT_CENSUS=1``). Read from ``/proc`` before and after
the trades, on the bench's stage (bench/stage.py): Linux only. A backend that starts during the
run is not counted. Every performance stop measured this way (docs/performance.md); it is a
tool, not a figure with a target.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bench import flow
from bench.stage import ConsumerLoad, Stage, stage
from broker import event_loop, logs, settings

TICKS = os.sysconf("SC_CLK_TCK")
SPY_RATE = 97  # samples a second: off the beat of anything periodic in the agents
WARM = 50  # trades placed before the open loop, as the bench's flow does


def cpu_seconds(pid: int) -> float:
    """User and system CPU of a process so far (0 for one that is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()  # the command name, in parentheses, may hold spaces
    return (int(fields[11]) + int(fields[12])) / TICKS


def pids_named(command: str) -> list[int]:
    """The processes whose command name (``/proc/PID/comm``) is ``command``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == command:
                    found.append(int(entry.name))
            except (FileNotFoundError, ProcessLookupError):
                continue
    return found


@dataclass(frozen=True)
class Processes:
    """What is counted, by the name it is printed under."""

    agents: Mapping[str, int]
    backends: Mapping[int, str]  # PostgreSQL backend pid → its application_name

    def seconds(self) -> dict[str, float]:
        counted = {agent: cpu_seconds(pid) for agent, pid in self.agents.items()}
        for pid, name in self.backends.items():
            key = f"postgres {name or '(bench)'}"
            counted[key] = counted.get(key, 0.0) + cpu_seconds(pid)
        others = [pid for pid in pids_named("postgres") if pid not in self.backends]
        counted["postgres (others)"] = sum(cpu_seconds(pid) for pid in others)
        counted["rabbitmq"] = sum(cpu_seconds(pid) for pid in pids_named("beam.smp"))
        counted["bench"] = cpu_seconds(os.getpid())
        return counted


async def processes(st: Stage) -> Processes:
    sql = "SELECT pid, application_name FROM pg_stat_activity WHERE backend_type = 'client backend'"
    rows = await st.fetch("exchange", sql)
    return Processes(st.agent_pids(), {row["pid"]: row["application_name"] for row in rows})


def per_trade(before: Mapping[str, float], after: Mapping[str, float], trades: int) -> list[tuple[str, float]]:
    """Milliseconds of CPU a trade by name, the largest first."""
    spent = {name: (after[name] - before.get(name, 0.0)) * 1000 / trades for name in after}
    return sorted(spent.items(), key=lambda item: -item[1])


@contextmanager
def spying(agents: Mapping[str, int], directory: Path | None, seconds: float) -> Iterator[None]:
    """py-spy recording each agent's process for ``seconds`` into ``directory/AGENT.txt`` (its raw,
    folded format: one stack a line, then its count), waited for at the end of the block."""
    if directory is None:
        yield
        return
    directory.mkdir(parents=True, exist_ok=True)
    beside = Path(sys.executable).with_name("py-spy")  # the bench extra installs it in the venv
    command = str(beside) if beside.exists() else shutil.which("py-spy") or "py-spy"
    spies = [
        subprocess.Popen(
            _spy_command(command, pid, seconds, directory / f"{agent}.txt"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for agent, pid in agents.items()
    ]
    try:
        yield
    finally:
        for spy in spies:
            spy.wait()


def _spy_command(command: str, pid: int, seconds: float, output: Path) -> list[str]:
    """py-spy's record, not pausing the process it samples (``--nonblocking``)."""
    duration = str(max(1, round(seconds)))
    options = ["--nonblocking", "--format", "raw", "--rate", str(SPY_RATE), "--duration", duration]
    return [command, "record", *options, "--output", str(output), "--pid", str(pid)]


async def outbox_per_trade(st: Stage, trades: int) -> list[tuple[str, float, float]]:
    """Each agent's outbox rows and messages (a packed row holds several) a trade, the run's whole."""
    counted = []
    for agent in st.agent_pids():
        rows = await st.fetchval(agent, "SELECT count(*) FROM outbox")
        messages = await st.fetchval(agent, "SELECT count(*) FROM outbox_messages")
        counted.append((agent, rows / trades, messages / trades))
    return counted


async def messages_by_type(st: Stage, trades: int, since: datetime) -> list[tuple[str, str, float]]:
    """Each agent's outbox messages a trade by type and where they went (a row's exchange, and
    whether it was packed with others), of those stored since ``since``; then its rows a trade
    by where they went."""
    counted = []
    for agent in st.agent_pids():
        for kind in (_MESSAGE_KIND, _ROW_KIND):
            rows = await st.fetch(agent, kind, since)
            counted += [(agent, row["kind"], row["n"] / trades) for row in rows]
    return counted


_MESSAGE_KIND = (
    "SELECT message_type || ' → ' || exchange || CASE WHEN bundle_id IS NULL THEN '' ELSE ' (packed)' END"
    " AS kind, count(*) AS n FROM outbox_messages WHERE created_at >= $1 GROUP BY 1 ORDER BY 2 DESC"
)
_ROW_KIND = (
    "SELECT 'row → ' || exchange || ' ' || CASE WHEN exchange = 'events' THEN '' ELSE routing_key END AS kind,"
    " count(*) AS n FROM outbox WHERE created_at >= $1 GROUP BY 1 ORDER BY 2 DESC"
)


def print_loads(loads: Mapping[str, ConsumerLoad], elapsed: float, trades: int) -> None:
    """Each consumer's part of the time busy, its batches a second and their size: an agent near
    1 is where a trade waits; and the statements (round trips) its pool ran, a trade."""
    for agent, load in sorted(loads.items(), key=lambda item: -item[1].busy_seconds):
        size = load.deliveries / load.batches if load.batches else 0.0
        print(
            f"  {agent:12s} consumer: busy {load.busy_seconds / elapsed:4.0%} of the time,"
            f" {load.batches / elapsed:6.1f} batches/s of {size:5.1f} deliveries;"
            f" {load.statements / trades:5.2f} statements a trade"
        )


async def measure(
    trades: int,
    rate: float,
    seconds: float,
    spy: Path | None,
    spy_seconds: float,
    by_type: bool = False,
    census: int = 0,
) -> None:
    open_loop = rate > 0
    total = int(rate * seconds) + WARM if open_loop else trades
    if census:
        os.environ["KABUTO_STATEMENT_CENSUS"] = "1"  # the stage's agents inherit this process's environment
    async with stage(investors=(flow.SELLER, flow.BUYER)) as st:
        print(f"preparing {total} certificates and resting sell orders")
        await flow.prepare(st, total, 900)
        if open_loop:
            await flow.burst(st, WARM, 900)
            await st.quiet(900)
        counted = await processes(st)
        loads = await st.consumer_loads()
        texts = await st.statement_texts()
        before, started, since = counted.seconds(), time.perf_counter(), datetime.now(UTC)
        with spying(counted.agents, spy, spy_seconds):
            if open_loop:
                latency = await flow.open_loop(st, WARM, rate, seconds, 900)
                done = int(rate * seconds)
                print(f"open loop at {rate:g} trades/s: p50 {latency.p50_ms:.0f} ms, p99 {latency.p99_ms:.0f} ms")
            else:
                await flow.burst(st, trades, 900)
                done = trades
            elapsed = time.perf_counter() - started
            after = counted.seconds()
            loaded = await st.consumer_loads()
            texts_after = await st.statement_texts()
        spent = per_trade(before, after, done)
        busy = sum(ms for _, ms in spent) * done / 1000 / elapsed
        print(f"{done} trades in {elapsed:.1f} s = {done / elapsed:.1f} trades/s; {busy:.2f} cores busy")
        for name, ms in spent:
            print(f"  {name:34s} {ms:6.2f} ms a trade")
        print(f"  {'a trade':34s} {sum(ms for _, ms in spent):6.2f} ms")
        print_loads({agent: loaded[agent].since(loads[agent]) for agent in loaded}, elapsed, done)
        for agent, rows, messages in await outbox_per_trade(st, total):
            print(f"  {agent:12s} outbox: {rows:5.2f} rows, {messages:5.2f} messages a trade")
        if by_type:
            for agent, kind, count in await messages_by_type(st, done, since):
                print(f"  {agent:12s} {kind:48s} {count:5.2f} a trade")
        if census:
            batches = {agent: loaded[agent].since(loads[agent]).batches for agent in loaded}
            print_census(texts, texts_after, batches, done, census)


def print_census(
    before: Mapping[str, Counter[str]],
    after: Mapping[str, Counter[str]],
    batches: Mapping[str, float],
    trades: int,
    top: int,
) -> None:
    """Each agent's ``top`` statements of the measured trades by their text, a trade and a batch of
    its consumer's (the relay's and the jobs' statements are counted too, but are not a batch's)."""
    for agent in sorted(after, key=lambda a: -sum((after[a] - before.get(a, Counter())).values())):
        ran = after[agent] - before.get(agent, Counter())
        if not ran:
            continue
        settled = batches.get(agent, 0.0)
        print(f"  {agent} statements: {sum(ran.values()) / trades:5.2f} a trade, its consumer {settled:.0f} batches")
        for text, count in ran.most_common(top):
            per_batch = f"{count / settled:6.2f} a batch" if settled else " " * 13
            print(f"    {count / trades:6.2f} a trade {per_batch}  {text}")


# -- reading py-spy's samples -----------------------------------------------------------------------


def _frames(line: str) -> tuple[list[str], int]:
    stack, count = line.rstrip().rsplit(" ", 1)
    return [re.sub(r":\d+\)$", ")", frame) for frame in stack.split(";")], int(count)


def summary(lines: Iterable[str], *, inclusive: bool = False, under: str | None = None) -> tuple[int, Counter[str]]:
    """Samples by function (``module.py``'s line numbers dropped): where each sample was (self)
    or every function on its stack (``inclusive``); ``under``: only samples with a frame whose
    name starts with it, counted by the function it called."""
    total, counted = 0, Counter[str]()
    for line in lines:
        if not line.strip():
            continue
        frames, count = _frames(line)
        total += count
        if under is not None:
            places = [i for i, frame in enumerate(frames) if frame.startswith(under)]
            if not places:
                continue
            below = frames[places[0] + 1 :]
            counted[below[0] if below else "(self)"] += count
        elif inclusive:
            for frame in set(frames):
                counted[frame] += count
        else:
            counted[frames[-1]] += count
    return total, counted


def print_summary(path: Path, top: int, inclusive: bool, under: str | None) -> None:
    with path.open() as lines:
        total, counted = summary(lines, inclusive=inclusive, under=under)
    print(f"{total} samples in {path}")
    for frame, count in counted.most_common(top):
        print(f"{100 * count / max(total, 1):6.1f} %  {frame}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    commands = parser.add_subparsers(dest="command")
    read = commands.add_parser("summary", help="a py-spy sample file's functions")
    read.add_argument("file", type=Path)
    read.add_argument("--top", type=int, default=30)
    read.add_argument("--inclusive", action="store_true", help="every function on the stack, not only the last")
    read.add_argument("--under", help="only below the first frame starting with this, by the function it called")
    parser.add_argument("--trades", type=int, default=1000, help="trades in the burst")
    parser.add_argument("--rate", type=float, default=0, help="trades a second of an open loop instead of a burst")
    parser.add_argument("--seconds", type=float, default=10, help="the open loop's length")
    parser.add_argument("--spy", type=Path, help="record each agent with py-spy into this directory")
    parser.add_argument("--spy-seconds", type=float, default=6, help="how long py-spy records, from the start")
    parser.add_argument("--by-type", action="store_true", help="each agent's outbox messages a trade by type")
    parser.add_argument(
        "--census", type=int, default=0, metavar="TOP", help="each agent's TOP statements by text, a trade and a batch"
    )
    args = parser.parse_args()
    if args.command == "summary":
        print_summary(args.file, args.top, args.inclusive, args.under)
        return
    logs.configure("warning", "console")
    run = measure(args.trades, args.rate, args.seconds, args.spy, args.spy_seconds, args.by_type, args.census)
    event_loop.run(run, settings.load().event_loop)


if __name__ == "__main__":
    main()
