"""Prometheus metrics of the agents in this process, served over HTTP for scraping.

Every series carries an ``agent`` label, so one registry serves one agent (``kabuto run
exchange``, or one OS process per agent) or several (``kabuto run all`` in one process) alike.
The process listens on one port (``port_for``): ``KABUTO_METRICS_PORT`` plus the agent's
position in ``AGENT_IDS`` when it runs one agent, ``KABUTO_METRICS_PORT`` plus seven when it
runs several, so every agent process on one host has a port of its own; 0 turns it off.

Counters move where things happen, through two hooks: ``observe`` where the consumer
records an outcome, and ``published`` where the relay marks an outbox row sent. Gauges
(inbox depth and consumers, dead letters, outbox pending, parked and lag) are sampled by
``exported``'s periodic task from the agent's own queues and outbox, not at call sites.

    kabuto_messages_handled_total{agent,type,outcome}     processed or duplicate
    kabuto_messages_rejected_total{agent,reason}          refused by a check, dead-lettered
    kabuto_messages_retried_total{agent}                  transient failure, retry scheduled
    kabuto_messages_dead_lettered_total{agent,reason}     every dead letter, retries exhausted included
    kabuto_handler_seconds{agent,type}                    histogram: delivery to outcome
    kabuto_outbox_published_total{agent,type}             confirmed by the broker
    kabuto_outbox_pending / _parked / _lag_seconds{agent}
    kabuto_inbox_depth / kabuto_answers_depth / kabuto_inbox_consumers / kabuto_dead_letters{agent}
    kabuto_gauges_sampled_timestamp_seconds{agent}        when the gauges above were sampled
    kabuto_db_statements_total{agent}                     every statement of the agent's pool
    kabuto_db_statement_texts_total{agent,statement}      the same by text, with KABUTO_STATEMENT_CENSUS=1
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Protocol

import aiormq
import asyncpg
from aio_pika.abc import AbstractConnection
from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server

from broker import logs
from broker.errors import KabutoError, Reason
from broker.progress import pause
from broker.settings import AGENT_IDS
from broker.supervision import ConnectionLost
from broker.topology import Names, TopologyError, check_ready

if TYPE_CHECKING:
    from broker.consumer import Settled

log = logs.get("kabuto.metrics")

HANDLED = Counter("kabuto_messages_handled", "Deliveries handled", ["agent", "type", "outcome"])
REJECTED = Counter("kabuto_messages_rejected", "Deliveries refused by a check", ["agent", "reason"])
RETRIED = Counter("kabuto_messages_retried", "Transient failures sent to a delay queue", ["agent"])
DEAD_LETTERED = Counter("kabuto_messages_dead_lettered", "Deliveries dead-lettered", ["agent", "reason"])
DB_STATEMENTS = Counter("kabuto_db_statements", "Statements the agent's database pool ran", ["agent"])
# A diagnostic, off by default (KABUTO_STATEMENT_CENSUS): the same statements by their text, one
# series per distinct statement. `python -m bench.cpu --census` prints it a trade and a batch.
DB_STATEMENT_TEXTS = Counter(
    "kabuto_db_statement_texts", "Statements the agent's database pool ran, by their text", ["agent", "statement"]
)
STATEMENT_CHARS = 100  # how much of a statement's text names its series
LATENCY = Histogram(
    "kabuto_handler_seconds",
    "Seconds from a delivery to its outcome (checks, handler, commit, ack)",
    ["agent", "type"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
# A consumer's load: the seconds it spent settling batches, per second of wall time, is the part
# of the time it was busy; near 1 its deliveries wait for it (docs/performance.md, stop 35).
CONSUMER_BUSY = Counter(
    "kabuto_consumer_busy_seconds",
    "Seconds the consumer spent settling batches (checks, handlers, commit, ack)",
    ["agent"],
)
BATCH_DELIVERIES = Histogram(
    "kabuto_consumer_batch_deliveries",
    "Deliveries settled together in one batch (group commit; a bundle's items each)",
    ["agent"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)
PUBLISHED = Counter(
    "kabuto_outbox_published", "Messages published and confirmed (a packed bundle's each)", ["agent", "type"]
)
OUTBOX_PENDING = Gauge("kabuto_outbox_pending", "Outbox rows waiting for the relay", ["agent"])
OUTBOX_PARKED = Gauge("kabuto_outbox_parked", "Outbox rows parked as unroutable", ["agent"])
OUTBOX_LAG = Gauge("kabuto_outbox_lag_seconds", "Age of the oldest pending outbox row", ["agent"])
# A bundle of messages (broker/bundle.py) is one delivery.
INBOX_DEPTH = Gauge("kabuto_inbox_depth", "Deliveries ready in the agent's inbox queue", ["agent"])
ANSWERS_DEPTH = Gauge("kabuto_answers_depth", "Deliveries ready in the agent's answers queue", ["agent"])
INBOX_CONSUMERS = Gauge("kabuto_inbox_consumers", "Consumers of the agent's inbox queue", ["agent"])
DEAD_LETTERS = Gauge("kabuto_dead_letters", "Messages in the agent's dead-letter queue", ["agent"])
# When the gauges above were last sampled (the sample's start: each was read after it): a scraper
# can tell a fresh 0 from a stale one, and an operator a sampler that stopped
# (``time() - kabuto_gauges_sampled_timestamp_seconds``).
SAMPLED_AT = Gauge(
    "kabuto_gauges_sampled_timestamp_seconds", "Unix time the agent's queue and outbox gauges were sampled", ["agent"]
)

METRICS = (
    HANDLED,
    REJECTED,
    RETRIED,
    DEAD_LETTERED,
    LATENCY,
    CONSUMER_BUSY,
    BATCH_DELIVERIES,
    DB_STATEMENTS,
    DB_STATEMENT_TEXTS,
    PUBLISHED,
    OUTBOX_PENDING,
    OUTBOX_PARKED,
    OUTBOX_LAG,
    INBOX_DEPTH,
    ANSWERS_DEPTH,
    INBOX_CONSUMERS,
    DEAD_LETTERS,
    SAMPLED_AT,
)
_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}


def exported_series() -> frozenset[str]:
    """Every series name a scraper sees from Kabuto (``…_total`` of counters, ``…_bucket`` …)."""
    return frozenset(
        family.name + suffix for metric in METRICS for family in metric.describe() for suffix in _SUFFIXES[family.type]
    )


class MetricsError(KabutoError):
    """The metrics endpoint could not be opened."""


def observe(agent: str, settled: Settled, seconds: float) -> None:
    """Count one delivery's outcome and time it: the consumer's single hook."""
    from broker.consumer import Outcome  # the consumer imports this module

    kind = settled.type or "unknown"
    match settled.outcome:
        case Outcome.PROCESSED | Outcome.DUPLICATE:
            HANDLED.labels(agent, kind, settled.outcome.value).inc()
            LATENCY.labels(agent, kind).observe(seconds)
        case Outcome.RETRY_SCHEDULED:
            RETRIED.labels(agent).inc()
        case Outcome.DEAD_LETTERED:
            reason = settled.reason.value if settled.reason else "unknown"
            DEAD_LETTERED.labels(agent, reason).inc()
            if settled.reason is not Reason.RETRIES_EXHAUSTED:
                REJECTED.labels(agent, reason).inc()


def batch_settled(agent: str, deliveries: int, seconds: float) -> None:
    """Count one batch the consumer settled and the time it took: the consumer's batch hook."""
    CONSUMER_BUSY.labels(agent).inc(seconds)
    BATCH_DELIVERIES.labels(agent).observe(deliveries)


def counting(agent: str, census: bool = False) -> Callable[[asyncpg.Connection], Awaitable[None]]:
    """A pool's ``on_connect`` (``broker.db.agent_pool``): every statement the connection runs
    counts in ``kabuto_db_statements_total`` — the consumer's, the relay's and the jobs'. Each is
    a round trip to PostgreSQL (asyncpg sends one statement at a time), which on a machine whose
    cores are full is what a batch waits on (docs/performance.md, stop 36). With ``census``, each
    counts by its text too (``statement_text``), in ``kabuto_db_statement_texts_total``: which
    round trips a batch makes, where stops 36 to 39 counted them with a patch of this function."""
    statements = DB_STATEMENTS.labels(agent)

    def ran(_: object) -> None:
        statements.inc()

    def ran_counted(record: asyncpg.connection.LoggedQuery) -> None:
        statements.inc()
        DB_STATEMENT_TEXTS.labels(agent, statement_text(record.query)).inc()

    logger = ran_counted if census else ran

    async def on_connect(connection: asyncpg.Connection) -> None:
        connection.add_query_logger(logger)

    return on_connect


def statement_text(query: str) -> str:
    """A statement as the census names it: its whitespace collapsed, its first ``STATEMENT_CHARS``
    characters (enough to tell Kabuto's statements apart, few enough for a label)."""
    return " ".join(query.split())[:STATEMENT_CHARS]


def published(agent: str, message_type: str) -> None:
    """Count one message the broker confirmed (each item of a packed bundle): the relay's hook."""
    PUBLISHED.labels(agent, message_type).inc()


def port_for(base: int, agents: Sequence[str]) -> int:
    """The process's port: base + the agent's position for one agent, base + 7 for several; 0 is off."""
    if base == 0:
        return 0
    if len(agents) == 1:
        return base + AGENT_IDS.index(agents[0])
    return base + len(AGENT_IDS)


class Sampled(Protocol):
    """What the sampler reads of a running agent (an ``AgentRuntime``)."""

    @property
    def id(self) -> str: ...
    @property
    def pool(self) -> asyncpg.Pool: ...
    @property
    def connection(self) -> AbstractConnection: ...
    @property
    def names(self) -> Names: ...


@dataclass(frozen=True, slots=True)
class Endpoint:
    address: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.port}/metrics"


@asynccontextmanager
async def exported(
    runtimes: Iterable[Sampled], address: str, port: int, interval: timedelta
) -> AsyncIterator[Endpoint | None]:
    """Serve the metrics on ``address:port`` and sample the gauges every ``interval``; port 0 is off."""
    if port == 0:
        yield None
        return
    try:
        server, thread = start_http_server(port, address, REGISTRY)
    except OSError as exc:
        raise MetricsError(f"cannot serve metrics on {address}:{port} (KABUTO_METRICS_PORT): {exc}") from exc
    sampler = asyncio.create_task(_sample_forever(list(runtimes), interval), name="metrics-sampler")
    log.info("metrics_serving", address=address, port=port)
    try:
        yield Endpoint(address, port)
    finally:
        sampler.cancel()
        await asyncio.gather(sampler, return_exceptions=True)
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


async def _sample_forever(runtimes: list[Sampled], interval: timedelta) -> None:
    while True:
        for runtime in runtimes:
            try:
                await sample(runtime)
            except (
                ConnectionLost,
                TopologyError,
                aiormq.exceptions.AMQPError,
                RuntimeError,  # aio-pika's word for a channel or connection closed under it
                OSError,
                asyncpg.PostgresError,
            ) as exc:  # a cancel one of these stood in for stops the loop at its pause
                log.warning("metrics_sample_failed", agent=runtime.id, error=repr(exc))
        await pause(interval.total_seconds())


async def sample(runtime: Sampled) -> None:
    """Set one agent's gauges from its queues and its outbox."""
    agent, names = runtime.id, runtime.names
    began = time.time()  # every figure below is read after it
    queues = await check_ready(
        runtime.connection, [names.inbox(agent), names.answers(agent), names.dead_letters(agent)], timeout=5
    )
    depth, consumers = queues[names.inbox(agent)]
    INBOX_DEPTH.labels(agent).set(depth)
    ANSWERS_DEPTH.labels(agent).set(queues[names.answers(agent)][0])
    INBOX_CONSUMERS.labels(agent).set(consumers)
    DEAD_LETTERS.labels(agent).set(queues[names.dead_letters(agent)][0])
    figures = await outbox_figures(runtime.pool)
    OUTBOX_PENDING.labels(agent).set(figures.pending)
    OUTBOX_PARKED.labels(agent).set(figures.parked)
    OUTBOX_LAG.labels(agent).set(figures.lag.total_seconds() if figures.lag else 0)
    SAMPLED_AT.labels(agent).set(began)


@dataclass(frozen=True, slots=True)
class OutboxFigures:
    pending: int
    parked: int
    lag: timedelta | None


OUTBOX_FIGURES = """SELECT p.pending, p.lag,
                         (SELECT count(*) FROM outbox WHERE failed_at IS NOT NULL) AS parked
                    FROM (SELECT count(*) AS pending, now() - min(created_at) AS lag
                          FROM outbox WHERE published_at IS NULL AND failed_at IS NULL) AS p"""


async def outbox_figures(pool: asyncpg.Pool) -> OutboxFigures:
    """Pending and parked rows of an agent's outbox, and the age of the oldest pending one.
    Each count reads its own partial index's rows (0001, 0076), never the published history."""
    row = await pool.fetchrow(OUTBOX_FIGURES)
    return OutboxFigures(row["pending"], row["parked"], row["lag"])
