"""The agent runtime: one lifespan that owns every resource an agent uses.

``AgentRuntime`` opens the agent's database pool and broker session, declares its
topology and checks it is ready, then runs the consumer, the outbox relay, the inbox and
outbox pruner, the heartbeat writer and the agent's background tasks until asked to stop. Each
runs under ``broker.supervision.supervise``: an outage of the broker or the database
interrupts a task, which waits and resumes on a new session by itself; any other failure
ends the agent with ``AgentFailed`` so that the process exits non-zero and is restarted.
Stopping cancels the tasks (a delivery in flight is finished and acked), records them as
stopped, then closes the connections; anything not acked is redelivered, anything
committed but not published is published on the next start.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import asyncpg
from aio_pika.abc import AbstractConnection

from broker import event_loop, instance, logs, metrics, outbox, topology
from broker.access import AgentUrls, agent_urls
from broker.bundle import Bundling
from broker.consumer import Consumer, Handler, Outcomes
from broker.context import Context
from broker.db import agent_pool
from broker.envelope import Freshness
from broker.group_commit import BatchScope, no_scope
from broker.link import BrokerLink, BrokerSession, close_within, connect
from broker.outbox import OutboxRelay
from broker.parked import ParkedRetry
from broker.pki import Identity, KeyStore
from broker.progress import Heartbeats
from broker.pruning import run_pruner
from broker.revocation import trust_store
from broker.settings import Settings
from broker.supervision import AgentFailed, ConnectionLost, is_infrastructure, supervise
from broker.topology import Names
from broker.trust import TrustStore
from schemas.catalogue import Message
from schemas.identity import Role

log = logs.get("kabuto.runtime")
T = TypeVar("T")
E = TypeVar("E", bound=BaseException)
Background = Callable[["AgentRuntime"], Coroutine[Any, Any, None]]
# Tasks that mark themselves running once connected; the others (scheduled jobs) run from each start.
REPORT_THEMSELVES = frozenset({"consumer", "relay", "inbox-pruner"})


@dataclass(frozen=True, slots=True)
class AgentDefinition:
    """What an agent package contributes: its id, role, handlers and background tasks."""

    id: str
    role: Role
    handlers: Mapping[type[Message], Handler] = field(default_factory=dict)
    background: Sequence[Background] = ()
    # Several institutions in one agent (the credit agent hosts the card issuer and the line).
    participants: tuple[str, ...] = ()
    # Kept across the handlers of a group-committed batch (broker.group_commit.BatchScope).
    batch_scope: BatchScope = no_scope

    def participant_ids(self, settings: Settings) -> tuple[str, ...]:
        """The participants this agent hosts: the investors' wallets, its named institutions,
        or the agent itself."""
        if self.role is Role.INVESTOR:
            return settings.investors
        return self.participants or (self.id,)


class AgentRuntime:
    def __init__(
        self,
        definition: AgentDefinition,
        settings: Settings,
        *,
        keys: KeyStore | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.definition = definition
        self.settings = settings
        self.names = Names(settings.namespace)
        self.keys = keys or KeyStore(settings.key_dir)
        self.clock = clock
        self.outcomes = Outcomes()
        self.ready = asyncio.Event()
        self.finished = asyncio.Event()  # set when ``run`` ends, for whatever reason
        self.heartbeats = Heartbeats()
        self._stack = AsyncExitStack()
        self.identities: dict[str, Identity] = {}
        self.trust: TrustStore
        self.pool: asyncpg.Pool
        self.urls: AgentUrls
        self.link: BrokerLink
        self.consumer: Consumer
        self.relay: OutboxRelay

    @property
    def id(self) -> str:
        return self.definition.id

    async def __aenter__(self) -> AgentRuntime:
        try:
            await self._open()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    async def _open(self) -> None:
        settings = self.settings
        self.identities = {pid: self.keys.load_identity(pid) for pid in self.definition.participant_ids(settings)}
        self.trust = trust = trust_store(self.keys)
        self.urls = urls = agent_urls(settings, self.id)  # its own logins, with KABUTO_AGENT_CREDENTIALS=1
        pool = agent_pool(urls.database, self.id, on_connect=metrics.counting(self.id, settings.statement_census))
        self.pool = await self._stack.enter_async_context(pool)
        self.link = BrokerLink(self._open_session)
        self._stack.push_async_callback(self.link.close)
        exchanges = (await self.link.current()).exchanges
        bundling = Bundling(settings.outbox_bundle, settings.max_message_bytes // 2, frozenset(settings.investors))
        self.consumer = Consumer(
            agent=self.id,
            pool=self.pool,
            trust=trust,
            identities=self.identities,
            handlers=self.definition.handlers,
            exchanges=exchanges,
            names=self.names,
            freshness=Freshness(settings.max_message_age, settings.max_clock_skew),
            retry_delays_ms=settings.retry_delays_ms,
            outcomes=self.outcomes,
            batch_size=settings.batch_size,
            clock=self.clock,
            beat=self.heartbeats.beat("consumer"),
            max_message_bytes=settings.max_message_bytes,
            clear_accounts_until=settings.clear_accounts_until,
            batch_scope=self.definition.batch_scope,
            packing=bundling if settings.outbox_pack else None,
        )
        self.relay = OutboxRelay(
            self.id,
            self.pool,
            exchanges,
            urls.database,
            settings.outbox_batch,
            settings.outbox_idle_poll,
            bundling=bundling,
            sealers={identity.fingerprint: identity for identity in self.identities.values()},
            beat=self.heartbeats.beat("relay"),
        )

    async def _open_session(self) -> BrokerSession:
        """Connect, take the agent's lease (one instance at a time), declare the topology on a
        confirming channel, wait until every queue answers."""
        connection = await connect(
            self.urls.amqp,
            timeout=10,
            client_properties={"connection_name": f"{self.settings.namespace}-{self.id}"},
            **instance.heartbeat_of(self.urls.amqp),
        )
        try:
            await instance.take(connection, self.names, self.id, self.settings.instance_wait.total_seconds())
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            await channel.set_qos(prefetch_count=self.settings.prefetch)
            exchanges = await topology.declare_exchanges(channel, self.names)
            inbox = await topology.declare_agent(
                channel,
                self.names,
                exchanges,
                self.id,
                self.identities,
                retry_delays_ms=self.settings.retry_delays_ms,
                delivery_limit=self.settings.delivery_limit,
            )
            await topology.check_ready(connection, self.queue_names())
            answers_channel = await connection.channel(publisher_confirms=False)
            await answers_channel.set_qos(prefetch_count=self.settings.prefetch)
            answers = await answers_channel.get_queue(self.names.answers(self.id), ensure=True)
        except RuntimeError as exc:  # aiormq's way of saying the connection closed under us
            await asyncio.shield(close_within(connection))
            if connection.is_closed:
                raise ConnectionLost(f"the broker closed the connection while it was opened: {exc}") from exc
            raise
        except BaseException:
            await asyncio.shield(close_within(connection))
            raise
        return BrokerSession(connection, channel, exchanges, inbox, answers)

    @property
    def connection(self) -> AbstractConnection:
        """The live broker connection (for samplers); ``ConnectionLost`` while there is none."""
        session = self.link.live
        if session is None:
            raise ConnectionLost("no live broker session")
        return session.connection

    def queue_names(self) -> list[str]:
        return [*topology.agent_queues(self.names, self.id, self.settings.retry_delays_ms), self.names.journal]

    async def run(self) -> None:
        """Consume, relay and run background tasks, each supervised, until cancelled.

        Raises ``AgentFailed`` when a task met a failure it cannot recover from.
        """
        try:
            async with asyncio.TaskGroup() as tasks:
                for name, body in self._tasks():
                    beat = self.heartbeats.beat(name)
                    reports = name in REPORT_THEMSELVES
                    tasks.create_task(supervise(beat, body, reports_itself=reports), name=f"{self.id}-{name}")
                self.ready.set()
                log.info("agent_started", agent=self.id, participants=sorted(self.identities))
        except BaseExceptionGroup as group:
            failed = group.subgroup(AgentFailed)
            if failed is None:
                raise
            log.critical("agent_failed", agent=self.id, error=str(failed.exceptions[0]), action="exiting")
            raise _first(failed) from None
        finally:
            await self._record_stopped()
            self.finished.set()

    def _tasks(self) -> list[tuple[str, Callable[[], Awaitable[None]]]]:
        settings = self.settings
        # Named for its first job; it prunes the outbox too. Renaming it would leave the old name
        # stopped in runtime_tasks wherever an agent of the last version stops after the upgrade.
        prune_beat = self.heartbeats.beat("inbox-pruner")
        horizon, retention = settings.inbox_horizon, settings.outbox_retention
        return [
            ("heartbeat", lambda: self.heartbeats.run(self.pool, settings.heartbeat_interval)),
            ("relay", self._relay_session),
            ("parked-retry", self._parked_retry_session),
            (
                "inbox-pruner",
                lambda: run_pruner(self.pool, horizon, retention, settings.inbox_prune_interval, prune_beat),
            ),
            *((job.__name__, functools.partial(job, self)) for job in self.definition.background),
            ("consumer", self._consumer_session),
        ]

    async def _consumer_session(self) -> None:
        session = await self.link.current()
        self.consumer.exchanges = session.exchanges
        async with closed_means_lost(session):
            await self.consumer.run(session.answers, session.inbox)

    async def _relay_session(self) -> None:
        session = await self.link.current()
        self.relay.exchanges = session.exchanges
        async with closed_means_lost(session):
            await self.relay.run()

    async def _parked_retry_session(self) -> None:
        """Sends parked replies again once their recipient has a queue (broker/parked.py)."""
        session = await self.link.current()
        interval = self.settings.parked_retry_interval
        retry = ParkedRetry(
            self.id, self.pool, session.exchanges, interval, self.heartbeats.beat("parked-retry"), self.relay.parked
        )
        async with closed_means_lost(session):
            await retry.run()

    async def _record_stopped(self) -> None:
        for beat in self.heartbeats.beats.values():
            if beat.state.value != "failed":
                beat.stopped()
        try:
            async with asyncio.timeout(2):
                await asyncio.shield(self.heartbeats.write(self.pool))
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("stopped_state_not_recorded", agent=self.id, error=repr(exc))

    @asynccontextmanager
    async def round_of(self, job: Background) -> AsyncIterator[None]:
        """One round of the background ``job`` (its task is named after it): see ``TaskBeat.round``.

        It starts once the agent has a broker session, which holds its lease (broker.instance):
        a job runs its rounds only while this instance is the one running, so an instance cut
        off from the broker, which another may have replaced meanwhile, runs no job beside it
        once its client knows the session is gone (docs/resilience.md: a connection half-open
        on both sides is known gone up to half a minute after the broker dropped it).
        While the broker is away the round's wait fails as the outage it is, and the job's
        supervisor waits it out; a lease another instance keeps past the wait stops the agent."""
        beat = self.heartbeats.beat(job.__name__)
        if self.link.live is None:  # health says what the job waits for, as for the consumer
            beat.waiting("for a broker session, which holds the agent's lease")
        await self.link.current()
        with beat.round():
            yield

    async def command(self, user_id: str, action: Callable[[Context], Awaitable[T]]) -> T:
        """Run a local command as a hosted participant: one transaction, emits via the outbox."""
        identity = self.identities.get(user_id)
        if identity is None:
            raise KeyError(f"{user_id} is not hosted by the {self.id} agent")
        return await execute(self.pool, identity, self.trust, action, self.clock())

    async def query(self, action: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        async with self.pool.acquire() as connection:
            return await action(connection)


async def execute(
    pool: asyncpg.Pool,
    identity: Identity,
    trust: TrustStore,
    action: Callable[[Context], Awaitable[T]],
    now: datetime,
) -> T:
    """Run ``action`` in one transaction and store what it emitted in the agent's outbox.

    Needs no broker: the running agent's relay is woken by the commit and publishes.
    """
    async with pool.acquire() as connection, connection.transaction():
        context = Context(connection, identity, trust, now)
        result = await action(context)
        await outbox.store(connection, context.emitted)
    return result


async def run_as(settings: Settings, agent: str, user_id: str, action: Callable[[Context], Awaitable[T]]) -> T:
    """Run one command as a participant of ``agent``, outside a running agent (the CLI's way)."""
    keys = KeyStore(settings.key_dir)
    identity = keys.load_identity(user_id)
    trust = trust_store(keys)
    async with agent_pool(agent_urls(settings, agent).database, agent, max_size=1) as pool:
        return await execute(pool, identity, trust, action, datetime.now(UTC))


@asynccontextmanager
async def running(runtime: AgentRuntime) -> AsyncIterator[AgentRuntime]:
    """Run an opened runtime in the background for the body of the block, then stop it."""
    task = asyncio.create_task(runtime.run(), name=f"{runtime.id}-run")
    ready = asyncio.create_task(runtime.ready.wait())
    await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        ready.cancel()
        task.result()  # raises why it stopped
    try:
        yield runtime
    finally:
        task.cancel()
        # Waited for, not awaited: awaiting it and swallowing CancelledError also swallowed a
        # cancellation of the caller (its own timeout), so a stop that hung could not be cut short.
        await asyncio.wait({task})
        if not task.cancelled():
            task.result()  # raises why it stopped


@asynccontextmanager
async def started(
    definitions: Sequence[AgentDefinition], settings: Settings, **options: Any
) -> AsyncIterator[dict[str, AgentRuntime]]:
    """Open and run several agents for the body of the block; stop and close them after.

    The first agent opens alone: it declares the namespace's shared exchanges and its journal, a
    stream queue that several connections should not race to declare. The others then open
    together, since an opening waits on the broker and the database rather than the CPU: five
    agents in a new namespace took 0.51 s one after another and 0.35 s together.
    """
    async with AsyncExitStack() as stack:
        opening = [AgentRuntime(d, settings, **options) for d in definitions]
        await _enter_together(stack, opening[:1])
        await _enter_together(stack, opening[1:])
        runtimes = {runtime.id: runtime for runtime in opening}
        for runtime in runtimes.values():
            await stack.enter_async_context(running(runtime))
        yield runtimes


async def _enter_together(stack: AsyncExitStack, runtimes: Sequence[AgentRuntime]) -> None:
    """Enter every runtime at once; ``stack`` exits each that opened. When one fails to open, the
    others are cancelled (each closes what it had opened) and its own error is raised, with its own
    cause, not a group: callers tell ``InstanceHeld`` or a ``TopologyError`` apart by type.

    The group runs in a task of its own: a TaskGroup whose child fails cancels its parent task and,
    on Python 3.11, leaves it marked as cancelling. Run in the caller's task, a Ctrl-C while the
    opened agents closed then ended in a CancelledError rather than exit 130 (found by review).
    """
    opened: list[AgentRuntime] = []

    async def enter(runtime: AgentRuntime) -> None:
        await runtime.__aenter__()
        opened.append(runtime)

    async def enter_all() -> None:
        async with asyncio.TaskGroup() as group:
            for runtime in runtimes:
                group.create_task(enter(runtime), name=f"{runtime.id}-open")

    entering = asyncio.create_task(enter_all())
    try:
        await asyncio.wait({entering})
    except asyncio.CancelledError:  # the caller stopping: the openings stop, and what opened closes
        entering.cancel()
        await asyncio.wait({entering})
        raise
    finally:
        for runtime in opened:
            stack.push_async_exit(runtime)
    if entering.cancelled():  # not by the caller (above); nothing else holds it, but never half opened
        raise asyncio.CancelledError
    failure = entering.exception()
    if failure is not None:
        raise _first(failure) if isinstance(failure, BaseExceptionGroup) else failure


async def serve(definitions: Sequence[AgentDefinition], settings: Settings, stop: asyncio.Event) -> None:
    """Run agents in this process until ``stop`` is set (SIGINT/SIGTERM at the CLI).

    Returns early, raising ``AgentFailed``, when an agent met a failure it cannot recover from.
    """
    port = metrics.port_for(settings.metrics_port, [d.id for d in definitions])
    interval = settings.metrics_interval
    async with (
        started(definitions, settings) as runtimes,
        metrics.exported(runtimes.values(), settings.metrics_address, port, interval),
    ):
        waits: list[asyncio.Future[Any]] = [asyncio.ensure_future(stop.wait())]
        waits += [asyncio.ensure_future(r.finished.wait()) for r in runtimes.values()]
        # Ready means consuming: the broker knows every agent's consumer on its inbox and answers queue.
        consuming: asyncio.Future[Any] = asyncio.gather(*(r.consumer.consuming.wait() for r in runtimes.values()))
        try:
            await asyncio.wait([consuming, *waits], return_when=asyncio.FIRST_COMPLETED)
            if consuming.done():
                event_loop.settle_heap()
                log.info("agents_ready", agents=list(runtimes))
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in [consuming, *waits]:
                event_loop.abandon(wait)  # ``consuming`` is a gather: stopped before ready, it held an error
        log.info("agents_stopping")


@asynccontextmanager
async def closed_means_lost(session: BrokerSession) -> AsyncIterator[None]:
    """Whatever a task raised because its broker session closed is the outage, not a defect.

    aiormq raises a bare ``RuntimeError`` for a channel asked of a closed connection, and fails
    the publisher confirmations pending on a closed channel with whatever the close carried — a
    bare ``Exception()`` when the connection dropped without a reason (seen in ``make chaos``:
    the exchange's relay exited instead of reconnecting).
    """
    try:
        yield
    except Exception as exc:
        if session.is_closed and not is_infrastructure(exc):
            raise ConnectionLost(f"the broker session closed: {type(exc).__name__}: {exc}") from exc
        raise


def _first(group: BaseExceptionGroup[E]) -> E:
    """The first failure of a group, however deeply it is nested."""
    first = group.exceptions[0]
    return _first(first) if isinstance(first, BaseExceptionGroup) else first
