"""An external participant on the broker: sign and publish, receive and verify, by conversation.

    async with Participant.connect(amqp_url, key=…, certificate=…, ca_certificate=…) as me:
        reply = await me.request(order, to="exchange")     # the first verified reply
        fill = await me.conversation(reply).wait_for("order.executed")

It talks only to RabbitMQ. Every message is sealed as docs/signatures.md says and published
to ``<ns>.messages`` with the mandatory flag and publisher confirms (an unknown recipient is
an error, not a silent loss). Replies arrive on the participant's reply queue
``<ns>.participant.<id>`` (declared on connect, idempotently) and each one is verified in
full before anyone sees it — signature, certificate chain and validity, that the sender's
role may send that type to this participant's role, freshness — exactly as the agents do
(``broker.envelope.open_delivery``). A delivery that fails is acked away and kept in
``refused`` with its reason. Messages are grouped by correlation id, which for a reply is the
message id of the request that began the conversation; a redelivered message id is
absorbed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID

import aio_pika
import aiormq
from aio_pika.abc import AbstractConnection, AbstractExchange, AbstractIncomingMessage
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.access import participant_login, with_login
from broker.envelope import Freshness, Opened, Sealed, open_delivery, seal
from broker.errors import Rejected
from broker.participants import open_messages_exchange, open_reply_queue
from broker.pki import Identity, KeyStore, PkiError, load_certificate, participant_of
from broker.sealed_box import seal_account
from broker.topology import Names
from broker.trust import TrustStore
from schemas.catalogue import Message
from schemas.identity import SETTLEMENT_ID

DEFAULT_FRESHNESS = Freshness(max_age=timedelta(hours=24), max_skew=timedelta(seconds=30))


class ClientError(Exception):
    """The broker refused a message (unroutable, nacked) or no reply came in time."""


@dataclass(frozen=True, slots=True)
class Refusal:
    """A delivery on the reply queue that failed verification, and why."""

    message_id: str | None
    reason: str
    detail: str


@dataclass(slots=True)
class Conversation:
    """The verified messages of one correlation id, in arrival order."""

    correlation_id: UUID
    _arrived: asyncio.Queue[Opened] = field(default_factory=asyncio.Queue)
    seen: list[Opened] = field(default_factory=list)

    def _deliver(self, opened: Opened) -> None:
        self.seen.append(opened)
        self._arrived.put_nowait(opened)

    async def next(self, *, timeout: float = 30.0) -> Opened:
        try:
            async with asyncio.timeout(timeout):
                return await self._arrived.get()
        except TimeoutError as exc:
            raise ClientError(f"no message in conversation {self.correlation_id} within {timeout}s") from exc

    async def wait_for(self, *types: str, timeout: float = 30.0) -> Opened:
        """The next message of one of ``types``; the others stay in ``seen``."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    opened = await self._arrived.get()
                    if opened.envelope.type in types:
                        return opened
        except TimeoutError as exc:
            raise ClientError(f"no {' or '.join(types)} in {self.correlation_id} within {timeout}s") from exc


def load_identity(key: Path, certificate: Path) -> Identity:
    """The participant's Ed25519 private key (PEM, PKCS#8) and its identity certificate (PEM)."""
    private = serialization.load_pem_private_key(key.read_bytes(), password=None)
    if not isinstance(private, Ed25519PrivateKey):
        raise PkiError(f"{key} is not an Ed25519 private key")
    cert = load_certificate(certificate)
    if private.public_key() != cert.public_key():
        raise PkiError(f"{key} and {certificate} do not belong together")
    return Identity(participant_of(cert), private, cert)


class Participant:
    def __init__(
        self, identity: Identity, trust: TrustStore, names: Names, exchange: AbstractExchange, freshness: Freshness
    ) -> None:
        self.identity = identity
        self.trust = trust
        self.names = names
        self.freshness = freshness
        self.refused: list[Refusal] = []
        self._exchange = exchange
        self._conversations: dict[UUID, Conversation] = {}
        self._seen_ids: set[UUID] = set()
        self._account_boxes: dict[str, str] = {}

    @classmethod
    @asynccontextmanager
    async def connect(
        cls,
        amqp_url: str,
        *,
        key: Path,
        certificate: Path,
        ca_certificate: Path,
        namespace: str = "kabuto",
        freshness: Freshness = DEFAULT_FRESHNESS,
        settlement_certificate: Path | None = None,
    ) -> AsyncIterator[Participant]:
        """Connect as the participant of ``key`` and ``certificate``, trusting ``ca_certificate``.

        ``settlement_certificate`` is the settlement agent's identity certificate: the key it
        certifies is the one accounts are sealed to (R-001-06); it is checked against the CA
        before anything is sealed to it."""
        identity = load_identity(key, certificate)
        known = [load_certificate(settlement_certificate)] if settlement_certificate else []
        trust = TrustStore(load_certificate(ca_certificate), known)
        names = Names(namespace)
        connection = await aio_pika.connect_robust(
            amqp_url, client_properties={"connection_name": f"kabuto-client-{identity.user_id}"}
        )
        try:
            messages = await open_messages_exchange(connection, names)
            participant = cls(identity, trust, names, messages, freshness)
            await participant._consume(connection)
            yield participant
        finally:
            await connection.close()

    @classmethod
    @asynccontextmanager
    async def enrolled(
        cls,
        amqp_url: str,
        key_dir: Path,
        user_id: str,
        *,
        namespace: str = "kabuto",
        freshness: Freshness = DEFAULT_FRESHNESS,
    ) -> AsyncIterator[Participant]:
        """Connect with the files ``kabuto ca enrol`` wrote under ``key_dir``: the key, the
        certificate and, when enrolment made one, the participant's own broker login."""
        keys = KeyStore(key_dir)
        login = participant_login(key_dir, user_id)
        amqp_url = with_login(amqp_url, *login) if login else amqp_url
        settlement = keys.certificate_path(SETTLEMENT_ID)  # public: what accounts are sealed to
        async with cls.connect(
            amqp_url,
            key=keys.key_path(user_id),
            certificate=keys.certificate_path(user_id),
            ca_certificate=keys.ca_certificate_path,
            namespace=namespace,
            freshness=freshness,
            settlement_certificate=settlement if settlement.exists() else None,
        ) as participant:
            yield participant

    @property
    def user_id(self) -> str:
        return self.identity.user_id

    def account_box(self, account: str) -> str:
        """``account`` sealed to settlement for this participant's orders (R-001-06), sealed once
        and reused: a buy order draws on a standing cover only with the very box the cover was
        opened with (docs/dvp.md, "Standing cover")."""
        if account not in self._account_boxes:
            self._account_boxes[account] = seal_account(self.trust, self.user_id, account)
        return self._account_boxes[account]

    def keep_account_box(self, account: str, box: str) -> None:
        """Seal ``account`` as ``box`` from now on: a box kept from an earlier session (the
        ``account`` of the ``standing_cover.open`` it sent), so that after a restart its buy
        orders still draw on the cover opened with it."""
        self._account_boxes[account] = box

    async def _consume(self, connection: AbstractConnection) -> None:
        queue = await open_reply_queue(connection, self.names, self.user_id, prefetch=32)
        await queue.consume(self._on_delivery, no_ack=False)

    async def _on_delivery(self, delivery: AbstractIncomingMessage) -> None:
        async with delivery.process():  # acked whatever the outcome: a refused message is kept in ``refused``
            try:
                opened = open_delivery(
                    delivery.body,
                    delivery.headers,
                    trust=self.trust,
                    hosted={self.user_id: self.identity.participant.role},
                    freshness=self.freshness,
                    now=datetime.now(UTC),
                )
            except Rejected as exc:
                self.refused.append(Refusal(delivery.message_id, exc.reason.value, exc.detail))
                return
            if opened.envelope.message_id in self._seen_ids:
                return  # the sender's relay published it twice
            self._seen_ids.add(opened.envelope.message_id)
            self.conversation(opened.envelope.correlation_id)._deliver(opened)

    def conversation(self, of: UUID | Opened | Sealed) -> Conversation:
        """The conversation of a correlation id, of a message received, or of a message sent."""
        if isinstance(of, Opened | Sealed):
            of = of.envelope.correlation_id
        return self._conversations.setdefault(of, Conversation(of))

    def seal(self, payload: Message, *, to: str, message_id: UUID | None = None) -> Sealed:
        return seal(self.identity, payload, recipient=to, now=datetime.now(UTC), message_id=message_id)

    async def publish(self, sealed: Sealed) -> None:
        """Publish sealed bytes; the broker must route and confirm them."""
        envelope = sealed.envelope
        self.conversation(sealed)  # replies that arrive before anyone waits are kept
        message = aio_pika.Message(
            sealed.body,
            headers=dict(sealed.headers),
            message_id=str(envelope.message_id),
            type=envelope.type,
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        try:
            await self._exchange.publish(message, routing_key=envelope.recipient or "", mandatory=True)
        except aiormq.exceptions.PublishError as exc:
            raise ClientError(f"no queue for recipient {envelope.recipient!r}") from exc
        except aiormq.exceptions.DeliveryError as exc:
            raise ClientError(f"the broker refused {envelope.type}: {exc}") from exc

    async def send(self, payload: Message, *, to: str) -> Conversation:
        sealed = self.seal(payload, to=to)
        await self.publish(sealed)
        return self.conversation(sealed)

    async def request(
        self,
        payload: Message,
        *,
        to: str,
        expect: Collection[str] = (),
        timeout: float = 30.0,
        attempts: int = 1,
    ) -> Opened:
        """Send ``payload`` and return the first verified reply (of the ``expect`` types, if given).

        Without a reply within ``timeout`` the same bytes are published again, up to
        ``attempts`` times: the receiver absorbs a message id it has seen.
        """
        sealed = self.seal(payload, to=to)
        conversation = self.conversation(sealed)
        for attempt in range(1, attempts + 1):
            await self.publish(sealed)
            try:
                if expect:
                    return await conversation.wait_for(*expect, timeout=timeout)
                return await conversation.next(timeout=timeout)
            except ClientError:
                if attempt == attempts:
                    raise
        raise AssertionError("unreachable")
