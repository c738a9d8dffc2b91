"""SQL for custody's reservations as the securities leg of a book-entry trade."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg


@dataclass(frozen=True, slots=True)
class Reservation:
    instruction: int
    attempt: int
    issue_code: str
    quantity: int
    deliverer_account: str
    receiver_account: str
    status: str


async def reservation(conn: asyncpg.Connection, instruction: int) -> Reservation | None:
    row = await conn.fetchrow("SELECT * FROM reservations WHERE instruction = $1 FOR UPDATE", instruction)
    if row is None:
        return None
    return Reservation(
        row["instruction"],
        row["attempt"],
        row["issue_code"],
        row["quantity"],
        row["deliverer_account"],
        row["receiver_account"],
        row["status"],
    )


async def reserve(conn: asyncpg.Connection, r: Reservation, now: datetime) -> None:
    """A new reservation, or a new attempt of an instruction whose last attempt was released."""
    await conn.execute(
        """INSERT INTO reservations (instruction, attempt, issue_code, quantity, deliverer_account,
               receiver_account, status, reserved_at) VALUES ($1, $2, $3, $4, $5, $6, 'reserved', $7)
           ON CONFLICT (instruction) DO UPDATE SET attempt = $2, issue_code = $3, quantity = $4,
               deliverer_account = $5, receiver_account = $6, status = 'reserved', reserved_at = $7,
               decided_at = NULL""",
        r.instruction,
        r.attempt,
        r.issue_code,
        r.quantity,
        r.deliverer_account,
        r.receiver_account,
        now,
    )


async def decide(conn: asyncpg.Connection, instruction: int, status: str, now: datetime) -> None:
    await conn.execute(
        "UPDATE reservations SET status = $2, decided_at = $3 WHERE instruction = $1", instruction, status, now
    )


async def open_reservations(conn: asyncpg.Connection) -> list[Reservation]:
    rows = await conn.fetch("SELECT * FROM reservations WHERE status = 'reserved' ORDER BY instruction")
    return [
        Reservation(
            r["instruction"],
            r["attempt"],
            r["issue_code"],
            r["quantity"],
            r["deliverer_account"],
            r["receiver_account"],
            r["status"],
        )
        for r in rows
    ]
