"""External participants: who is hosted by an agent, and the reply queue of one that is not.

An agent hosts its own participant id (and the investor agent the wallets of
``KABUTO_INVESTORS``); their messages reach the agent's inbox. Any other enrolled
participant — a broker front end, a trading program — is external: it receives the messages
addressed to it on its own reply queue ``<ns>.participant.<id>``, a durable quorum queue
bound to ``<ns>.messages`` with its id as routing key. ``kabuto ca enrol`` declares it; the
client library (``kabuto_client``) declares it again, idempotently, when it connects.
"""

from __future__ import annotations

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractQueue, ExchangeType

from broker.settings import AGENT_IDS, Settings
from broker.topology import Names


def reply_queue_name(names: Names, participant_id: str) -> str:
    return f"{names.namespace}.participant.{participant_id}"


def is_external(settings: Settings, participant_id: str) -> bool:
    return participant_id not in AGENT_IDS and participant_id not in settings.investors


async def declare_reply_queue(channel: AbstractChannel, names: Names, participant_id: str) -> AbstractQueue:
    """The participant's reply queue, bound to the messages exchange by its id (idempotent)."""
    messages = await channel.declare_exchange(names.messages, ExchangeType.DIRECT, durable=True)
    queue = await channel.declare_queue(
        reply_queue_name(names, participant_id), durable=True, arguments={"x-queue-type": "quorum"}
    )
    await queue.bind(messages, routing_key=participant_id)
    return queue


async def ensure_reply_queue(settings: Settings, participant_id: str) -> str:
    """Declare an external participant's reply queue on the broker; returns its name."""
    names = Names(settings.namespace)
    connection = await aio_pika.connect(settings.amqp_url, timeout=10)
    try:
        channel = await connection.channel()
        queue = await declare_reply_queue(channel, names, participant_id)
        return queue.name
    finally:
        await connection.close()
