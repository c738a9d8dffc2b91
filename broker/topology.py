"""The RabbitMQ topology, declared in one place, idempotently, and checked before traffic.

Per namespace ``ns`` (``kabuto`` by default):

* ``ns.messages`` (direct): point-to-point messages, routed by recipient participant id to
  the quorum queue ``ns.<agent>`` of the agent that hosts the recipient — or, for an answer
  (``MessageSpec.answer``: a cover granted, securities reserved), under ``<id>.answers`` to the
  agent's answers queue ``ns.<agent>.answers``, which it consumes ahead of its inbox, so work
  under way is finished before new work is taken (under overload a grant does not wait
  behind every order submitted since its request).
* ``ns.events`` (topic): events for integrators, routed by message type
  (``certificate.issuance.completed`` …); the stream ``ns.events.journal`` keeps every event
  so an integrator can replay history, and makes every event routable.
* ``ns.retry`` (direct): delay queues ``ns.<agent>.retry.<ms>`` whose expired messages
  dead-letter back to ``ns.messages`` under the routing key ``<agent>.retry``.
* ``ns.dead`` (direct): the dead-letter queue ``ns.<agent>.dead`` of each agent. The runtime
  publishes its own dead letters with a reason header; the broker dead-letters a delivery
  that exceeded the quorum queue's delivery limit, with its reason in ``x-death``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue, ExchangeType
from pamqp.common import FieldTable

from broker.errors import KabutoError
from broker.progress import stopping
from broker.settings import AGENT_IDS
from schemas.identity import CARD_ISSUER_ID

ANSWERS_SUFFIX = ".answers"
# Participants an agent hosts besides itself (and the investors the investor agent hosts, which
# are configured, not fixed): the credit agent hosts the card issuer (broker.pki).
HOSTED_BY_AGENT = {CARD_ISSUER_ID: "credit"}


class TopologyError(KabutoError):
    """The broker's topology is missing, conflicting or not ready."""


@dataclass(frozen=True, slots=True)
class Names:
    namespace: str

    @property
    def messages(self) -> str:
        return f"{self.namespace}.messages"

    @property
    def events(self) -> str:
        return f"{self.namespace}.events"

    @property
    def journal(self) -> str:
        return f"{self.namespace}.events.journal"

    @property
    def retry(self) -> str:
        return f"{self.namespace}.retry"

    @property
    def dead(self) -> str:
        return f"{self.namespace}.dead"

    def inbox(self, agent: str) -> str:
        return f"{self.namespace}.{agent}"

    def answers(self, agent: str) -> str:
        return f"{self.namespace}.{agent}.answers"

    def dead_letters(self, agent: str) -> str:
        return f"{self.namespace}.{agent}.dead"

    def delay(self, agent: str, delay_ms: int) -> str:
        return f"{self.namespace}.{agent}.retry.{delay_ms}"

    def instance(self, agent: str) -> str:
        """The exclusive queue a running instance of ``agent`` holds as its lease (broker.instance)."""
        return f"{self.namespace}.{agent}.instance"

    @staticmethod
    def retry_key(agent: str) -> str:
        return f"{agent}.retry"

    @staticmethod
    def answers_key(participant_id: str) -> str:
        """Participant ids have no dots, so this never names a participant."""
        return f"{participant_id}{ANSWERS_SUFFIX}"

    @staticmethod
    def is_answers_key(routing_key: str | None) -> bool:
        return bool(routing_key and routing_key.endswith(ANSWERS_SUFFIX))

    @staticmethod
    def agent_of_key(routing_key: str) -> str | None:
        """The Kabuto agent a message routing key addresses (its inbox or its answers), if any;
        not an investor's, which depend on the installation (``KABUTO_INVESTORS``)."""
        participant = routing_key.removesuffix(ANSWERS_SUFFIX)
        return participant if participant in AGENT_IDS else HOSTED_BY_AGENT.get(participant)

    @staticmethod
    def delay_key(agent: str, delay_ms: int) -> str:
        return f"{agent}.{delay_ms}"


@dataclass(frozen=True, slots=True)
class Exchanges:
    messages: AbstractExchange
    events: AbstractExchange
    retry: AbstractExchange
    dead: AbstractExchange
    # The channel they were declared on, which the relay publishes on (broker.relay_window).
    channel: AbstractChannel


async def declare_exchanges(channel: AbstractChannel, names: Names) -> Exchanges:
    """The shared exchanges and the events journal; every agent declares them the same way."""
    messages = await channel.declare_exchange(names.messages, ExchangeType.DIRECT, durable=True)
    events = await channel.declare_exchange(names.events, ExchangeType.TOPIC, durable=True)
    retry = await channel.declare_exchange(names.retry, ExchangeType.DIRECT, durable=True)
    dead = await channel.declare_exchange(names.dead, ExchangeType.DIRECT, durable=True)
    journal = await channel.declare_queue(
        names.journal,
        durable=True,
        arguments={"x-queue-type": "stream", "x-max-age": "30D"},
    )
    await journal.bind(events, routing_key="#")
    return Exchanges(messages, events, retry, dead, channel)


async def declare_agent(
    channel: AbstractChannel,
    names: Names,
    exchanges: Exchanges,
    agent: str,
    participant_ids: Iterable[str],
    *,
    retry_delays_ms: Iterable[int],
    delivery_limit: int,
) -> AbstractQueue:
    """An agent's inbox, its answers queue, its retry delays and its dead-letter queue; returns
    the inbox (the answers queue is consumed on a channel of its own: ``AgentRuntime``)."""
    consumed: FieldTable = {
        "x-queue-type": "quorum",
        "x-delivery-limit": delivery_limit,
        "x-dead-letter-exchange": names.dead,
        "x-dead-letter-routing-key": agent,
    }
    inbox = await channel.declare_queue(names.inbox(agent), durable=True, arguments=consumed)
    answers = await channel.declare_queue(names.answers(agent), durable=True, arguments=consumed)
    for participant_id in participant_ids:
        await inbox.bind(exchanges.messages, routing_key=participant_id)
        await answers.bind(exchanges.messages, routing_key=names.answers_key(participant_id))
    # A retried answer comes back through the inbox: its delay is its wait already.
    await inbox.bind(exchanges.messages, routing_key=names.retry_key(agent))
    for delay_ms in retry_delays_ms:
        delay = await channel.declare_queue(
            names.delay(agent, delay_ms),
            durable=True,
            arguments={
                "x-queue-type": "quorum",
                "x-message-ttl": delay_ms,
                "x-dead-letter-exchange": names.messages,
                "x-dead-letter-routing-key": names.retry_key(agent),
            },
        )
        await delay.bind(exchanges.retry, routing_key=names.delay_key(agent, delay_ms))
    dead = await channel.declare_queue(names.dead_letters(agent), durable=True, arguments={"x-queue-type": "quorum"})
    await dead.bind(exchanges.dead, routing_key=agent)
    return inbox


def agent_queues(names: Names, agent: str, retry_delays_ms: Iterable[int]) -> list[str]:
    """Every queue ``declare_agent`` declares for ``agent``."""
    return [
        names.inbox(agent),
        names.answers(agent),
        names.dead_letters(agent),
        *(names.delay(agent, d) for d in retry_delays_ms),
    ]


async def delete_namespace(
    channel: AbstractChannel, names: Names, agents: Iterable[str], retry_delays_ms: Iterable[int]
) -> None:
    """Every queue and exchange of a namespace (a test's or a benchmark stage's), with its messages."""
    delays = tuple(retry_delays_ms)
    for agent in agents:
        for queue in agent_queues(names, agent, delays):
            await channel.queue_delete(queue)
    await channel.queue_delete(names.journal)
    for exchange in (names.messages, names.events, names.retry, names.dead):
        await channel.exchange_delete(exchange)


async def check_ready(
    connection: aio_pika.abc.AbstractConnection,
    queue_names: Iterable[str],
    *,
    timeout: float = 30.0,
    missing_ok: bool = False,
) -> dict[str, tuple[int, int]]:
    """Passively declare each queue until all answer: a queue being declared, or on a broker that
    is starting, refuses or times out the declaration for a while. A quorum queue whose leader does
    not answer reads (0, 0) rather than failing (docs/resilience.md): a missing leader shows when
    the agent consumes, not here.

    Returns each queue's (messages, consumers). Raises ``TopologyError`` past the deadline.
    ``missing_ok``: a queue the broker does not have (404) is left out at once, not waited for —
    an operator's look at agents that never started (``kabuto status`` waited 2 s a queue).
    """
    pending = list(queue_names)
    found: dict[str, tuple[int, int]] = {}
    try:
        async with asyncio.timeout(timeout):
            while pending:
                name = pending[0]
                try:
                    found[name] = await inspect_queue(connection, name)
                    pending.pop(0)
                except (TimeoutError, aiormq.exceptions.AMQPError) as exc:
                    if missing_ok and isinstance(exc, aiormq.exceptions.ChannelNotFoundEntity):
                        pending.pop(0)  # not declared: left out, not waited for
                        continue
                    if stopping():  # the deadline's own cancel, or a stop: not the broker's delay
                        raise asyncio.CancelledError from exc
                    await asyncio.sleep(0.25)  # the broker is not ready to answer for the queue yet
    except TimeoutError as exc:
        raise TopologyError(f"queues not ready after {timeout}s: {', '.join(pending)}") from exc
    return found


async def inspect_queue(connection: aio_pika.abc.AbstractConnection, name: str) -> tuple[int, int]:
    """(messages ready, consumers) of a queue, by passive declaration; a queue the broker does not
    have raises ``ChannelNotFoundEntity``. A quorum queue whose leader is slow to answer reads
    (0, 0) (docs/resilience.md)."""
    # A passive declare of a missing queue closes the channel, so each look gets its own.
    async with connection.channel(publisher_confirms=False) as channel:
        async with asyncio.timeout(5):
            queue = await channel.declare_queue(name, passive=True)
        result = queue.declaration_result
        return int(result.message_count or 0), int(result.consumer_count or 0)
