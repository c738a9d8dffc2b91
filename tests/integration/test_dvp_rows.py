"""Settlement's instruction and attempt rows read together (issue 8): an answer to an attempt
reads its instruction and the attempt in one statement, and must still read both as a writer
it waited for left them. Against the real PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from agents.settlement import dvp_repo
from tests import support

NUMBER = 7


Connections = tuple[asyncpg.Connection, asyncpg.Connection, asyncpg.Connection]


@pytest.fixture
async def connections(database: str) -> AsyncIterator[Connections]:
    """Ours (the answer), another handler's, and one to watch them with."""
    ours, other, watcher = [
        await asyncpg.connect(database, server_settings={"search_path": "settlement"}) for _ in range(3)
    ]
    await ours.execute(
        """INSERT INTO dvp_instructions (matching_number, trade_date, intended_settlement_date, issue_code,
               quantity, price, amount, currency, buyer_user_id, buyer_account, seller_user_id, seller_account,
               partial_allowed, securities, leg_agent, processing, matching, settlement, attempt, in_flight,
               request_id)
           VALUES ($1, current_date, current_date, 'KBT1', 100, 1000, 100000, 'JPY', 'bob', 'bob-cash',
                   'alice', 'alice-cash', false, '{}', 'issuer', 'accepted', 'matched', 'pending', 1, true, $2)""",
        NUMBER,
        uuid.uuid4(),
    )
    await ours.execute(
        """INSERT INTO dvp_attempts (matching_number, attempt, quantity, amount, hold_id, status)
           VALUES ($1, 1, 100, 100000, $2, 'reserving')""",
        NUMBER,
        uuid.uuid4(),
    )
    yield ours, other, watcher
    for connection in (ours, other, watcher):
        await connection.close()


async def waits_for_a_lock(watcher: asyncpg.Connection, connection: asyncpg.Connection) -> bool:
    pid = connection.get_server_pid()
    event = await watcher.fetchval("SELECT wait_event_type FROM pg_stat_activity WHERE pid = $1", pid)
    return bool(event == "Lock")


async def test_an_answer_that_waited_reads_the_attempt_as_its_writer_committed_it(
    connections: Connections,
) -> None:
    """Another handler holds the instruction and ends the attempt (a refusal); the answer waiting
    for the instruction then reads what that handler committed, not what its own snapshot held.
    Both rows are locked by the read (``FOR UPDATE OF i, a``); with only the instruction locked,
    it read 'reserving' here."""
    ours, other, watcher = connections
    writer = other.transaction()
    await writer.start()
    await other.execute("SELECT 1 FROM dvp_instructions WHERE matching_number = $1 FOR UPDATE", NUMBER)
    async with ours.transaction():
        read = asyncio.create_task(dvp_repo.current(ours, NUMBER, 1))
        await support.eventually(lambda: waits_for_a_lock(watcher, ours))
        await other.execute(
            "UPDATE dvp_attempts SET status = 'refused', reason = 'lack_of_securities' WHERE matching_number = $1",
            NUMBER,
        )
        await other.execute("UPDATE dvp_instructions SET in_flight = false WHERE matching_number = $1", NUMBER)
        await writer.commit()
        found = await read
    assert found is not None
    assert found.status == "refused"
    assert found.instruction.in_flight is False


async def test_an_answer_to_an_attempt_that_does_not_exist_reads_nothing(connections: Connections) -> None:
    ours, _, _ = connections
    assert await dvp_repo.current(ours, NUMBER, 2) is None
    assert await dvp_repo.current(ours, NUMBER + 1, 1) is None
