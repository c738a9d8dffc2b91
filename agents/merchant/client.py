"""A merchant's payment system (seed 003's seller server 400) as an external client library.

    async with MerchantTerminal.connect(settings, "shop") as shop:
        await shop.request_purchase("order-17", "4000-0001", 200_000)
        answer = await shop.answer("order-17")          # approved or refused, with the reason
        await shop.capture("order-17", "shop-cash")     # delivered: the card issuer pays the price

The merchant is enrolled in the Kabuto CA (role ``merchant``) and is no agent: it publishes
signed messages to the messages exchange itself and reads its answers from its own durable
queue, verifying each one (signature, certificate, sender's role, freshness) before it trusts
it. When the card issuer answers, the terminal tells the purchaser (S1120, R-003-17).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import TypeVar
from uuid import UUID

import aio_pika
from aio_pika.abc import AbstractExchange, AbstractIncomingMessage, AbstractQueue

from broker import logs
from broker.envelope import Freshness, open_delivery, seal
from broker.errors import Rejected
from broker.pki import Identity, KeyStore
from broker.settings import Settings
from broker.topology import Names
from broker.trust import TrustStore
from schemas.catalogue import Message
from schemas.credit import CaptureAnswer, CapturePurchase, CardPaymentAnswer, PurchaseAnswer, PurchaseRequest
from schemas.identity import CARD_ISSUER_ID, Role

log = logs.get("kabuto.merchant")
T = TypeVar("T")
# An idle merchant's queue disappears after a week, like a session; answers wait there meanwhile.
QUEUE_EXPIRES_MS = 7 * 24 * 3600 * 1000


class MerchantTerminal:
    def __init__(self, identity: Identity, trust: TrustStore, settings: Settings, exchange: AbstractExchange) -> None:
        self._identity = identity
        self._trust = trust
        self._settings = settings
        self._exchange = exchange
        self._answers: dict[str, PurchaseAnswer] = {}
        self._captures: dict[str, CaptureAnswer] = {}
        self._rejected: list[str] = []
        self._changed = asyncio.Condition()

    @property
    def user_id(self) -> str:
        return self._identity.user_id

    @classmethod
    @asynccontextmanager
    async def connect(cls, settings: Settings, merchant_id: str) -> AsyncIterator[MerchantTerminal]:
        keys = KeyStore(settings.key_dir)
        identity = keys.load_identity(merchant_id)
        if identity.participant.role is not Role.MERCHANT:
            raise ValueError(f"{merchant_id} is enrolled as {identity.participant.role.value}, not as a merchant")
        trust = TrustStore(keys.ca_certificate(), keys.certificates())
        names = Names(settings.namespace)
        connection = await aio_pika.connect_robust(settings.amqp_url)
        try:
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            exchange = await channel.get_exchange(names.messages)
            queue = await _declare_queue(channel, names, exchange, merchant_id)
            terminal = cls(identity, trust, settings, exchange)
            consuming = asyncio.create_task(terminal._consume(queue), name=f"merchant-{merchant_id}")
            try:
                yield terminal
            finally:
                consuming.cancel()
                await asyncio.gather(consuming, return_exceptions=True)
        finally:
            await connection.close()

    async def _send(self, payload: Message, to: str) -> UUID:
        sealed = seal(self._identity, payload, recipient=to, now=datetime.now(UTC))
        await self._exchange.publish(
            aio_pika.Message(
                sealed.body,
                headers=dict(sealed.headers),
                message_id=str(sealed.envelope.message_id),
                type=sealed.envelope.type,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=to,
            mandatory=True,
        )
        return sealed.envelope.message_id

    async def request_purchase(
        self,
        purchase_id: str,
        card_number: str,
        amount: int,
        description: str = "",
        *,
        card_issuer: str = CARD_ISSUER_ID,
    ) -> UUID:
        """S1020/S1030 (R-003-14): ask the card issuer whether the card may pay ``amount``; returns
        the request's message id, which is also the conversation's correlation id."""
        request = PurchaseRequest(
            purchase_id=purchase_id, card_number=card_number, amount=amount, description=description
        )
        return await self._send(request, card_issuer)

    async def capture(self, purchase_id: str, settlement_account: str, *, card_issuer: str = CARD_ISSUER_ID) -> UUID:
        return await self._send(
            CapturePurchase(purchase_id=purchase_id, settlement_account=settlement_account), card_issuer
        )

    async def answer(self, purchase_id: str, timeout: float = 20.0) -> PurchaseAnswer:
        return await self._wait(self._answers, purchase_id, timeout)

    async def capture_answer(self, purchase_id: str, timeout: float = 20.0) -> CaptureAnswer:
        return await self._wait(self._captures, purchase_id, timeout)

    @property
    def rejected(self) -> list[str]:
        """Reasons of deliveries that failed verification (and were dropped)."""
        return list(self._rejected)

    async def _wait(self, found: dict[str, T], key: str, timeout: float) -> T:
        async with asyncio.timeout(timeout), self._changed:
            while key not in found:
                await self._changed.wait()
            return found[key]

    async def _consume(self, queue: AbstractQueue) -> None:
        async with queue.iterator() as deliveries:
            async for delivery in deliveries:
                await self._receive(delivery)
                await delivery.ack()

    async def _receive(self, delivery: AbstractIncomingMessage) -> None:
        try:
            opened = open_delivery(
                delivery.body,
                delivery.headers,
                trust=self._trust,
                hosted={self.user_id: Role.MERCHANT},
                freshness=Freshness(self._settings.max_message_age, self._settings.max_clock_skew),
                now=datetime.now(UTC),
            )
        except Rejected as rejected:
            log.warning("security_event", reason=rejected.reason.value, detail=rejected.detail)
            self._rejected.append(rejected.reason.value)
            return
        message = opened.message
        if isinstance(message, PurchaseAnswer):
            await self._tell_customer(message)
        async with self._changed:
            if isinstance(message, PurchaseAnswer):
                self._answers[message.purchase_id] = message
            elif isinstance(message, CaptureAnswer):
                self._captures[message.purchase_id] = message
            self._changed.notify_all()

    async def _tell_customer(self, answer: PurchaseAnswer) -> None:
        """S1120 (R-003-17, R-003-39): the customer learns whether the card paid."""
        if answer.purchaser is None or answer.purchase_id in self._answers:
            return
        told = CardPaymentAnswer(
            purchase_id=answer.purchase_id,
            merchant=self.user_id,
            amount=answer.amount,
            approved=answer.approved,
            reason=answer.reason,
        )
        try:
            await self._send(told, answer.purchaser)
        except aio_pika.exceptions.DeliveryError as exc:  # no terminal for that purchaser (R-003-02)
            log.warning("customer_not_told", purchaser=answer.purchaser, error=str(exc))


def queue_name(names: Names, merchant_id: str) -> str:
    """The merchant terminal's own queue, where the card issuer's answers wait for it."""
    return f"{names.namespace}.merchant.{merchant_id}"


async def _declare_queue(
    channel: aio_pika.abc.AbstractChannel, names: Names, exchange: AbstractExchange, merchant_id: str
) -> AbstractQueue:
    queue = await channel.declare_queue(
        queue_name(names, merchant_id), durable=True, arguments={"x-expires": QUEUE_EXPIRES_MS}
    )
    await queue.bind(exchange, routing_key=merchant_id)
    return queue
