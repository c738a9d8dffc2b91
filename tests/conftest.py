"""Fixtures: real RabbitMQ and PostgreSQL, a database and a namespace per test.

The services are required. If either does not answer, every test that needs it errors with
a message saying how to start it; nothing is skipped. Each test gets its own database
(cloned from a migrated template ahead of time, so it starts empty and fast) and its own RabbitMQ name
prefix, deleted afterwards, so tests never see each other's messages or rows.

Every agent of the suite runs under its own RabbitMQ user and PostgreSQL login (issue 13,
least privilege by default): made once per session with permissions for the test namespaces
(``t`` + 10 hex digits) only, written to the session's key directory, and deleted at the end.

``make test`` runs the suite in two processes (pytest-xdist). Each is a session of its own, with
its own template database, CA and agent logins (named after its process id); what touches the
whole PostgreSQL cluster (the agents' roles, made by the migrations) is done under one lock.
A test that looks at the cluster's activity looks at its own database only.
"""

from __future__ import annotations

import asyncio
import os
import queue
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import asyncpg
import pytest

from agents.demo.credit import MERCHANT as DEMO_MERCHANT
from agents.exchange.warm_book import BOOKS
from agents.merchant import client as merchant_terminal
from broker import event_loop, logs, provisioning, topology
from broker.migrate import migrate
from broker.pki import KeyStore, default_participant, platform_participants
from broker.settings import AGENT_IDS, Settings, load
from broker.topology import Names
from chaos import invariants
from schemas.identity import Role

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
INVESTORS = ("alice", "bob", "carol")
MERCHANTS = ("shop",)
TEST_NAMESPACES = r"t[0-9a-f]{10}"
CLUSTER_LOCK = 0x6B6162_7465737473  # "kab" "tests"
AMQP_URL = os.environ.get("KABUTO_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
DATABASE_URL = os.environ.get("KABUTO_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
HOW_TO_START = (
    "Kabuto's tests need RabbitMQ on 127.0.0.1:5672 and PostgreSQL on 127.0.0.1:5432 "
    "(or KABUTO_TEST_AMQP_URL / KABUTO_TEST_DATABASE_URL). Run `make test`, which starts them, "
    "or `bash scripts/services.sh`."
)


class _CurrentStderr:
    """Whatever ``sys.stderr`` is when a line is written: pytest captures each test's own."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def logs_as_agents_write_them() -> None:
    """Every level, as the JSON lines the agents write; not structlog's default, which drew each
    logged exception with Rich (11 s of the suite's CPU) for output nobody reads unless a test fails."""
    logs.configure("debug", "json", _CurrentStderr(), cache=False)  # type: ignore[arg-type]


@pytest.fixture(scope="session", autouse=True)
def test_logs() -> None:
    logs_as_agents_write_them()


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, event_loop.LoopFactory]:
    """The tests run on the loop the agents run on (``KABUTO_EVENT_LOOP``, uvloop by default)."""
    name = load().event_loop
    return {name: event_loop.factory(name)}


def database_url(name: str) -> str:
    return urlunsplit(urlsplit(DATABASE_URL)._replace(path=f"/{name}"))


@pytest.fixture(scope="session")
async def services() -> None:
    try:
        connection = await aio_pika.connect(AMQP_URL, timeout=10)
        await connection.close()
    except (OSError, aio_pika.exceptions.AMQPError) as exc:
        pytest.fail(f"RabbitMQ is not reachable at {AMQP_URL}: {exc!r}. {HOW_TO_START}", pytrace=False)
    try:
        conn = await asyncpg.connect(DATABASE_URL, timeout=10)
        await conn.close()
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.fail(f"PostgreSQL is not reachable at {DATABASE_URL}: {exc!r}. {HOW_TO_START}", pytrace=False)


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> KeyStore:
    store = KeyStore(tmp_path_factory.mktemp("keys"))
    store.init_ca()
    for participant in platform_participants():
        store.enrol(participant)
    for investor in INVESTORS:
        store.enrol(default_participant(investor, Role.INVESTOR, limit=10_000_000))
    for merchant in MERCHANTS:
        store.enrol(default_participant(merchant, Role.MERCHANT))
    return store


@asynccontextmanager
async def cluster_wide_lock() -> AsyncIterator[None]:
    """One test process at a time in what touches the whole PostgreSQL cluster: the migrations
    create the agents' roles (``kabuto_<agent>``) and provisioning grants them, and two sessions
    (``pytest -n``) doing so at once collide. The lock lives in the ``postgres`` database, which
    every process connects to as its admin."""
    admin = await asyncpg.connect(DATABASE_URL)
    try:
        await admin.execute("SELECT pg_advisory_lock($1)", CLUSTER_LOCK)
        yield
    finally:
        await admin.close()  # and with it the lock


@pytest.fixture(scope="session")
async def template_database(services: None) -> AsyncIterator[str]:
    name = f"kabuto_template_{os.getpid()}"
    admin = await asyncpg.connect(DATABASE_URL)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await admin.execute(f'CREATE DATABASE "{name}"')
        async with cluster_wide_lock():
            await migrate(database_url(name), MIGRATIONS)
        yield name
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture(scope="session")
async def agent_logins(keys: KeyStore, template_database: str) -> AsyncIterator[provisioning.Provisioned]:
    """One broker user and one database login per agent for the whole session, reaching only that
    agent's queues in any test namespace and only its schema role (``kabuto_<agent>``, made by the
    template's migrations)."""
    admin = Settings(amqp_url=AMQP_URL, database_url=DATABASE_URL, key_dir=keys.root, namespace="t")
    async with cluster_wide_lock():
        made = await provisioning.provision(
            admin, [(a, Role(a)) for a in AGENT_IDS], prefix=f"kt{os.getpid()}", namespace_pattern=TEST_NAMESPACES
        )
    yield made
    await provisioning.delete_users(made.amqp_users)
    await provisioning.drop_logins(DATABASE_URL, made.database_logins)


class ReadyDatabases:
    """Databases cloned from the template ahead of the tests that take them, and dropped after
    them, in a thread of its own. A clone waits on the disk for most of a second here (``CREATE
    DATABASE … TEMPLATE`` writes and syncs every file of the template), which was most of the
    suite's time; cloned while the tests run, each test still gets a fresh database and rarely
    waits for it."""

    AHEAD = 3

    def __init__(self, template: str) -> None:
        self.template = template
        self._ready: queue.Queue[str] = queue.Queue(maxsize=self.AHEAD)
        self._used: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._clone()), name="ready-databases", daemon=True)
        self._thread.start()

    async def _clone(self) -> None:
        admin = await asyncpg.connect(DATABASE_URL)
        try:
            while not self._stop.is_set():
                name = f"kabuto_test_{uuid.uuid4().hex[:12]}"
                await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
                while not self._stop.is_set():
                    await self._drop_used(admin)
                    try:
                        self._ready.put(name, timeout=0.2)
                        break
                    except queue.Full:
                        continue
                else:
                    await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
            await self._drop_used(admin)
        except Exception as exc:  # noqa: BLE001 — a thread: reported to the next test that takes a database
            self._failure = exc
        finally:
            await admin.close()

    async def _drop_used(self, admin: asyncpg.Connection) -> None:
        while not self._used.empty():
            await admin.execute(f'DROP DATABASE IF EXISTS "{self._used.get_nowait()}" WITH (FORCE)')

    async def take(self) -> str:
        """A fresh clone of the template, its name."""
        while True:
            if self._failure is not None:
                raise RuntimeError(f"cloning test databases failed: {self._failure!r}") from self._failure
            try:
                return await asyncio.to_thread(self._ready.get, timeout=1)
            except queue.Empty:
                continue

    def done_with(self, name: str) -> None:
        """The test that took ``name`` ended: the thread drops it."""
        self._used.put(name)

    async def close(self) -> None:
        self._stop.set()
        await asyncio.to_thread(self._thread.join, 30)
        admin = await asyncpg.connect(DATABASE_URL)
        try:
            while not self._ready.empty():
                await admin.execute(f'DROP DATABASE IF EXISTS "{self._ready.get_nowait()}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest.fixture(scope="session")
async def ready_databases(template_database: str) -> AsyncIterator[ReadyDatabases]:
    ready = ReadyDatabases(template_database)
    yield ready
    await ready.close()


@pytest.fixture
async def database(ready_databases: ReadyDatabases) -> AsyncIterator[str]:
    name = await ready_databases.take()
    try:
        yield database_url(name)
        await assert_running_totals_match(database_url(name))
    finally:
        ready_databases.done_with(name)


async def assert_running_totals_match(url: str) -> None:
    """Whatever a test did through the agents, the totals kept beside their rows (migration 0068)
    still equal the sums of those rows."""
    connection = await asyncpg.connect(url)
    try:
        assert await invariants.running_totals(connection) == []
    finally:
        await connection.close()


class NamespacesDeleted:
    """A test's RabbitMQ namespace deleted after it, in a thread of its own, while the next test
    runs: deleting some forty queues and exchanges one by one took 0.1 to 0.2 s of every test's
    teardown. A deletion that fails is raised once, at the next test's end, and the thread goes on
    with the next namespace; the thread is a daemon and waits on nothing else, so an interpreter
    that never closes it still exits."""

    WAIT = 60.0

    def __init__(self, amqp_url: str = AMQP_URL) -> None:
        self.amqp_url = amqp_url
        self._pending: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._failures: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._delete, name="namespaces", daemon=True)
        self._thread.start()

    def _delete(self) -> None:
        with asyncio.Runner() as runner:
            while (namespace := self._pending.get()) is not None:
                try:
                    runner.run(delete_namespace(namespace, self.amqp_url))
                except Exception as exc:  # noqa: BLE001 — a thread: reported to the next test that ends
                    self._failures.put(f"{namespace}: {exc!r}")

    def _raise_failures(self) -> None:
        failed = []
        while not self._failures.empty():
            failed.append(self._failures.get_nowait())
        if failed:
            raise RuntimeError(f"deleting test namespaces failed: {'; '.join(failed)}")

    def delete(self, namespace: str) -> None:
        self._raise_failures()
        self._pending.put(namespace)

    async def close(self) -> None:
        self._pending.put(None)
        await asyncio.to_thread(self._thread.join, self.WAIT)
        if self._thread.is_alive():
            raise RuntimeError(f"test namespaces were still being deleted after {self.WAIT:.0f} s")
        self._raise_failures()


@pytest.fixture(scope="session")
async def namespaces_deleted(services: None) -> AsyncIterator[NamespacesDeleted]:
    deleted = NamespacesDeleted()
    yield deleted
    await deleted.close()


@pytest.fixture
async def settings(
    database: str, keys: KeyStore, agent_logins: provisioning.Provisioned, namespaces_deleted: NamespacesDeleted
) -> AsyncIterator[Settings]:
    namespace = f"t{uuid.uuid4().hex[:10]}"
    yield Settings(
        amqp_url=AMQP_URL,
        database_url=database,
        key_dir=keys.root,
        namespace=namespace,
        investors=INVESTORS,
        retry_delays_ms=(50, 100),
        outbox_idle_poll=timedelta(seconds=2),
        certid_list_interval=timedelta(hours=1),
        agent_credentials=True,
        # A second instance of an agent in a test's namespace is a defect of the test: it says so
        # in seconds rather than after the default wait (broker/instance.py).
        instance_wait=timedelta(seconds=5),
        # No metrics server unless a test asks for one: the default port is the host's, where
        # `make run` or another checkout's suite may be listening.
        metrics_port=0,
    )
    namespaces_deleted.delete(namespace)


async def delete_namespace(namespace: str, amqp_url: str = AMQP_URL) -> None:
    names = Names(namespace)
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        await topology.delete_namespace(channel, names, AGENT_IDS, (50, 100))
        for merchant in (*MERCHANTS, DEMO_MERCHANT):  # a terminal's queue outlives its connection (a week)
            await channel.queue_delete(merchant_terminal.queue_name(names, merchant))
    finally:
        await connection.close()


@pytest.fixture(autouse=True)
def every_order_write_reported() -> Iterator[None]:
    """Issue 8: an exchange batch that wrote order rows behind order_repo's back is refused and runs
    again a delivery at a time — correct, but slower and only logged. Every test with the exchange
    in process fails on it instead (agents/exchange/warm_book.py)."""
    before = BOOKS.uncounted
    yield
    assert BOOKS.uncounted == before, "an exchange batch wrote order rows that order_repo did not report"
