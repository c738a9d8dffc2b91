"""SQL for holds on settlement accounts; records never leave this module."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from decimal import Decimal
from uuid import UUID

import asyncpg

from agents.settlement.domain import Account
from agents.settlement.repo import account


async def accounts(connection: asyncpg.Connection, account_ids: Collection[str]) -> dict[str, Account]:
    found = {}
    for account_id in account_ids:
        found_account = await account(connection, account_id)
        if found_account is not None:
            found[account_id] = found_account
    return found


async def held(connection: asyncpg.Connection, account_ids: Collection[str]) -> dict[str, Decimal]:
    """What placed holds keep on each account (only accounts with some): the total is kept by a
    trigger on ``holds`` (migration 0068), so it costs the same however many holds there are."""
    rows = await connection.fetch(
        "SELECT account_id, amount FROM placed_holds WHERE account_id = ANY($1::text[]) AND amount > 0",
        list(account_ids),
    )
    return {r["account_id"]: r["amount"] for r in rows}


async def held_by_others(
    connection: asyncpg.Connection, account_ids: Collection[str], hold_id: UUID
) -> dict[str, Decimal]:
    """What is held on each account by every hold but ``hold_id``: what a posting under that hold must leave."""
    rows = await connection.fetch(
        """SELECT p.account_id, p.amount - coalesce(
                      (SELECT h.amount FROM holds h
                        WHERE h.hold_id = $2 AND h.account_id = p.account_id AND h.status = 'placed'), 0) AS held
           FROM placed_holds p WHERE p.account_id = ANY($1::text[])""",
        list(account_ids),
        hold_id,
    )
    return {r["account_id"]: r["held"] for r in rows if r["held"] > 0}


async def held_drift(connection: asyncpg.Connection) -> list[tuple[str, Decimal, Decimal]]:
    """Every account whose kept total of placed holds differs from the sum over its placed holds:
    (account, kept, summed). Empty unless migration 0068's trigger missed a write."""
    rows = await connection.fetch(
        """SELECT coalesce(p.account_id, s.account_id) AS account_id,
                  coalesce(p.amount, 0) AS kept, coalesce(s.summed, 0) AS summed
           FROM placed_holds p
           FULL JOIN (SELECT account_id, sum(amount) AS summed FROM holds
                      WHERE status = 'placed' GROUP BY account_id) s ON s.account_id = p.account_id
           WHERE coalesce(p.amount, 0) <> coalesce(s.summed, 0)"""
    )
    return [(r["account_id"], r["kept"], r["summed"]) for r in rows]


async def hold_exists(connection: asyncpg.Connection, hold_id: UUID) -> bool:
    return bool(await connection.fetchval("SELECT true FROM holds WHERE hold_id = $1 LIMIT 1", hold_id))


async def place(connection: asyncpg.Connection, hold_id: UUID, owner: str, legs: Sequence[tuple[str, Decimal]]) -> None:
    await connection.executemany(
        "INSERT INTO holds (hold_id, account_id, owner, amount, status) VALUES ($1, $2, $3, $4, 'placed')",
        [(hold_id, account_id, owner, amount) for account_id, amount in legs],
    )


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
