"""Answers ahead of new work (issue 8): an agent consumes its answers queue before its inbox.

Under overload the exchange's inbox holds thousands of new orders; a cover decision that
arrived behind them used to wait for all of them, so acceptances stopped while orders poured
in. Answers (``MessageSpec.answer``) now travel to ``ns.<agent>.answers``, which the consumer
takes first, so a decision waits at most for the batch in hand.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import aio_pika

from broker import outbox
from broker.envelope import Sealed, seal
from broker.pki import KeyStore
from broker.settings import Settings
from broker.topology import Names
from schemas.dvp import CoverGranted
from schemas.trading import OrderStatusRequest
from tests import support

BACKLOG = 150


async def _publish_all(settings: Settings, messages: list[Sealed]) -> None:
    connection = await aio_pika.connect(settings.amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        exchange = await channel.get_exchange(Names(settings.namespace).messages)
        for sealed in messages:
            body = aio_pika.Message(
                sealed.body, headers=dict(sealed.headers), message_id=str(sealed.envelope.message_id)
            )
            await exchange.publish(body, routing_key=outbox.routing_key(sealed.envelope), mandatory=True)
    finally:
        await connection.close()


async def test_an_answer_is_taken_ahead_of_the_inbox_backlog(settings: Settings, keys: KeyStore) -> None:
    async with support.agents(settings, "exchange"):
        pass  # the topology is declared; nothing consumes while the backlog is published
    now = datetime.now(UTC)
    alice, settlement = keys.load_identity("alice"), keys.load_identity("settlement")
    backlog = [
        seal(alice, OrderStatusRequest(acceptance_number=n), recipient="exchange", now=now)
        for n in range(1, BACKLOG + 1)
    ]
    grant = seal(settlement, CoverGranted(cover_id=uuid.uuid4(), amount=1), recipient="exchange", now=now)
    assert outbox.routing_key(grant.envelope) == "exchange.answers"
    assert outbox.routing_key(backlog[0].envelope) == "exchange"
    await _publish_all(settings, [*backlog, grant])  # the answer last, behind the whole backlog

    async with support.agents(settings, "exchange") as rt:
        settled = await rt["exchange"].outcomes.wait_count(lambda s: True, BACKLOG + 1, timeout=60)
    order = [s.message_id for s in settled]
    assert sorted(order) == sorted(str(m.envelope.message_id) for m in [*backlog, grant])
    # In one queue it would come last (position BACKLOG); taken first, it waits at most for
    # the deliveries the broker pushed before it (one prefetch window).
    assert order.index(str(grant.envelope.message_id)) < settings.prefetch, order.index(str(grant.envelope.message_id))
