"""SQL for the line's obligations, holdings refreshes in flight and collateral locks."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

import asyncpg

from agents.credit.domain import ValuedHolding
from agents.credit.line_repo import Collateral, LockStatus, Obligation, ObligationStatus


def _obligation(row: asyncpg.Record) -> Obligation:
    values = {k: row[k] for k in Obligation.__dataclass_fields__}
    return Obligation(**{**values, "status": ObligationStatus(row["status"])})


def _collateral(row: asyncpg.Record) -> Collateral:
    values = {k: row[k] for k in Collateral.__dataclass_fields__}
    return Collateral(**{**values, "status": LockStatus(row["status"])})


async def insert(
    conn: asyncpg.Connection,
    obligation_id: UUID,
    purchaser: str,
    card_number: str,
    shortfall: int,
    deadline: datetime,
    now: datetime,
) -> bool:
    status = await conn.execute(
        """INSERT INTO obligations (obligation_id, purchaser, card_number, shortfall, status, deadline,
                                    created_at, updated_at)
           VALUES ($1, $2, $3, $4, 'refreshing', $5, $6, $6) ON CONFLICT DO NOTHING""",
        obligation_id,
        purchaser,
        card_number,
        shortfall,
        deadline,
        now,
    )
    return bool(status.endswith("1"))


async def get(conn: asyncpg.Connection, obligation_id: UUID) -> Obligation | None:
    row = await conn.fetchrow("SELECT * FROM obligations WHERE obligation_id = $1 FOR UPDATE", obligation_id)
    return _obligation(row) if row else None


async def update(conn: asyncpg.Connection, obligation_id: UUID, now: datetime, **values: object) -> None:
    allowed = {"status", "accumulated", "grantable", "reason", "detail", "advanced", "advance_reference",
               "proceeds", "surplus", "deficit"}  # fmt: skip
    unknown = set(values) - allowed
    if unknown:
        raise ValueError(f"not obligation columns: {unknown}")
    sets = ", ".join(f"{name} = ${i}" for i, name in enumerate(values, start=3))
    args = [v.value if isinstance(v, ObligationStatus) else v for v in values.values()]
    await conn.execute(
        f"UPDATE obligations SET updated_at = $2, {sets} WHERE obligation_id = $1", obligation_id, now, *args
    )


async def listing(conn: asyncpg.Connection, purchaser: str | None = None) -> list[Obligation]:
    rows = await conn.fetch(
        "SELECT * FROM obligations WHERE $1::text IS NULL OR purchaser = $1 ORDER BY created_at", purchaser
    )
    return [_obligation(r) for r in rows]


async def overdue(conn: asyncpg.Connection, now: datetime) -> list[Obligation]:
    rows = await conn.fetch(
        """SELECT * FROM obligations WHERE status IN ('refreshing', 'locking') AND deadline <= $1
           ORDER BY deadline FOR UPDATE SKIP LOCKED""",
        now,
    )
    return [_obligation(r) for r in rows]


async def refreshing_for(conn: asyncpg.Connection, purchaser: str) -> list[UUID]:
    rows = await conn.fetch(
        "SELECT obligation_id FROM obligations WHERE purchaser = $1 AND status = 'refreshing' ORDER BY created_at",
        purchaser,
    )
    return [r["obligation_id"] for r in rows]


# -- refreshes -----------------------------------------------------------------------------------


async def add_refresh(
    conn: asyncpg.Connection,
    request_id: UUID,
    purchaser: str,
    custodian: str,
    obligation_id: UUID | None,
    now: datetime,
) -> None:
    await conn.execute(
        """INSERT INTO refresh_requests (request_id, purchaser, custodian, obligation_id, requested_at)
           VALUES ($1, $2, $3, $4, $5)""",
        request_id,
        purchaser,
        custodian,
        obligation_id,
        now,
    )


async def answer_refresh(conn: asyncpg.Connection, request_id: UUID) -> tuple[str, str, UUID | None] | None:
    row = await conn.fetchrow(
        """UPDATE refresh_requests SET answered = true WHERE request_id = $1 AND NOT answered
           RETURNING purchaser, custodian, obligation_id""",
        request_id,
    )
    return (row["purchaser"], row["custodian"], row["obligation_id"]) if row else None


async def refreshes_pending(conn: asyncpg.Connection, obligation_id: UUID) -> int:
    count: int = await conn.fetchval(
        "SELECT count(*) FROM refresh_requests WHERE obligation_id = $1 AND NOT answered", obligation_id
    )
    return count


# -- collateral ----------------------------------------------------------------------------------


async def add_collateral(
    conn: asyncpg.Connection, lock_id: UUID, obligation_id: UUID, purchaser: str, account: str, v: ValuedHolding,
    now: datetime,
) -> None:  # fmt: skip
    await conn.execute(
        """INSERT INTO collateral (lock_id, obligation_id, purchaser, custodian, account, issue_code, quantity, price,
               price_source, price_as_of, price_age_seconds, market_value, coefficient, credit_value, status,
               updated_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, 'requested', $15)""",
        lock_id,
        obligation_id,
        purchaser,
        v.holding.custodian,
        account,
        v.holding.issue_code,
        v.holding.quantity,
        v.price.price,
        v.price.source.value,
        v.price.as_of,
        int(v.price.age.total_seconds()),
        v.market_value,
        v.coefficient,
        v.credit_value,
        now,
    )


async def collateral(conn: asyncpg.Connection, lock_id: UUID) -> Collateral | None:
    row = await conn.fetchrow("SELECT * FROM collateral WHERE lock_id = $1 FOR UPDATE", lock_id)
    return _collateral(row) if row else None


async def collateral_of(conn: asyncpg.Connection, obligation_id: UUID) -> list[Collateral]:
    rows = await conn.fetch(
        "SELECT * FROM collateral WHERE obligation_id = $1 ORDER BY credit_value DESC, lock_id FOR UPDATE",
        obligation_id,
    )
    return [_collateral(r) for r in rows]


async def all_collateral(conn: asyncpg.Connection, purchaser: str | None = None) -> list[Collateral]:
    rows = await conn.fetch(
        "SELECT * FROM collateral WHERE $1::text IS NULL OR purchaser = $1 ORDER BY purchaser, updated_at", purchaser
    )
    return [_collateral(r) for r in rows]


async def set_lock(
    conn: asyncpg.Connection,
    lock_id: UUID,
    status: LockStatus,
    now: datetime,
    *,
    cursor: int | None = None,
    sold: int | None = None,
    proceeds: int | None = None,
) -> None:
    await conn.execute(
        """UPDATE collateral SET status = $2, updated_at = $3, lock_cursor = coalesce($4, lock_cursor),
               quantity_sold = coalesce($5, quantity_sold), proceeds = coalesce($6, proceeds)
           WHERE lock_id = $1""",
        lock_id,
        status.value,
        now,
        cursor,
        sold,
        proceeds,
    )
