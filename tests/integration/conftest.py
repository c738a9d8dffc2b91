"""Fixtures for the integration tests: an external participant hosted by no agent."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from decimal import Decimal

import aio_pika
import asyncpg
import pytest

from agents.exchange import order_repo
from broker import logs
from broker.participants import reply_queue_name
from broker.pki import KeyStore, default_participant
from broker.settings import Settings
from broker.topology import Names
from kabuto_client import Participant
from schemas.identity import Role
from tests import support
from tests.conftest import logs_as_agents_write_them


async def delete_queue(settings: Settings, participant: str) -> None:
    connection = await aio_pika.connect(settings.amqp_url)
    try:
        channel = await connection.channel()
        await channel.queue_delete(reply_queue_name(Names(settings.namespace), participant))
    finally:
        await connection.close()


def enrol(keys: KeyStore, user_id: str) -> None:
    keys.enrol(default_participant(user_id, Role.INVESTOR, limit=10_000_000))


@pytest.fixture
async def dora(settings: Settings, keys: KeyStore) -> AsyncIterator[Participant]:
    enrol(keys, "dora")
    try:
        async with Participant.enrolled(settings.amqp_url, keys.root, "dora", namespace=settings.namespace) as me:
            yield me
    finally:
        await delete_queue(settings, "dora")


# erin's account usage limit: her open buy orders' notional at most (R-001-23)
TRADER_LIMITS = {"erin": 300_000}


@pytest.fixture
async def traders(settings: Settings, keys: KeyStore) -> AsyncIterator[dict[str, Participant]]:
    """dora, erin and frank, enrolled investors speaking for themselves (``kabuto_client``)."""
    names = ("dora", "erin", "frank")
    async with AsyncExitStack() as stack:
        for name in names:
            keys.enrol(default_participant(name, Role.INVESTOR, limit=TRADER_LIMITS.get(name, 10_000_000)))
            stack.push_async_callback(delete_queue, settings, name)
        yield {
            name: await stack.enter_async_context(
                Participant.enrolled(settings.amqp_url, keys.root, name, namespace=settings.namespace)
            )
            for name in names
        }


@pytest.fixture
async def listed_exchange(database: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the exchange's schema, the test issue listed at a reference of 1,000."""
    conn = await asyncpg.connect(database, server_settings={"search_path": "exchange"})
    await order_repo.list_instrument(conn, support.ISSUE, "common", Decimal(1000))
    yield conn
    await conn.close()


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """Every log line of the test, as JSON, from debug up."""
    stream = io.StringIO()
    logs.configure("debug", "json", stream, cache=False)
    yield stream
    logs_as_agents_write_them()
