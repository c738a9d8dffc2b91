"""SQL for the customer terminal's brokered orders and the brokerage's view; records never leave this module."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg


async def record_order(connection: asyncpg.Connection, user_id: str, client_order_id: str) -> None:
    await connection.execute(
        "INSERT INTO brokered_orders (user_id, client_order_id) VALUES ($1, $2)", user_id, client_order_id
    )


async def update_order(
    connection: asyncpg.Connection, user_id: str, client_order_id: str, status: str, **values: object
) -> bool:
    """Record what the brokerage said about an order; False if there is no such order."""
    names = ["status", *values]
    sets = ", ".join(f"{n} = ${i}" for i, n in enumerate(names, start=3))
    done = await connection.fetchval(
        f"""UPDATE brokered_orders SET {sets}, updated_at = now()
            WHERE user_id = $1 AND client_order_id = $2 RETURNING true""",
        user_id,
        client_order_id,
        status,
        *values.values(),
    )
    return bool(done)


async def orders(connection: asyncpg.Connection, user_id: str) -> list[dict[str, Any]]:
    rows = await connection.fetch("SELECT * FROM brokered_orders WHERE user_id = $1 ORDER BY updated_at", user_id)
    return [dict(r) for r in rows]


async def save_view(connection: asyncpg.Connection, user_id: str, view: str) -> None:
    await connection.execute(
        """INSERT INTO customer_views (user_id, view) VALUES ($1, $2::jsonb)
           ON CONFLICT (user_id) DO UPDATE SET view = excluded.view, received_at = now()""",
        user_id,
        view,
    )


async def view(connection: asyncpg.Connection, user_id: str) -> str | None:
    text: str | None = await connection.fetchval("SELECT view FROM customer_views WHERE user_id = $1", user_id)
    return text


async def record_identification(
    connection: asyncpg.Connection, request_id: UUID, user_id: str, customer_id: str
) -> None:
    await connection.execute(
        "INSERT INTO identifications (request_id, user_id, customer_id) VALUES ($1, $2, $3)",
        request_id,
        user_id,
        customer_id,
    )


async def answer_identification(
    connection: asyncpg.Connection, request_id: UUID, status: str, reason: str | None = None, detail: str | None = None
) -> None:
    """The brokerage answered (a view) or refused; an identification from before issue 10 has no row."""
    await connection.execute(
        """UPDATE identifications SET status = $2, reason = $3, detail = $4, updated_at = now()
           WHERE request_id = $1""",
        request_id,
        status,
        reason,
        detail,
    )
