"""External participants: who is hosted by an agent, and the reply queue of one that is not.

An agent hosts its own participant id (and the investor agent the wallets of
``KABUTO_INVESTORS``); their messages reach the agent's inbox. Any other enrolled
participant — a broker front end, a trading program — is external: it receives the messages
addressed to it on its own reply queue ``<ns>.participant.<id>``, a durable quorum queue
bound to ``<ns>.messages`` with its id as routing key. ``kabuto ca enrol`` declares it (and
makes the participant's broker user, which may read this queue and nothing else); the client
library (``kabuto_client``) finds it when it connects, and declares it only if it is missing
and its login may (an administrator's, in development).
"""

from __future__ import annotations

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue, ExchangeType

from broker import link
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


async def open_reply_queue(
    connection: aio_pika.abc.AbstractConnection, names: Names, participant_id: str, prefetch: int
) -> AbstractQueue:
    """The participant's reply queue, found without declaring it (a participant's own login may
    not declare: ``broker.access``); declared on a fresh channel if it does not exist yet."""
    channel = await connection.channel()
    try:
        queue = await channel.get_queue(reply_queue_name(names, participant_id), ensure=True)
    except aio_pika.exceptions.ChannelNotFoundEntity:
        channel = await connection.channel()  # the failed passive declare closed the first one
        queue = await declare_reply_queue(channel, names, participant_id)
    await channel.set_qos(prefetch_count=prefetch)
    return queue


async def open_messages_exchange(connection: aio_pika.abc.AbstractConnection, names: Names) -> AbstractExchange:
    """The messages exchange on a confirming channel, found without declaring it when it exists."""
    channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
    try:
        return await channel.get_exchange(names.messages, ensure=True)
    except aio_pika.exceptions.ChannelNotFoundEntity:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        return await channel.declare_exchange(names.messages, ExchangeType.DIRECT, durable=True)


async def ensure_reply_queue(settings: Settings, participant_id: str) -> str:
    """Declare an external participant's reply queue on the broker; returns its name."""
    names = Names(settings.namespace)
    connection = await link.connect(settings.amqp_url, timeout=10)
    try:
        channel = await connection.channel()
        queue = await declare_reply_queue(channel, names, participant_id)
        return queue.name
    finally:
        await connection.close()
