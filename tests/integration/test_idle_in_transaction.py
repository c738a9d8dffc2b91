"""A session of an agent's pool left idle in a transaction is ended by PostgreSQL, and its locks
with it (broker.db.IDLE_IN_TRANSACTION); the pool goes on with a new connection."""

from __future__ import annotations

from datetime import timedelta

import asyncpg
import pytest

from broker.db import IDLE_IN_TRANSACTION, agent_pool
from broker.supervision import is_infrastructure

LOCK = 733_137  # an advisory lock of the test's own


async def test_every_agent_session_carries_the_limit(database: str) -> None:
    async with agent_pool(database, "exchange", max_size=1) as pool:
        shown = await pool.fetchval("SHOW idle_in_transaction_session_timeout")
    assert shown == f"{int(IDLE_IN_TRANSACTION.total_seconds() // 60)}min"


async def test_a_transaction_left_idle_is_ended_and_its_lock_released_for_the_next_session(database: str) -> None:
    other = await asyncpg.connect(database)
    try:
        async with agent_pool(database, "issuer", max_size=1, idle_in_transaction=timedelta(seconds=1)) as pool:
            async with pool.acquire() as stuck:
                await stuck.execute("BEGIN")
                await stuck.execute("SELECT pg_advisory_xact_lock($1)", LOCK)
                # Another session waits for the lock until PostgreSQL ends the idle one.
                async with other.transaction():
                    await other.execute("SET LOCAL lock_timeout = '10s'")
                    await other.execute("SELECT pg_advisory_xact_lock($1)", LOCK)
                # Its session is gone: what it sends next fails, as a failure of the database,
                # not of a message (the consumer holds the delivery and tries again, the
                # supervisor restarts a task), whichever of its errors asyncpg raises for it.
                with pytest.raises(Exception) as raised:
                    await stuck.fetchval("SELECT 1")
                assert is_infrastructure(raised.value), repr(raised.value)
            # The pool replaces the connection it lost.
            assert await pool.fetchval("SELECT current_user") == "kabuto_issuer"
    finally:
        await other.close()


async def test_a_limit_of_nothing_is_refused_rather_than_turning_the_limit_off(database: str) -> None:
    with pytest.raises(ValueError, match="at least a millisecond"):
        async with agent_pool(database, "issuer", idle_in_transaction=timedelta(0)):
            pass
