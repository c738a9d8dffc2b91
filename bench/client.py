"""An external participant, as any client on the network: signs messages with its own enrolled
identity, publishes them to the exchange, and receives what is sent back to it on a queue of
its own (bound to its participant ids), noting when each reply arrived."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

import aio_pika
from aio_pika.abc import AbstractExchange, AbstractIncomingMessage, AbstractRobustConnection

from broker import outbox
from broker.envelope import Sealed, seal
from broker.pki import Identity
from broker.sealed_box import seal_account
from broker.topology import Names
from broker.trust import TrustStore
from schemas.dvp import OpenStandingCover
from schemas.identity import EXCHANGE_ID
from schemas.trading import OrderTerms, OrderType, Side, SubmitOrder, TimeInForce


@dataclass
class Client:
    connection: AbstractRobustConnection
    exchange: AbstractExchange
    received: Counter[str] = field(default_factory=Counter)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def publish(self, sealed: Sealed) -> None:
        message = aio_pika.Message(
            sealed.body,
            headers=dict(sealed.headers),
            message_id=str(sealed.envelope.message_id),
            type=sealed.envelope.type,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        await self.exchange.publish(message, routing_key=outbox.routing_key(sealed.envelope))

    async def publish_window(self, sealed: list[Sealed]) -> None:
        """Publish in order, the confirms awaited together."""
        await asyncio.gather(*[asyncio.ensure_future(self.publish(s)) for s in sealed])

    async def _arrived(self, delivery: AbstractIncomingMessage) -> None:
        self.received[delivery.type or ""] += 1
        self.changed.set()

    async def wait_for(self, type_: str, count: int, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while self.received[type_] < count:
                self.changed.clear()
                await self.changed.wait()


async def connect(amqp_url: str, namespace: str, users: list[str]) -> Client:
    connection = await aio_pika.connect_robust(amqp_url, client_properties={"connection_name": "kabuto-bench"})
    channel = await connection.channel(publisher_confirms=True)
    names = Names(namespace)
    exchange = await channel.get_exchange(names.messages)
    client = Client(connection, exchange)
    replies_channel = await connection.channel()
    await replies_channel.set_qos(prefetch_count=1000)
    queue = await replies_channel.declare_queue(f"{namespace}.bench.{uuid.uuid4().hex[:6]}", exclusive=True)
    for user in users:
        await queue.bind(names.messages, routing_key=user)
    await queue.consume(client._arrived, no_ack=True)
    return client


def account_box(trust: TrustStore, user_id: str) -> str:
    """The bench trader's settlement account sealed to settlement (R-001-06)."""
    return seal_account(trust, user_id, f"acct-{user_id}")


def standing_cover(identity: Identity, box: str, amount: Decimal) -> Sealed:
    """A signed standing_cover.open on the trader's account box (docs/dvp.md, "Standing cover")."""
    request = OpenStandingCover(cover_id=uuid.uuid4(), user_id=identity.user_id, account=box, amount=amount)
    return seal(identity, request, recipient=EXCHANGE_ID, now=datetime.now(UTC))


def buy_order(
    identity: Identity,
    box: str,
    client_order_id: str,
    issue_code: str,
    price: Decimal,
    quantity: int,
    tif: TimeInForce = TimeInForce.DAY,
) -> Sealed:
    """A signed buy limit order from ``identity`` to the exchange, its account sealed in ``box``:
    the box of the trader's standing cover, so the order draws on it."""
    request = SubmitOrder(
        client_order_id=client_order_id,
        user_id=identity.user_id,
        issue_code=issue_code,
        terms=OrderTerms(side=Side.BUY, order_type=OrderType.LIMIT, price=price, quantity=quantity, time_in_force=tif),
        settlement_account=box,
        holder_name=identity.user_id,
        holder_address="Tokyo",
    )
    return seal(identity, request, recipient=EXCHANGE_ID, now=datetime.now(UTC))


def book_entry_sell_order(
    identity: Identity, trust: TrustStore, client_order_id: str, issue_code: str, price: Decimal, quantity: int
) -> Sealed:
    """A signed book-entry sell limit order: the exchange accepts it in one hop (custody moves
    the shares only when a trade settles, docs/dvp.md), so it measures one hop alone."""
    request = SubmitOrder(
        client_order_id=client_order_id,
        user_id=identity.user_id,
        issue_code=issue_code,
        terms=OrderTerms(side=Side.SELL, order_type=OrderType.LIMIT, price=price, quantity=quantity),
        settlement_account=seal_account(trust, identity.user_id, f"acct-{identity.user_id}"),
        safekeeping_account=f"safe-{identity.user_id}",
    )
    return seal(identity, request, recipient=EXCHANGE_ID, now=datetime.now(UTC))
