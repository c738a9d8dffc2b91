"""SQL for custody's own books: accounts, positions and their journal, locks. Records leave
this module as the typed values of ``domain`` and ``schemas.custody``, never as rows.

Every change to a position goes through ``save_position``, which writes the new sub-balances
and the client's next journal entry together; the journal is what holdings deltas read. A
transaction that changes positions first locks the clients' rows (in client order) and then
the positions (in account, issue order), so two transactions never wait on each other in a
circle, and a client's journal numbers commit in order.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from uuid import UUID

import asyncpg

from agents.custody.domain import Account, Balances, Lock
from schemas.custody import HoldingDelta, LockView, PlaceLock, PositionQuantity, PositionView


async def open_account(conn: asyncpg.Connection, account_id: str, client: str, custodian: str) -> bool:
    await conn.execute("INSERT INTO clients (client) VALUES ($1) ON CONFLICT DO NOTHING", client)
    done = await conn.fetchval(
        """INSERT INTO accounts (account_id, client, custodian) VALUES ($1, $2, $3)
           ON CONFLICT DO NOTHING RETURNING true""",
        account_id,
        client,
        custodian,
    )
    return bool(done)


def _account(row: asyncpg.Record) -> Account:
    return Account(row["account_id"], row["client"], row["custodian"], row["status"])


async def account(conn: asyncpg.Connection, account_id: str) -> Account | None:
    row = await conn.fetchrow("SELECT * FROM accounts WHERE account_id = $1", account_id)
    return _account(row) if row else None


async def accounts(conn: asyncpg.Connection, client: str | None = None) -> list[Account]:
    rows = await conn.fetch("SELECT * FROM accounts WHERE $1::text IS NULL OR client = $1 ORDER BY account_id", client)
    return [_account(r) for r in rows]


async def lock_clients(conn: asyncpg.Connection, clients: Iterable[str]) -> None:
    await conn.execute(
        "SELECT 1 FROM clients WHERE client = ANY($1::text[]) ORDER BY client FOR UPDATE", sorted(set(clients))
    )


def _balances(row: asyncpg.Record) -> Balances:
    return Balances(row["available"], row["locked"], row["pending_delivery"], row["pending_receipt"])


async def positions_for_update(conn: asyncpg.Connection, account_id: str, issues: Sequence[str]) -> dict[str, Balances]:
    rows = await conn.fetch(
        """SELECT * FROM positions WHERE account_id = $1 AND issue_code = ANY($2::text[])
           ORDER BY issue_code FOR UPDATE""",
        account_id,
        list(issues),
    )
    return {r["issue_code"]: _balances(r) for r in rows}


async def position_for_update(conn: asyncpg.Connection, account_id: str, issue: str) -> Balances | None:
    return (await positions_for_update(conn, account_id, [issue])).get(issue)


async def save_position(
    conn: asyncpg.Connection, acct: Account, issue: str, balances: Balances, cause: str, reference: str, now: datetime
) -> HoldingDelta:
    """Write a position's new sub-balances and the client's next journal entry."""
    await conn.execute(
        """INSERT INTO positions (account_id, issue_code, available, locked, pending_delivery, pending_receipt)
           VALUES ($1, $2, $3, $4, $5, $6)
           ON CONFLICT (account_id, issue_code) DO UPDATE SET available = $3, locked = $4,
               pending_delivery = $5, pending_receipt = $6""",
        acct.account_id,
        issue,
        balances.available,
        balances.locked,
        balances.pending_delivery,
        balances.pending_receipt,
    )
    sequence = await conn.fetchval(
        "UPDATE clients SET last_sequence = last_sequence + 1 WHERE client = $1 RETURNING last_sequence",
        acct.client,
    )
    await conn.execute(
        """INSERT INTO position_changes (client, sequence, account_id, issue_code, available, locked,
               pending_delivery, pending_receipt, cause, reference, changed_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)""",
        acct.client,
        sequence,
        acct.account_id,
        issue,
        balances.available,
        balances.locked,
        balances.pending_delivery,
        balances.pending_receipt,
        cause,
        reference,
        now,
    )
    return HoldingDelta(
        sequence=sequence,
        account=acct.account_id,
        custodian=acct.custodian,
        issue_code=issue,
        balances=balances.view(),
        cause=cause,
        changed_at=now,
    )


async def last_sequence(conn: asyncpg.Connection, client: str) -> int:
    return int(await conn.fetchval("SELECT last_sequence FROM clients WHERE client = $1", client) or 0)


async def deltas(
    conn: asyncpg.Connection, client: str, cursor: int, custodian: str | None, limit: int
) -> tuple[list[HoldingDelta], int, bool]:
    """The client's changes after ``cursor``: (those of ``custodian`` or all, next cursor, more?)."""
    rows = await conn.fetch(
        """SELECT c.*, a.custodian FROM position_changes c JOIN accounts a USING (account_id)
           WHERE c.client = $1 AND c.sequence > $2 ORDER BY c.sequence LIMIT $3""",
        client,
        cursor,
        limit + 1,
    )
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = rows[-1]["sequence"] if rows else cursor
    found = [
        HoldingDelta(
            sequence=r["sequence"],
            account=r["account_id"],
            custodian=r["custodian"],
            issue_code=r["issue_code"],
            balances=_balances(r).view(),
            cause=r["cause"],
            changed_at=r["changed_at"],
        )
        for r in rows
        if custodian is None or r["custodian"] == custodian
    ]
    return found, next_cursor, more


async def positions(
    conn: asyncpg.Connection, client: str | None = None, custodian: str | None = None
) -> list[PositionView]:
    rows = await conn.fetch(
        """SELECT p.*, a.custodian FROM positions p JOIN accounts a USING (account_id)
           WHERE ($1::text IS NULL OR a.client = $1) AND ($2::text IS NULL OR a.custodian = $2)
           ORDER BY p.account_id, p.issue_code""",
        client,
        custodian,
    )
    views = await lock_views(conn, client)
    return [
        PositionView(
            account=r["account_id"],
            custodian=r["custodian"],
            issue_code=r["issue_code"],
            balances=_balances(r).view(),
            locks=tuple(v for v in views.get((r["account_id"], r["issue_code"]), ())),
        )
        for r in rows
    ]


# --- locks ----------------------------------------------------------------------------------


async def insert_lock(conn: asyncpg.Connection, request: PlaceLock, digest: str, now: datetime) -> None:
    await conn.execute(
        """INSERT INTO locks (lock_id, account_id, client, lock_holder, reason, obligation_reference,
               request_digest, placed_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)""",
        request.lock_id,
        request.account,
        request.client,
        request.lock_holder,
        request.reason,
        request.obligation_reference,
        digest,
        now,
    )
    await conn.executemany(
        "INSERT INTO lock_positions (lock_id, issue_code, placed, quantity) VALUES ($1, $2, $3, $3)",
        [(request.lock_id, p.issue_code, p.quantity) for p in request.positions],
    )


async def lock(conn: asyncpg.Connection, lock_id: UUID, *, for_update: bool = False) -> Lock | None:
    row = await conn.fetchrow("SELECT * FROM locks WHERE lock_id = $1" + (" FOR UPDATE" if for_update else ""), lock_id)
    if row is None:
        return None
    parts = await conn.fetch("SELECT * FROM lock_positions WHERE lock_id = $1 ORDER BY issue_code", lock_id)
    return Lock(
        lock_id=row["lock_id"],
        account_id=row["account_id"],
        client=row["client"],
        lock_holder=row["lock_holder"],
        reason=row["reason"],
        obligation_reference=row["obligation_reference"],
        digest=row["request_digest"],
        status=row["status"],
        quantities={p["issue_code"]: (p["placed"], p["quantity"]) for p in parts},
    )


async def set_lock_quantity(conn: asyncpg.Connection, lock_id: UUID, issue: str, quantity: int) -> None:
    await conn.execute(
        "UPDATE lock_positions SET quantity = $3 WHERE lock_id = $1 AND issue_code = $2", lock_id, issue, quantity
    )


async def set_lock_status(conn: asyncpg.Connection, lock_id: UUID, status: str) -> None:
    await conn.execute("UPDATE locks SET status = $2 WHERE lock_id = $1", lock_id, status)


async def lock_views(conn: asyncpg.Connection, client: str | None) -> dict[tuple[str, str], list[LockView]]:
    rows = await conn.fetch(
        """SELECT l.*, p.issue_code, p.quantity FROM locks l JOIN lock_positions p USING (lock_id)
           WHERE l.status = 'active' AND p.quantity > 0 AND ($1::text IS NULL OR l.client = $1)
           ORDER BY l.placed_at, l.lock_id, p.issue_code""",
        client,
    )
    views: dict[tuple[str, str], list[LockView]] = {}
    for r in rows:
        views.setdefault((r["account_id"], r["issue_code"]), []).append(
            LockView(
                lock_id=r["lock_id"],
                issue_code=r["issue_code"],
                quantity=r["quantity"],
                lock_holder=r["lock_holder"],
                reason=r["reason"],
                obligation_reference=r["obligation_reference"],
            )
        )
    return views


async def release_record(conn: asyncpg.Connection, release_id: UUID) -> tuple[UUID, str, list[PositionQuantity]] | None:
    row = await conn.fetchrow("SELECT * FROM lock_releases WHERE release_id = $1", release_id)
    if row is None:
        return None
    released = [PositionQuantity.model_validate(p) for p in json.loads(row["released"])]
    return row["lock_id"], row["request_digest"], released


async def insert_release(
    conn: asyncpg.Connection,
    release_id: UUID,
    lock_id: UUID,
    digest: str,
    released: Sequence[PositionQuantity],
    now: datetime,
) -> None:
    await conn.execute(
        """INSERT INTO lock_releases (release_id, lock_id, request_digest, released, released_at)
           VALUES ($1, $2, $3, $4, $5)""",
        release_id,
        lock_id,
        digest,
        json.dumps([p.model_dump() for p in released]),
        now,
    )
