"""Writing the outbox (issue 8): a batch's messages in one statement, in their order, and the
statement wakes the agent's relay by itself (migration 0075) when its transaction commits,
once however many rows it wrote, and never for rows rolled back with their transaction or
savepoint."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import asyncpg

from broker import outbox, relay_window
from broker.db import notify_channel
from broker.runtime import AgentRuntime
from broker.settings import Settings
from tests import support


@asynccontextmanager
async def listening(settings: Settings, agent: str) -> AsyncIterator[list[str]]:
    """The notifications on ``agent``'s relay channel, as a second session receives them."""
    heard: list[str] = []
    connection = await asyncpg.connect(settings.database_url)
    try:
        await connection.add_listener(notify_channel(agent), lambda _c, _pid, _channel, payload: heard.append(payload))
        yield heard
    finally:
        await connection.close()


async def settled(heard: list[str], settings: Settings, agent: str) -> list[str]:
    """What was heard once a notification sent after every earlier commit has arrived: NOTIFYs
    of one channel reach a listener in commit order."""
    marker = "after"
    connection = await asyncpg.connect(settings.database_url)
    try:
        await connection.execute("SELECT pg_notify($1, $2)", notify_channel(agent), marker)
    finally:
        await connection.close()
    await support.eventually(lambda: marker in heard)
    return heard[: heard.index(marker)]


async def test_rows_committed_wake_the_relay_once_and_rows_rolled_back_never(settings: Settings, keys: Any) -> None:
    alice = keys.load_identity("alice")
    async with AgentRuntime(support.AGENTS["issuer"], settings) as issuer, listening(settings, "issuer") as heard:
        async with issuer.pool.acquire() as connection:
            # rolled back whole
            transaction = connection.transaction()
            await transaction.start()
            await outbox.store(connection, [support.sealed_request(alice, to="exchange")])
            await transaction.rollback()
            # a savepoint rolled back inside a transaction that commits with no rows of its own
            async with connection.transaction():
                savepoint = connection.transaction()
                await savepoint.start()
                await outbox.store(connection, [support.sealed_request(alice, to="exchange")])
                await savepoint.rollback()
            assert await settled(heard, settings, "issuer") == []
            heard.clear()
            # three rows committed in one statement
            async with connection.transaction():
                await outbox.store(connection, [support.sealed_request(alice, to="exchange") for _ in range(3)])
            assert await settled(heard, settings, "issuer") == [""]
            pending = await connection.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL")
            assert pending == 3


async def test_a_relay_running_publishes_what_a_commit_wrote_without_polling(settings: Settings, keys: Any) -> None:
    """The running relay is woken by the insert's notification alone: its safety-net poll is
    set beyond the test's wait, and nothing else tells it."""
    alice = keys.load_identity("alice")
    patient = dataclasses.replace(settings, outbox_idle_poll=timedelta(minutes=10))
    async with support.agents(patient, "issuer", "exchange") as rt:
        issuer = rt["issuer"]
        async with issuer.pool.acquire() as connection, connection.transaction():
            await outbox.store(connection, [support.sealed_request(alice, to="exchange")])

        async def published() -> bool:
            return bool(await issuer.pool.fetchval("SELECT count(*) = 0 FROM outbox WHERE published_at IS NULL"))

        await support.eventually(published, timeout=10)


async def test_a_batchs_messages_are_stored_in_one_statement_in_their_order(settings: Settings, keys: Any) -> None:
    """The relay publishes by seq, so the rows must take the order the handlers emitted them in,
    each body and header byte for byte."""
    alice = keys.load_identity("alice")
    to = ["exchange", "settlement", "investor"] * 20
    sealed = [support.sealed_request(alice, to=recipient, shares=n + 1) for n, recipient in enumerate(to)]
    statements: list[str] = []
    async with AgentRuntime(support.AGENTS["issuer"], settings) as issuer:
        async with issuer.pool.acquire() as connection, connection.transaction():
            connection.add_query_logger(lambda record: statements.append(record.query))
            await outbox.store(connection, sealed)
        rows = await support.rows(
            issuer, "SELECT message_id::text AS id, routing_key, body, headers FROM outbox ORDER BY seq"
        )
    assert len([q for q in statements if "INSERT INTO outbox" in q]) == 1
    assert [r["id"] for r in rows] == [str(s.envelope.message_id) for s in sealed]
    assert [r["routing_key"] for r in rows] == to
    assert [bytes(r["body"]) for r in rows] == [s.body for s in sealed]
    assert [json.loads(r["headers"]) for r in rows] == [s.headers for s in sealed]


async def test_a_windows_mark_and_the_next_windows_read_are_one_statement(settings: Settings) -> None:
    """Stop 30: when rows were committed while a window was published, the relay marks that
    window with the read of the next (relay_window.MARK_AND_READ): the rows marked are not read
    again, though the read's snapshot is from before the mark, and synchronous commit is off for
    that statement's own transaction only, as for the mark alone."""
    connection = await asyncpg.connect(settings.database_url, server_settings={"search_path": "investor"})
    try:
        seqs = [
            await connection.fetchval(
                """INSERT INTO outbox (message_id, message_type, exchange, routing_key, body, headers)
                   VALUES (gen_random_uuid(), 'probe', 'messages', 'nobody', '\\x00', '{}') RETURNING seq"""
            )
            for _ in range(3)
        ]
        rows = await connection.fetch(relay_window.MARK_AND_READ, seqs[:1], 10)
        assert [r["seq"] for r in rows] == seqs[1:]
        published = await connection.fetch("SELECT seq FROM outbox WHERE published_at IS NOT NULL ORDER BY seq")
        assert [r["seq"] for r in published] == seqs[:1]
        assert await connection.fetchval("SHOW synchronous_commit") == "on"
        rows = await connection.fetch(relay_window.MARK_AND_READ, seqs[1:], 10)
        assert rows == []
        assert await connection.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL") == 0
    finally:
        await connection.close()


async def test_rows_committed_while_the_relay_publishes_are_all_marked_once_it_is_idle(
    settings: Settings, keys: Any
) -> None:
    """Commits arriving one after another while windows are in the air: each window's mark goes
    with the next read, and the last window's is made before the relay waits — no row is left
    confirmed but unmarked (it would be published again by the next run). Only commits wake the
    relay here: its safety-net poll is beyond the test's wait."""
    alice = keys.load_identity("alice")
    patient = dataclasses.replace(settings, outbox_idle_poll=timedelta(minutes=10))
    async with support.agents(patient, "issuer", "exchange") as rt:
        issuer, exchange = rt["issuer"], rt["exchange"]

        async def commit_one() -> None:
            async with issuer.pool.acquire() as connection, connection.transaction():
                await outbox.store(connection, [support.sealed_request(alice, to="exchange")])

        for _ in range(4):
            await asyncio.gather(*(commit_one() for _ in range(10)))

        async def all_marked() -> bool:
            return bool(await issuer.pool.fetchval("SELECT count(*) = 0 FROM outbox WHERE published_at IS NULL"))

        await support.eventually(all_marked, timeout=10)
        await exchange.outcomes.wait_count(lambda s: True, 40)
