"""Helpers the tests share: running agents, building requests, reading the broker's queues."""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import sys
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import uuid4

import aio_pika
import asyncpg
from aio_pika.abc import AbstractIncomingMessage
from prometheus_client import REGISTRY

from agents.investor.app import IssuanceOrder, request_certificates
from agents.investor.domain import Dividend
from agents.investor.trading import OrderTicket as _OrderTicket
from agents.investor.trading import place_order as _place_order
from agents.issuer import repo as issuer_repo
from agents.issuer.domain import Offering
from agents.registry import AGENTS
from broker import outbox, topology
from broker.bundle import BUNDLE_TYPE, CONTENT_TYPE, Delivery, Item, unbundled
from broker.envelope import Sealed, seal
from broker.pki import Identity
from broker.runtime import AgentRuntime, started
from broker.settings import Settings
from broker.topology import Names
from schemas.certificates import ElectronicStockCertificate, ShareClass, TransferRestriction
from schemas.issuance import CertificateIssuanceRequest, DividendDelivery, DividendMethod
from schemas.trading import Side as _Side

ISSUE = "KBT"


@asynccontextmanager
async def agents(settings: Settings, *ids: str) -> AsyncIterator[dict[str, AgentRuntime]]:
    async with started([AGENTS[i] for i in ids], settings) as runtimes:
        yield runtimes


def offering(issue_code: str = ISSUE, **changes: Any) -> Offering:
    values: dict[str, Any] = dict(
        issue_code=issue_code,
        company_name="Kabuto Test Industries K.K.",
        incorporated_on=date(1999, 11, 11),
        share_class=ShareClass.COMMON,
        offer_price=Decimal("1000"),
        shares_offered=100_000,
        shares_remaining=100_000,
        minimum_lot=100,
        par_value_per_share=Decimal("50"),
    )
    values.update(changes)
    return Offering(**values)


async def open_offering(issuer: AgentRuntime, offer: Offering | None = None) -> Offering:
    offer = offer or offering()
    await issuer.command("issuer", lambda ctx: issuer_repo.open_offering(ctx.connection, offer))
    return offer


def order(shares: int = 500, issue_code: str = ISSUE, holder: str = "Alice") -> IssuanceOrder:
    return IssuanceOrder(
        issue_code=issue_code,
        share_class=ShareClass.COMMON,
        shares=shares,
        holder_name=holder,
        holder_address="1-1 Kabuto-cho, Tokyo",
        dividend_delivery=Dividend(method=DividendMethod.BANK_TRANSFER, account="0001-234567"),
    )


async def request(investor: AgentRuntime, user: str = "alice", shares: int = 500) -> Any:
    return await investor.command(user, request_certificates(order(shares, holder=user.capitalize())))


def issuance_request(user: str = "alice", shares: int = 500, **changes: Any) -> CertificateIssuanceRequest:
    values: dict[str, Any] = dict(
        user_id=user,
        holder_name=user.capitalize(),
        holder_address="1-1 Kabuto-cho, Tokyo",
        issue_code=ISSUE,
        share_class=ShareClass.COMMON,
        shares=shares,
        dividend_delivery=DividendDelivery(method=DividendMethod.BANK_TRANSFER, account=DIVIDEND_BOX),
    )
    values.update(changes)
    return CertificateIssuanceRequest(**values)


def sealed_request(identity: Identity, to: str = "issuer", **changes: Any) -> Sealed:
    return seal(identity, issuance_request(identity.user_id, **changes), recipient=to, now=datetime.now(UTC))


def replayed_request(identity: Identity, of: Sealed, **changes: Any) -> Sealed:
    """Another issuance request under ``of``'s message id: a replayed id, other bytes."""
    request = issuance_request(identity.user_id, **changes)
    return seal(identity, request, recipient="issuer", now=datetime.now(UTC), message_id=of.envelope.message_id)


async def publish(
    settings: Settings, body: bytes, headers: Mapping[str, Any], routing_key: str, message_id: str = ""
) -> None:
    """Publish raw bytes to the messages exchange, as any client on the network could."""
    connection = await aio_pika.connect(settings.amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        exchange = await channel.get_exchange(Names(settings.namespace).messages)
        await exchange.publish(
            aio_pika.Message(body, headers=dict(headers), message_id=message_id or None),
            routing_key=routing_key,
        )
    finally:
        await connection.close()


async def publish_sealed(settings: Settings, sealed: Sealed, routing_key: str | None = None) -> None:
    await publish(
        settings,
        sealed.body,
        sealed.headers,
        routing_key or outbox.routing_key(sealed.envelope),
        str(sealed.envelope.message_id),
    )


async def next_message(settings: Settings, queue_name: str, *, timeout: float = 10) -> AbstractIncomingMessage:
    """The next message on a queue, consumed and acked; waits for it up to ``timeout``."""
    connection = await aio_pika.connect(settings.amqp_url)
    try:
        channel = await connection.channel()
        queue = await channel.get_queue(queue_name)
        async with asyncio.timeout(timeout), queue.iterator() as messages:
            async for message in messages:
                await message.ack()
                return message
        raise AssertionError("unreachable")
    finally:
        await connection.close()


class QueueReader:
    """Messages off an agent's queue one at a time, as its consumer would take them: a bundle
    (broker/bundle.py) is read as its items, in order."""

    def __init__(self, settings: Settings, queue_name: str) -> None:
        self._settings, self._queue = settings, queue_name
        self._waiting: deque[Delivery] = deque()

    async def next(self, *, timeout: float = 10) -> Delivery:
        if not self._waiting:
            message = await next_message(self._settings, self._queue, timeout=timeout)
            self._waiting.extend(unbundled(message))
        return self._waiting.popleft()


def packed_item(sealed: Sealed) -> Item:
    """A message as a packed bundle carries it (broker.bundle): its id, its type and its body, no
    headers — the bundle's seal is its only signature."""
    return Item(str(sealed.envelope.message_id), sealed.envelope.type, {}, sealed.body)


async def publish_bundle(
    settings: Settings,
    body: bytes,
    headers: Mapping[str, Any] | None = None,
    *,
    routing_key: str = "issuer",
    message_id: str = "bundle-1",
) -> None:
    """A bundle published as any client on the network could, with ``headers`` as given."""
    connection = await aio_pika.connect(settings.amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        exchange = await channel.get_exchange(Names(settings.namespace).messages)
        message = aio_pika.Message(
            body, headers=dict(headers or {}), message_id=message_id, type=BUNDLE_TYPE, content_type=CONTENT_TYPE
        )
        await exchange.publish(message, routing_key=routing_key)
    finally:
        await connection.close()


async def dead_lettered_whole(
    settings: Settings,
    body: bytes,
    headers: Mapping[str, Any] | None = None,
    *,
    agent: str = "issuer",
    message_id: str | None = None,
) -> None:
    """A bundle dead-lettered as the broker dead-letters a delivery past its limit: no reason of
    Kabuto's, an ``x-death``."""
    names = Names(settings.namespace)
    death = [{"reason": "delivery_limit", "queue": names.inbox(agent), "count": 1, "routing-keys": [agent]}]
    connection = await aio_pika.connect(settings.amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        dead = await channel.get_exchange(names.dead)
        message = aio_pika.Message(
            body, type=BUNDLE_TYPE, message_id=message_id, headers={**(headers or {}), "x-death": death}
        )
        await dead.publish(message, routing_key=agent)
    finally:
        await connection.close()


async def dead_letter(settings: Settings, agent: str, *, timeout: float = 10) -> AbstractIncomingMessage:
    return await next_message(settings, Names(settings.namespace).dead_letters(agent), timeout=timeout)


async def queue_depth(settings: Settings, queue_name: str) -> int:
    return (await queue_figures(settings, queue_name))[0]


async def queue_figures(settings: Settings, queue_name: str) -> tuple[int, int]:
    """(messages ready, consumers). A quorum queue whose leader is slow to answer reads (0, 0)
    (rabbit_quorum_queue:stat/1), so a wait for a consumed queue to be empty waits for (0, 1)."""
    connection = await aio_pika.connect(settings.amqp_url)
    try:
        return await topology.inspect_queue(connection, queue_name)
    finally:
        await connection.close()


async def pushed_to_its_consumer(settings: Settings, queue_name: str) -> bool:
    """Whether every message of a queue with one consumer has been pushed to it (none ready)."""
    return await queue_figures(settings, queue_name) == (0, 1)


async def rows(runtime: AgentRuntime, sql: str, *args: Any) -> list[dict[str, Any]]:
    return [dict(r) for r in await runtime.query(lambda c: c.fetch(sql, *args))]


async def plan_nodes(connection: Any, sql: str, *args: Any, generic: bool = False) -> list[dict[str, Any]]:
    """Every node of the plan ``sql`` ran under (EXPLAIN ANALYZE, so each node says how many
    times it ran), in a transaction rolled back: a statement that writes changes nothing.
    ``generic``: the plan made without the arguments' values, which a prepared statement keeps
    after its fifth execution."""
    explained = connection.transaction()
    await explained.start()
    try:
        if generic:
            await connection.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        plan = json.loads(await connection.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}", *args))
    finally:
        await explained.rollback()
    nodes, pending = [], [plan[0]["Plan"]]
    while pending:
        node = pending.pop()
        nodes.append(node)
        pending.extend(node.get("Plans", []))
    return nodes


def envelope_json(sealed: Sealed) -> dict[str, Any]:
    return json.loads(sealed.body)


def stock_certificate(shares: int = 500, **changes: Any) -> ElectronicStockCertificate:
    today = date.today()
    return ElectronicStockCertificate(
        company_name="Kabuto Test Industries K.K.",
        incorporated_on=date(1999, 11, 11),
        certificate_number=f"{ISSUE}-00000001",
        cert_id=uuid4(),
        shares=shares,
        par_value_per_share=Decimal("50"),
        currency="JPY",
        issued_on=today,
        expires_on=today + timedelta(days=3650),
        holder_name="Alice",
        holder_user_id="alice",
        share_class=ShareClass.COMMON,
        convertible_details=None,
        transfer_restriction=TransferRestriction.NONE,
        issuing_agent_name="Kabuto Issuing Agent (issuer)",
        issuing_agent_address="kabuto:issuer",
        issue_code=ISSUE,
        issuing_agent_id="issuer",
    ).model_copy(update=changes)


def replies(type_: str, correlation_id: object) -> Any:
    """Match the outcomes of ``type_`` messages in one conversation."""
    key = str(correlation_id)
    return lambda s: s.type == type_ and s.correlation_id == key


async def list_issue(exchange: AgentRuntime, issue_code: str = ISSUE, reference: Decimal = Decimal("1000")) -> None:
    from agents.exchange import order_repo

    await exchange.command(
        "exchange", lambda ctx: order_repo.list_instrument(ctx.connection, issue_code, "common", reference)
    )


async def fund(settlement: AgentRuntime, owner: str, amount: Decimal = Decimal(0)) -> str:
    from agents.settlement import app as settlement_app

    account = f"{owner}-cash"
    await settlement.command("settlement", settlement_app.open_account(account, owner))
    if amount:
        await settlement.command("settlement", settlement_app.deposit(account, amount, f"initial-{owner}"))
    return account


async def kabuto_process(settings: Settings, *args: str, **env: str) -> asyncio.subprocess.Process:
    """``kabuto ARGS`` in a process of its own, as an operator runs it, with the test's settings
    (and ``env`` over them); its stderr (the logs) piped."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agents.cli",
        *args,
        env={**environment(settings), **env},
        stderr=asyncio.subprocess.PIPE,
    )


def environment(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "KABUTO_AMQP_URL": settings.amqp_url,
        "KABUTO_DATABASE_URL": settings.database_url,
        "KABUTO_KEY_DIR": str(settings.key_dir),
        "KABUTO_NAMESPACE": settings.namespace,
        "KABUTO_INVESTORS": ",".join(settings.investors),
        "KABUTO_RETRY_DELAYS_MS": ",".join(str(d) for d in settings.retry_delays_ms),
        "KABUTO_LOG_FORMAT": "json",
        "KABUTO_LOG_LEVEL": "info",
        "KABUTO_METRICS_PORT": "0",  # off unless a test asks for it: agent processes would share the port
        "KABUTO_AGENT_CREDENTIALS": "1" if settings.agent_credentials else "0",
        "KABUTO_INSTANCE_WAIT": str(settings.instance_wait.total_seconds()),
    }


async def brokerage_market(
    rt: dict[str, AgentRuntime],
    company: str = "x-sec",
    design: str = "sc_holds_im_account",
    issue: str = "BRK",
    reference: Decimal = Decimal(300),
) -> None:
    """A securities company under contract with the brokerage, its settlement accounts, and an issue.

    The brokerage subscribes to the exchange's prices as it starts; the issue is listed once the
    exchange has taken that subscription, so no snapshot of it reaches the brokerage later, in the
    middle of what a test counts (found under load: B61's inbox grew by two)."""
    from agents.brokerage import operators
    from agents.brokerage.ledger_legs import Design
    from agents.demo.brokered import open_company
    from agents.exchange import order_repo

    if "brokerage" in rt and "exchange" in rt:
        await rt["exchange"].outcomes.wait(lambda s: s.type == "market.subscribe_prices", timeout=30)
    await open_company(rt, company, Design(design), Decimal(100_000_000))
    await rt["brokerage"].command("brokerage", operators.set_reference_price(issue, reference))
    await rt["exchange"].command(
        "exchange", lambda ctx: order_repo.list_instrument(ctx.connection, issue, "common", reference)
    )


async def request_issue(investor: AgentRuntime, user: str, issue: str, shares: int) -> Any:
    return await investor.command(user, request_certificates(order(shares, issue_code=issue, holder=user.capitalize())))


async def seller_bob(rt: dict[str, AgentRuntime], shares: int = 5000, price: str = "300", offered: int = 5000) -> None:
    """bob holds ``offered`` shares of BRK and offers ``shares`` of them at ``price``."""
    await open_offering(rt["issuer"], offering("BRK", offer_price=Decimal(300)))
    request_id = await request_issue(rt["investor"], "bob", "BRK", offered)
    await rt["investor"].outcomes.reply("certificate.issued", request_id)
    await rt["exchange"].outcomes.reply("certid_list.updated", request_id)
    cert = (await rows(rt["investor"], "SELECT cert_id FROM wallet WHERE holder_user_id = 'bob'"))[0]
    bob_cash = await fund(rt["settlement"], "bob")
    sent = await rt["investor"].command(
        "bob",
        _place_order(
            _OrderTicket("bob-sell", "BRK", _Side.SELL, shares, bob_cash, Decimal(price), cert_id=cert["cert_id"])
        ),
    )
    await rt["investor"].outcomes.reply("order.accepted", sent)


def box(text: str = "0001-234567", context: str = "test/nobody") -> str:
    """A well-formed sealed box that nobody here can open: for a message whose receiver keeps the
    box without opening it (the issuer's dividend account, a domain test of the wire model)."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from broker.sealed_box import seal_to

    return seal_to(X25519PrivateKey.generate().public_key(), text, context)


DIVIDEND_BOX = box()  # one box, so two requests built alike are equal


def account_box(keys: Any, user: str, account: str) -> str:
    """``user``'s order account sealed to settlement, as its order carries it (R-001-06)."""
    from schemas.sealed import order_account

    return sealed_to(keys, "settlement", account, order_account(user))


def sealed_to(keys: Any, recipient: str, text: str, context: str) -> str:
    """``text`` sealed to the encryption key certified for ``recipient`` (R-001-06), as a sender does."""
    from broker.pki import encryption_key_of
    from broker.sealed_box import seal_to

    key = encryption_key_of(keys.load_identity(recipient).certificate)
    assert key is not None, f"{recipient} has no certified encryption key"
    return seal_to(key, text, context)


async def terminate_backends(settings: Settings, application_name: str) -> int:
    """Terminate this test database's backends of one application; return how many."""
    database = settings.database_url.rsplit("/", 1)[1]
    admin = await asyncpg.connect(settings.database_url)
    try:
        return int(
            await admin.fetchval(
                """SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                   WHERE datname = $1 AND application_name = $2""",
                database,
                application_name,
            )
        )
    finally:
        await admin.close()


async def eventually(check: Callable[[], object], *, timeout: float = 10.0, every: float = 0.05) -> None:
    """Wait for an outcome that has no event to wait on (a row the relay parks), up to ``timeout``,
    looking every ``every`` seconds; 0 looks at every turn of the event loop, for a state that
    lasts only a few turns (a client's write queue full)."""
    async with asyncio.timeout(timeout):
        while True:
            result = check()
            if inspect.isawaitable(result):
                result = await result
            if result:
                return
            await asyncio.sleep(every)


async def analyze(settings: Settings, table: str) -> None:
    """Statistics for ``table``, as autovacuum would gather them (its owner may; the agent may not)."""
    admin = await asyncpg.connect(settings.database_url)
    try:
        await admin.execute(f"ANALYZE {table}")
    finally:
        await admin.close()


# What ``renamed``'s ``rename`` returns for an entry it leaves as it is: the entry is walked into.
WALK = object()


def renamed(value: Any, rename: Callable[[str, Any], Any], *, sort_keys: bool = False) -> Any:
    """A decoded payload walked through, each dictionary entry replaced by ``rename(key, value)``
    (or walked into where that is ``WALK``): how a test names what differs between two runs
    (numbers drawn, digests, sealed boxes) before it compares what they sent."""
    if isinstance(value, dict):
        items = sorted(value.items()) if sort_keys else value.items()
        out: dict[str, Any] = {}
        for key, item in items:
            replaced = rename(key, item)
            out[key] = renamed(item, rename, sort_keys=sort_keys) if replaced is WALK else replaced
        return out
    if isinstance(value, list):
        return [renamed(item, rename, sort_keys=sort_keys) for item in value]
    return value


def census(agent: str, starting: str) -> float:
    """The statements ``agent``'s pool ran whose text (whitespace collapsed) begins with
    ``starting``, as the census counts them (``statement_census`` on)."""
    return sum(
        sample.value
        for metric in REGISTRY.collect()
        if metric.name == "kabuto_db_statement_texts"
        for sample in metric.samples
        if sample.name.endswith("_total")
        and sample.labels.get("agent") == agent
        and sample.labels.get("statement", "").startswith(starting)
    )
