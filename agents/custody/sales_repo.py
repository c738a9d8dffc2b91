"""SQL for sales on the lock holder's instruction and their fills."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from uuid import UUID

import asyncpg


@dataclass(frozen=True, slots=True)
class Sale:
    instruction_id: UUID
    lock_id: UUID
    account_id: str
    client: str
    issue_code: str
    quantity: int
    limit_price: Decimal | None
    proceeds_account: str
    lock_holder: str
    digest: str
    client_order_id: str
    cert_id: UUID | None
    status: str
    unsold: int
    detail: str
    payover: str | None = None


@dataclass(frozen=True, slots=True)
class SaleFill:
    matching_number: int
    price: Decimal
    quantity: int
    transferred: bool
    settled: bool | None
    amount: Decimal | None


def _sale(row: asyncpg.Record) -> Sale:
    return Sale(
        row["instruction_id"],
        row["lock_id"],
        row["account_id"],
        row["client"],
        row["issue_code"],
        row["quantity"],
        row["limit_price"],
        row["proceeds_account"],
        row["lock_holder"],
        row["request_digest"],
        row["client_order_id"],
        row["cert_id"],
        row["status"],
        row["unsold"],
        row["detail"],
        row["payover"],
    )


async def insert(conn: asyncpg.Connection, s: Sale, now: datetime) -> None:
    await conn.execute(
        """INSERT INTO sales (instruction_id, lock_id, account_id, client, issue_code, quantity, limit_price,
               proceeds_account, lock_holder, request_digest, client_order_id, status, instructed_at, updated_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13)""",
        s.instruction_id,
        s.lock_id,
        s.account_id,
        s.client,
        s.issue_code,
        s.quantity,
        s.limit_price,
        s.proceeds_account,
        s.lock_holder,
        s.digest,
        s.client_order_id,
        s.status,
        now,
    )


async def sale(conn: asyncpg.Connection, instruction_id: UUID) -> Sale | None:
    row = await conn.fetchrow("SELECT * FROM sales WHERE instruction_id = $1 FOR UPDATE", instruction_id)
    return _sale(row) if row else None


async def sale_by(conn: asyncpg.Connection, column: str, value: object) -> Sale | None:
    assert column in ("client_order_id", "reissue_request_id", "cert_id")
    row = await conn.fetchrow(f"SELECT * FROM sales WHERE {column} = $1 FOR UPDATE", value)
    return _sale(row) if row else None


async def sale_of_fill(conn: asyncpg.Connection, matching_number: int) -> Sale | None:
    row = await conn.fetchrow(
        "SELECT s.* FROM sales s JOIN sale_fills f USING (instruction_id) WHERE f.matching_number = $1 FOR UPDATE OF s",
        matching_number,
    )
    return _sale(row) if row else None


async def update(conn: asyncpg.Connection, instruction_id: UUID, now: datetime, **fields: object) -> None:
    allowed = {"status", "cert_id", "reissue_request_id", "unsold", "detail", "payover"}
    assert set(fields) <= allowed
    sets = ", ".join(f"{name} = ${n}" for n, name in enumerate(fields, start=3))
    await conn.execute(
        f"UPDATE sales SET updated_at = $2, {sets} WHERE instruction_id = $1",
        instruction_id,
        now,
        *fields.values(),
    )


async def add_fill(
    conn: asyncpg.Connection, instruction_id: UUID, matching_number: int, price: Decimal, qty: int
) -> None:
    await conn.execute(
        """INSERT INTO sale_fills (matching_number, instruction_id, price, quantity) VALUES ($1, $2, $3, $4)
           ON CONFLICT DO NOTHING""",
        matching_number,
        instruction_id,
        price,
        qty,
    )


async def remove_fill(conn: asyncpg.Connection, matching_number: int) -> None:
    await conn.execute("DELETE FROM sale_fills WHERE matching_number = $1 AND NOT transferred", matching_number)


async def fill(conn: asyncpg.Connection, matching_number: int) -> SaleFill | None:
    row = await conn.fetchrow("SELECT * FROM sale_fills WHERE matching_number = $1", matching_number)
    return _fill(row) if row else None


def _fill(row: asyncpg.Record) -> SaleFill:
    return SaleFill(
        row["matching_number"], row["price"], row["quantity"], row["transferred"], row["settled"], row["amount"]
    )


async def mark_transferred(conn: asyncpg.Connection, matching_number: int, amount: Decimal) -> None:
    await conn.execute(
        "UPDATE sale_fills SET transferred = true, amount = $2 WHERE matching_number = $1", matching_number, amount
    )


async def mark_settled(conn: asyncpg.Connection, matching_number: int, settled: bool) -> None:
    await conn.execute("UPDATE sale_fills SET settled = $2 WHERE matching_number = $1", matching_number, settled)


async def fills(conn: asyncpg.Connection, instruction_id: UUID) -> list[SaleFill]:
    rows = await conn.fetch(
        "SELECT * FROM sale_fills WHERE instruction_id = $1 ORDER BY matching_number", instruction_id
    )
    return [_fill(r) for r in rows]
