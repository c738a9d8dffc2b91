"""The agent runtime: one lifespan that owns every resource an agent uses.

``AgentRuntime`` opens the agent's database pool and broker connection, declares its
topology and checks it is ready, then runs the consumer, the outbox relay and the agent's
background tasks until asked to stop. Stopping cancels the consumer first (a delivery in
flight is finished and acked), then the relay, then closes the connections; anything not
acked is redelivered, anything committed but not published is published on the next start.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import aio_pika
import asyncpg
from aio_pika.abc import AbstractQueue, AbstractRobustConnection

from broker import logs, outbox, topology
from broker.access import agent_urls
from broker.consumer import Consumer, Handler, Outcomes
from broker.context import Context
from broker.db import agent_pool
from broker.envelope import Freshness
from broker.outbox import OutboxRelay
from broker.pki import Identity, KeyStore
from broker.revocation import trust_store
from broker.settings import Settings
from broker.topology import Names
from broker.trust import TrustStore
from schemas.catalogue import Message
from schemas.identity import Role

log = logs.get("kabuto.runtime")
T = TypeVar("T")
Background = Callable[["AgentRuntime"], Coroutine[Any, Any, None]]


@dataclass(frozen=True, slots=True)
class AgentDefinition:
    """What an agent package contributes: its id, role, handlers and background tasks."""

    id: str
    role: Role
    handlers: Mapping[type[Message], Handler] = field(default_factory=dict)
    background: Sequence[Background] = ()

    def participant_ids(self, settings: Settings) -> tuple[str, ...]:
        """The participants this agent hosts: the investors' wallets, or the agent itself."""
        return settings.investors if self.role is Role.INVESTOR else (self.id,)


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
        self._stack = AsyncExitStack()
        self.identities: dict[str, Identity] = {}
        self.trust: TrustStore
        self.pool: asyncpg.Pool
        self.connection: AbstractRobustConnection
        self.consumer: Consumer
        self.relay: OutboxRelay
        self.inbox: AbstractQueue

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
        urls = agent_urls(settings, self.id)  # its own logins, with KABUTO_AGENT_CREDENTIALS=1
        self.pool = await self._stack.enter_async_context(agent_pool(urls.database, self.id))
        self.connection = await aio_pika.connect_robust(
            urls.amqp, client_properties={"connection_name": f"kabuto-{self.id}"}
        )
        self._stack.push_async_callback(self.connection.close)
        exchanges = await self._declare()
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
            clock=self.clock,
            max_message_bytes=settings.max_message_bytes,
        )
        self.relay = OutboxRelay(
            self.id,
            self.pool,
            exchanges,
            urls.database,
            settings.outbox_batch,
            settings.outbox_idle_poll,
        )

    async def _declare(self) -> topology.Exchanges:
        """Declare the topology on a confirming channel, then wait until every queue answers."""
        channel = await self.connection.channel(publisher_confirms=True, on_return_raises=True)
        await channel.set_qos(prefetch_count=self.settings.prefetch)
        exchanges = await topology.declare_exchanges(channel, self.names)
        self.inbox = await topology.declare_agent(
            channel,
            self.names,
            exchanges,
            self.id,
            self.identities,
            retry_delays_ms=self.settings.retry_delays_ms,
            delivery_limit=self.settings.delivery_limit,
        )
        await topology.check_ready(self.connection, self.queue_names())
        return exchanges

    def queue_names(self) -> list[str]:
        return [
            self.names.inbox(self.id),
            self.names.dead_letters(self.id),
            self.names.journal,
            *(self.names.delay(self.id, d) for d in self.settings.retry_delays_ms),
        ]

    async def run(self) -> None:
        """Consume, relay and run background tasks until cancelled."""
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self.relay.run(), name=f"{self.id}-relay")
            for job in self.definition.background:
                tasks.create_task(job(self), name=f"{self.id}-{job.__name__}")
            consumer = tasks.create_task(self.consumer.run(self.inbox), name=f"{self.id}-consumer")
            self.ready.set()
            log.info("agent_started", agent=self.id, participants=sorted(self.identities))
            await consumer

    async def command(self, user_id: str, action: Callable[[Context], Awaitable[T]]) -> T:
        """Run a local command as a hosted participant: one transaction, emits via the outbox."""
        identity = self.identities.get(user_id)
        if identity is None:
            raise KeyError(f"{user_id} is not hosted by the {self.id} agent")
        return await execute(self.pool, self.id, identity, self.trust, action, self.clock())

    async def query(self, action: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        async with self.pool.acquire() as connection:
            return await action(connection)


async def execute(
    pool: asyncpg.Pool,
    agent: str,
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
        await outbox.store(connection, agent, context.emitted)
    return result


async def run_as(settings: Settings, agent: str, user_id: str, action: Callable[[Context], Awaitable[T]]) -> T:
    """Run one command as a participant of ``agent``, outside a running agent (the CLI's way)."""
    keys = KeyStore(settings.key_dir)
    identity = keys.load_identity(user_id)
    trust = trust_store(keys)
    async with agent_pool(agent_urls(settings, agent).database, agent, max_size=1) as pool:
        return await execute(pool, agent, identity, trust, action, datetime.now(UTC))


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
        try:
            await task
        except asyncio.CancelledError:
            pass


@asynccontextmanager
async def started(
    definitions: Sequence[AgentDefinition], settings: Settings, **options: Any
) -> AsyncIterator[dict[str, AgentRuntime]]:
    """Open and run several agents for the body of the block; stop and close them after."""
    async with AsyncExitStack() as stack:
        runtimes = {d.id: await stack.enter_async_context(AgentRuntime(d, settings, **options)) for d in definitions}
        for runtime in runtimes.values():
            await stack.enter_async_context(running(runtime))
        yield runtimes


async def serve(definitions: Sequence[AgentDefinition], settings: Settings, stop: asyncio.Event) -> None:
    """Run agents in this process until ``stop`` is set (SIGINT/SIGTERM at the CLI)."""
    async with started(definitions, settings) as runtimes:
        log.info("agents_ready", agents=list(runtimes))
        await stop.wait()
        log.info("agents_stopping")
