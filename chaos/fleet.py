"""The agents as separate OS processes (``kabuto run AGENT``), and the suite's own supervisor.

The fleet plays the part compose or systemd plays in production: it restarts an agent the
suite killed, and one that exited by itself (an agent exits non-zero on a failure it cannot
recover from), with back-off. Each agent logs to ``var/chaos/logs/<agent>.log``.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from broker.settings import AGENT_IDS


@dataclass(slots=True)
class AgentProcess:
    agent: str
    process: asyncio.subprocess.Process | None = None
    killed: bool = False  # by the suite, on purpose
    kills: int = 0
    self_exits: list[int] = field(default_factory=list)  # exit codes of exits nobody asked for


class Fleet:
    def __init__(self, environment: dict[str, str], log_dir: Path, agents: tuple[str, ...] = AGENT_IDS) -> None:
        self.environment = environment
        self.log_dir = log_dir
        self.agents = {a: AgentProcess(a) for a in agents}
        self._watchers: set[asyncio.Task[None]] = set()
        self._stopping = False

    async def start(self, agent: str) -> None:
        entry = self.agents[agent]
        log = (self.log_dir / f"{agent}.log").open("ab")
        entry.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "agents.cli", "run", agent, env=self.environment, stdout=log, stderr=log
        )
        log.close()
        entry.killed = False
        watcher = asyncio.create_task(self._watch(entry, entry.process))
        self._watchers.add(watcher)
        watcher.add_done_callback(self._watchers.discard)

    async def start_all(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for agent in self.agents:
            await self.start(agent)

    async def kill(self, agent: str) -> None:
        """kill -9: no clean shutdown, deliveries in flight and unpublished rows left as they are."""
        entry = self.agents[agent]
        if entry.process and entry.process.returncode is None:
            entry.killed = True
            entry.kills += 1
            entry.process.kill()
            await entry.process.wait()

    async def _watch(self, entry: AgentProcess, process: asyncio.subprocess.Process) -> None:
        code = await process.wait()
        if self._stopping or entry.killed:
            return
        entry.self_exits.append(code)
        delay = min(0.5 * 2 ** len(entry.self_exits), 10.0)
        print(f"  fleet: {entry.agent} exited by itself with code {code}; restarting in {delay:.1f} s", flush=True)
        await asyncio.sleep(delay)  # back-off before the restart, as a process supervisor does
        if not self._stopping:
            await self.start(entry.agent)

    def alive(self) -> list[str]:
        return [a for a, e in self.agents.items() if e.process and e.process.returncode is None]

    async def stop(self, grace: float = 20.0) -> None:
        self._stopping = True
        running = [e.process for e in self.agents.values() if e.process and e.process.returncode is None]
        for process in running:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for process in running:
            try:
                async with asyncio.timeout(max(0.1, deadline - time.monotonic())):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()
        for watcher in list(self._watchers):
            watcher.cancel()
