"""SQL for holds on settlement accounts; records never leave this module."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from decimal import Decimal
from uuid import UUID

import asyncpg

from agents.settlement.domain import Account
from agents.settlement.repo import PLACED_HOLDS, account


async def accounts(connection: asyncpg.Connection, account_ids: Collection[str]) -> dict[str, Account]:
    found = {}
    for account_id in account_ids:
        found_account = await account(connection, account_id)
        if found_account is not None:
            found[account_id] = found_account
    return found


async def held(connection: asyncpg.Connection, account_ids: Collection[str]) -> dict[str, Decimal]:
    """What placed holds keep on each account (only accounts with some): ``repo.PLACED_HOLDS``,
    which costs the same however many holds there are."""
    return await PLACED_HOLDS.totals(connection, list(account_ids))


async def held_by_others(
    connection: asyncpg.Connection, account_ids: Collection[str], hold_id: UUID
) -> dict[str, Decimal]:
    """What is held on each account by every hold but ``hold_id``: what a posting under that hold must leave."""
    rows = await connection.fetch(
        f"""SELECT t.key, t.amount - coalesce(h.amount, 0) AS held FROM ({PLACED_HOLDS.each("$1::text[]")}) AS t
            LEFT JOIN holds h ON h.hold_id = $2 AND h.account_id = t.key AND h.status = 'placed'""",
        list(account_ids),
        hold_id,
    )
    return {r["key"]: r["held"] for r in rows if r["held"] > 0}


async def held_drift(connection: asyncpg.Connection) -> list[tuple[str, Decimal, Decimal]]:
    """Every account whose kept total of placed holds differs from the sum over its placed holds:
    (account, kept, summed). Empty unless a write bypassed migration 0068's trigger."""
    return await PLACED_HOLDS.drift(
        connection,
        "SELECT account_id AS key, sum(amount) AS summed FROM holds WHERE status = 'placed' GROUP BY account_id",
    )


async def hold_exists(connection: asyncpg.Connection, hold_id: UUID) -> bool:
    return bool(await connection.fetchval("SELECT true FROM holds WHERE hold_id = $1 LIMIT 1", hold_id))


async def place(
    connection: asyncpg.Connection, hold_id: UUID, owner: str, legs: Sequence[tuple[str, Decimal]], placed_by: str
) -> None:
    """Hold ``legs`` for ``owner`` under ``hold_id``, as ``placed_by`` asked (the brokerage whose
    ``funds.hold`` placed it; only it may release, revise or settle it: ``placer_other_than``)."""
    await connection.executemany(
        """INSERT INTO holds (hold_id, account_id, owner, amount, status, placed_by)
           VALUES ($1, $2, $3, $4, 'placed', $5)""",
        [(hold_id, account_id, owner, amount, placed_by) for account_id, amount in legs],
    )


async def placer_other_than(connection: asyncpg.Connection, hold_id: UUID, sender: str) -> str | None:
    """Who placed ``hold_id``, when that is known and is not ``sender``: settlement itself for a
    cover or an earmark, or another brokerage. None for ``sender``'s own hold, for an id no hold
    has, and for a hold placed before its placer was recorded (migration 0081)."""
    placer: str | None = await connection.fetchval(
        "SELECT placed_by FROM holds WHERE hold_id = $1 AND placed_by <> $2 LIMIT 1", hold_id, sender
    )
    return placer


async def release(connection: asyncpg.Connection, hold_id: UUID) -> Decimal:
    """Free what is still held under ``hold_id``; returns how much."""
    released: Decimal = await connection.fetchval(
        """WITH freed AS (UPDATE holds SET status = 'released', closed_at = now()
                          WHERE hold_id = $1 AND status = 'placed' RETURNING amount)
           SELECT coalesce(sum(amount), 0) FROM freed""",
        hold_id,
    )
    return released


async def consume(connection: asyncpg.Connection, hold_id: UUID) -> None:
    """Mark the hold as about to be settled, so the entry's debits are not blocked by it."""
    await connection.execute(
        "UPDATE holds SET status = 'consumed', closed_at = now() WHERE hold_id = $1 AND status = 'placed'", hold_id
    )


async def close(connection: asyncpg.Connection, hold_id: UUID, entry_id: int) -> Decimal:
    """Tie the consumed hold to the entry; return how much more was held than the entry debited."""
    await connection.execute(
        "UPDATE holds SET entry_id = $2 WHERE hold_id = $1 AND status = 'consumed'", hold_id, entry_id
    )
    released: Decimal = await connection.fetchval(
        """SELECT greatest(coalesce((SELECT sum(amount) FROM holds WHERE hold_id = $1 AND status = 'consumed'), 0)
                  + coalesce((SELECT sum(amount) FROM postings p
                              WHERE p.entry_id = $2 AND p.amount < 0
                                AND p.account_id IN (SELECT account_id FROM holds WHERE hold_id = $1)), 0), 0)""",
        hold_id,
        entry_id,
    )
    return released


async def placed(connection: asyncpg.Connection, hold_id: UUID) -> dict[str, Decimal]:
    """What ``hold_id`` still holds on each account, locking its rows."""
    rows = await connection.fetch(
        "SELECT account_id, amount FROM holds WHERE hold_id = $1 AND status = 'placed' FOR UPDATE", hold_id
    )
    return {r["account_id"]: r["amount"] for r in rows}


async def owner_of(connection: asyncpg.Connection, hold_id: UUID) -> str | None:
    owner: str | None = await connection.fetchval("SELECT owner FROM holds WHERE hold_id = $1 LIMIT 1", hold_id)
    return owner


async def revise(connection: asyncpg.Connection, hold_id: UUID, amounts: dict[str, Decimal]) -> None:
    """Set each placed row of ``hold_id`` to its new amount; a row revised to nothing is released."""
    for account_id, amount in amounts.items():
        if amount > 0:
            await connection.execute(
                "UPDATE holds SET amount = $3 WHERE hold_id = $1 AND account_id = $2 AND status = 'placed'",
                hold_id,
                account_id,
                amount,
            )
        else:
            await connection.execute(
                """UPDATE holds SET status = 'released', closed_at = now()
                   WHERE hold_id = $1 AND account_id = $2 AND status = 'placed'""",
                hold_id,
                account_id,
            )
