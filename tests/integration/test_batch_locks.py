"""Row locks a batch already holds (broker.batch_locks, issue 8): taken once per batch run all at
once, every time anywhere else, and really held until the commit. Against the real PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from broker.batch_locks import BatchLocks

LOCK = "SELECT 1 FROM accounts WHERE account_id = $1 FOR NO KEY UPDATE"


@pytest.fixture
async def connections(database: str) -> AsyncIterator[tuple[asyncpg.Connection, asyncpg.Connection]]:
    ours = await asyncpg.connect(database, server_settings={"search_path": "settlement"})
    other = await asyncpg.connect(database, server_settings={"search_path": "settlement"})
    for account in ("acct-a", "acct-b"):
        await ours.execute(
            """INSERT INTO accounts (account_id, owner_user_id, currency, kind)
               VALUES ($1, 'someone', 'JPY', 'customer')""",
            account,
        )
    yield ours, other
    await ours.close()
    await other.close()


async def locked_elsewhere(other: asyncpg.Connection, account: str) -> bool:
    async with other.transaction():
        try:
            await other.execute(LOCK + " NOWAIT", account)
        except asyncpg.LockNotAvailableError:
            return True
    return False


async def test_a_batch_takes_each_lock_once_and_holds_it_until_it_ends(
    connections: tuple[asyncpg.Connection, asyncpg.Connection],
) -> None:
    ours, other = connections
    locks = BatchLocks("test")
    async with ours.transaction(), locks.batch(ours, ()):
        for account in ("acct-a", "acct-b", "acct-a", "acct-a"):
            await locks.lock(ours, ("account", account), LOCK, account)
        assert locks.taken == 2
        assert await locked_elsewhere(other, "acct-a") and await locked_elsewhere(other, "acct-b")
    assert not await locked_elsewhere(other, "acct-a")


class RolledBack(Exception):
    pass


async def test_outside_a_batch_every_lock_is_taken_every_time(
    connections: tuple[asyncpg.Connection, asyncpg.Connection],
) -> None:
    """Why: group commit runs a refused batch again a savepoint each, and a rolled-back
    savepoint releases the locks taken in it; the next delivery must take them again."""
    ours, other = connections
    locks = BatchLocks("test")
    async with ours.transaction():
        with pytest.raises(RolledBack):
            async with ours.transaction():
                await locks.lock(ours, ("account", "acct-a"), LOCK, "acct-a")
                raise RolledBack
        assert not await locked_elsewhere(other, "acct-a")  # released with its savepoint
        async with ours.transaction():
            await locks.lock(ours, ("account", "acct-a"), LOCK, "acct-a")
        assert await locked_elsewhere(other, "acct-a")
    assert locks.taken == 2
    async with locks.batch(ours, ()), ours.transaction():
        await locks.lock(ours, ("account", "acct-a"), LOCK, "acct-a")
    async with locks.batch(ours, ()), ours.transaction():  # a new batch remembers nothing of the last
        await locks.lock(ours, ("account", "acct-a"), LOCK, "acct-a")
    assert locks.taken == 4


async def test_a_set_of_rows_is_held_only_when_every_row_was_there_to_lock(
    connections: tuple[asyncpg.Connection, asyncpg.Connection],
) -> None:
    """A statement locking several accounts at once (settlement's ``lock_accounts``) holds them
    for the batch only when it locked all of them: an account missing then, opened meanwhile by
    another transaction, was not locked, so the next handler asks again and locks it."""
    ours, other = connections
    several = "SELECT 1 FROM accounts WHERE account_id = ANY($1::text[]) ORDER BY account_id FOR NO KEY UPDATE"
    locks = BatchLocks("test")
    key = ("accounts", ("acct-a", "acct-c"))
    async with ours.transaction(), locks.batch(ours, ()):
        await locks.lock(ours, key, several, ["acct-a", "acct-c"], rows=2)  # acct-c is not open yet
        await other.execute(
            """INSERT INTO accounts (account_id, owner_user_id, currency, kind)
               VALUES ('acct-c', 'someone', 'JPY', 'customer')"""
        )
        await locks.lock(ours, key, several, ["acct-a", "acct-c"], rows=2)
        assert locks.taken == 2
        assert await locked_elsewhere(other, "acct-c")
        await locks.lock(ours, key, several, ["acct-a", "acct-c"], rows=2)  # both were locked: held now
        assert locks.taken == 2
