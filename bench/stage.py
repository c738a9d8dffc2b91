"""A stage for a benchmark: its own database, broker namespace and keys, and the seven agents
running as OS processes under `kabuto run all` — as an operator runs them.

Everything is made fresh (so `make bench` works on a fresh clone: the CA and every identity
are created in a temporary key directory) and removed afterwards, whatever happened.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
import tempfile
import urllib.request
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import asyncpg
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from bench.vacuum import vacuuming
from broker import metrics, ops, topology
from broker.context import Context
from broker.db import PLANNER_SETTINGS, nothing_to_undo
from broker.migrate import migrate
from broker.pki import Identity, KeyStore, default_participant, platform_participants
from broker.runtime import execute
from broker.settings import AGENT_IDS, Settings, load
from broker.topology import Names
from broker.trust import TrustStore
from schemas.identity import Role

# Seven processes starting on two busy cores can take minutes to declare and consume.
READY_WITHIN_S = 300
# The stage's agents' Prometheus endpoints, 27490–27496: below the ephemeral range, where a
# client socket may hold a port.
METRICS_PORT = 27490
MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
T = TypeVar("T")


@dataclass(frozen=True)
class ConsumerLoad:
    """What an agent's consumer says of itself so far (its ``kabuto_consumer_*`` metrics), with
    the statements its database pool ran (``kabuto_db_statements_total``)."""

    busy_seconds: float
    batches: float
    deliveries: float
    statements: float

    def since(self, before: ConsumerLoad) -> ConsumerLoad:
        return ConsumerLoad(
            self.busy_seconds - before.busy_seconds,
            self.batches - before.batches,
            self.deliveries - before.deliveries,
            self.statements - before.statements,
        )


def _scraped(agent: str) -> list[Sample]:
    """Every sample of ``agent`` its process's metrics endpoint serves now."""
    url = f"http://127.0.0.1:{metrics.port_for(METRICS_PORT, [agent])}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return [
        sample
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.labels.get("agent") == agent
    ]


def _scraped_load(agent: str) -> ConsumerLoad:
    found = {sample.name: sample.value for sample in _scraped(agent) if "le" not in sample.labels}
    return ConsumerLoad(
        found.get("kabuto_consumer_busy_seconds_total", 0.0),
        found.get("kabuto_consumer_batch_deliveries_count", 0.0),
        found.get("kabuto_consumer_batch_deliveries_sum", 0.0),
        found.get("kabuto_db_statements_total", 0.0),
    )


def _scraped_texts(agent: str) -> Counter[str]:
    return Counter(
        {
            sample.labels["statement"]: sample.value
            for sample in _scraped(agent)
            if sample.name == "kabuto_db_statement_texts_total"
        }
    )


@dataclass
class Stage:
    settings: Settings
    keys: KeyStore
    process: asyncio.subprocess.Process
    pools: dict[str, asyncpg.Pool]

    # The stage's keys do not change once it is set up: each is read from disk once, as a
    # participant's client holds its own key (read per command, they cost the bench's process a
    # fifth of its time during the trades' burst, on the cores the agents were measured on).
    identities: dict[str, Identity] = field(default_factory=dict)
    trust_store: TrustStore | None = None

    def identity(self, user_id: str) -> Identity:
        if user_id not in self.identities:
            self.identities[user_id] = self.keys.load_identity(user_id)
        return self.identities[user_id]

    def trust(self) -> TrustStore:
        if self.trust_store is None:
            self.trust_store = TrustStore(self.keys.ca_certificate(), self.keys.certificates())
        return self.trust_store

    async def command(self, agent: str, user_id: str, action: Callable[[Context], Any]) -> Any:
        """Run a command as ``user_id`` of ``agent`` (what `kabuto` commands do), on a kept pool."""
        pool = await self._pool(agent)
        return await execute(pool, self.identity(user_id), self.trust(), action, datetime.now(UTC))

    async def fetchval(self, agent: str, sql: str, *args: object) -> Any:
        return await (await self._pool(agent)).fetchval(sql, *args)

    async def fetch(self, agent: str, sql: str, *args: object) -> list[asyncpg.Record]:
        return list(await (await self._pool(agent)).fetch(sql, *args))

    async def execute_sql(self, agent: str, sql: str, *args: object) -> None:
        await (await self._pool(agent)).execute(sql, *args)

    async def _pool(self, agent: str) -> asyncpg.Pool:
        if agent not in self.pools:
            pool = await asyncpg.create_pool(
                self.settings.database_url,
                min_size=1,
                max_size=4,
                server_settings={"search_path": agent, **PLANNER_SETTINGS},  # as the agents' commands plan
                reset=nothing_to_undo,  # as the agents' pools: no reset query per use on the measured cores
            )
            assert pool is not None
            self.pools[agent] = pool
        return self.pools[agent]

    async def consumer_loads(self) -> dict[str, ConsumerLoad]:
        """Each agent's consumer load so far, scraped from its process's metrics endpoint."""
        return {agent: await asyncio.to_thread(_scraped_load, agent) for agent in self.agent_pids()}

    async def statement_texts(self) -> dict[str, Counter[str]]:
        """Each agent's statements so far by their text (``kabuto_db_statement_texts_total``): empty
        unless the agents run with ``KABUTO_STATEMENT_CENSUS=1``."""
        return {agent: await asyncio.to_thread(_scraped_texts, agent) for agent in self.agent_pids()}

    async def quiet(self, timeout: float, settle: float = 0.5) -> None:
        """Wait until nothing is under way: every agent's queues empty, its outbox published, and
        no consumer done with a batch for ``settle`` seconds. What a burst leaves behind it (the
        trades' completions, the buyers' new certificates) would otherwise share the cores with
        what is measured next."""
        agents = sorted(self.agent_pids())
        async with asyncio.timeout(timeout):
            while True:
                before = await self.batches()
                await asyncio.sleep(settle)  # a window with no batch settled in it: nothing to wait on
                statuses = await ops.status(self.settings, agents)
                idle = all(not s.inbox_messages and not s.answers_messages and not s.outbox_pending for s in statuses)
                if idle and await self.batches() == before:
                    return

    async def batches(self) -> dict[str, float]:
        """The batches each agent's consumer has settled so far (its statements never stop: the
        relay polls, the jobs run)."""
        return {agent: load.batches for agent, load in (await self.consumer_loads()).items()}

    def agent_pids(self) -> dict[str, int]:
        """The pid of each agent's process: the children of `kabuto run all`."""
        found = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().split()
                argv = [part for part in (stat.parent / "cmdline").read_bytes().split(b"\0") if part]
            except OSError:
                continue
            if int(fields[3]) == self.process.pid and len(argv) >= 2 and argv[-2] == b"run":
                found[argv[-1].decode()] = int(fields[0])
        return found

    def rss_kib(self) -> dict[str, int]:
        rss = {}
        for agent, pid in self.agent_pids().items():
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss[agent] = int(line.split()[1])
        return rss


@asynccontextmanager
async def stage(investors: tuple[str, ...] = (), traders: tuple[str, ...] = ()) -> AsyncIterator[Stage]:
    """Agents hosting ``investors``; ``traders`` are enrolled investors the bench itself speaks for."""
    base = load()
    database = f"kabuto_bench_{uuid.uuid4().hex[:8]}"
    url = urlunsplit(urlsplit(base.database_url)._replace(path=f"/{database}"))
    key_dir = Path(tempfile.mkdtemp(prefix="kabuto-bench-keys-"))
    keys = KeyStore(key_dir)
    keys.init_ca()
    for participant in platform_participants():
        keys.enrol(participant)
    for user in (*investors, *traders):
        keys.enrol(default_participant(user, Role.INVESTOR, limit=10**15))
    settings = base.with_(
        database_url=url,
        namespace=f"bench{uuid.uuid4().hex[:6]}",
        investors=investors or ("bench-nobody",),
        key_dir=key_dir,
        outbox_idle_poll=timedelta(seconds=1),
        agent_credentials=False,  # a throw-away stage run as the administrator; the tests prove least privilege
    )
    if not investors:
        keys.enrol(default_participant("bench-nobody", Role.INVESTOR))
    await migrate(url, MIGRATIONS)
    process = await _run_all(settings)
    result = Stage(settings, keys, process, {})
    try:
        await _ready(settings, process)
        async with vacuuming(url):  # as autovacuum every 5 s would (bench/vacuum.py)
            yield result
    finally:
        for pool in result.pools.values():
            await pool.close()
        await _stop(process)
        await _remove(settings, database, key_dir)


async def _run_all(settings: Settings) -> asyncio.subprocess.Process:
    env = {
        **os.environ,
        "KABUTO_AMQP_URL": settings.amqp_url,
        "KABUTO_DATABASE_URL": settings.database_url,
        "KABUTO_KEY_DIR": str(settings.key_dir),
        "KABUTO_NAMESPACE": settings.namespace,
        "KABUTO_INVESTORS": ",".join(settings.investors),
        "KABUTO_OUTBOX_IDLE_POLL": "1",
        "KABUTO_AGENT_CREDENTIALS": "0",
        # Beside the default ports, which a `make run` on this machine may hold (every agent would exit).
        "KABUTO_METRICS_PORT": str(METRICS_PORT),
        "KABUTO_LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "warning"),
        "KABUTO_LOG_FORMAT": "console",
    }
    argv = (sys.executable, "-m", "agents.cli", "run", "all")
    return await asyncio.create_subprocess_exec(*argv, env=env, stdin=asyncio.subprocess.DEVNULL)


async def _ready(settings: Settings, process: asyncio.subprocess.Process) -> None:
    async with asyncio.timeout(READY_WITHIN_S):
        while True:
            if process.returncode is not None:
                raise SystemExit(f"kabuto run all exited with {process.returncode} before its agents were ready")
            try:
                status = await ops.status(settings, list(AGENT_IDS))
            except Exception:  # noqa: BLE001 — a slow start (timeouts, queues not declared yet): ask again
                status = []
            if status and all(s.consumers for s in status):
                return
            await asyncio.sleep(1)  # the broker has no event for a consumer appearing


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(60):
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()


async def _remove(settings: Settings, database: str, key_dir: Path) -> None:
    admin = await asyncpg.connect(urlunsplit(urlsplit(settings.database_url)._replace(path="/postgres")))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    finally:
        await admin.close()
    names = Names(settings.namespace)
    connection = await aio_pika.connect(settings.amqp_url)
    try:
        await topology.delete_namespace(await connection.channel(), names, AGENT_IDS, settings.retry_delays_ms)
    finally:
        await connection.close()
    shutil.rmtree(key_dir, ignore_errors=True)
