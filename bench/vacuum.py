"""What the bench does for its database that an operator's autovacuum settings would do.

Every running total's change table churns every second (migration 0073): with PostgreSQL's
default of a minute between autovacuum rounds (``autovacuum_naptime``), their dead rows slow
every read of a total as the minute goes on, and order entry sustained for 60 s fell from about
490 to 300 orders/s (docs/performance.md, stop 21). compose.yaml runs PostgreSQL with a 5 s
naptime; the bench, which may not configure a server it shares, vacuums those tables of its own
throw-away database every ``EVERY_S`` seconds instead, as such a server's autovacuum would.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

import asyncpg

from agents.exchange.order_repo import OPEN_BUY_EXPOSURE
from agents.exchange.standing_repo import STANDING_COVER_DRAWN
from agents.settlement.repo import ACCOUNT_BALANCES, PLACED_HOLDS

EVERY_S = 5.0
CHANGE_TABLES = [total.changes for total in (OPEN_BUY_EXPOSURE, STANDING_COVER_DRAWN, PLACED_HOLDS, ACCOUNT_BALANCES)]


@asynccontextmanager
async def vacuuming(database_url: str) -> AsyncIterator[None]:
    """Vacuum the running totals' change tables of ``database_url`` every ``EVERY_S`` s while open."""
    connection = await asyncpg.connect(database_url)
    tables = await connection.fetch(
        """SELECT format('%I.%I', n.nspname, c.relname) AS name FROM pg_class c
           JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'r' AND c.relname = ANY($1)""",
        CHANGE_TABLES,
    )
    assert len(tables) == len(CHANGE_TABLES), tables
    statement = "VACUUM " + ", ".join(t["name"] for t in tables)

    async def every() -> None:
        while True:
            await asyncio.sleep(EVERY_S)
            await connection.execute(statement)

    task = asyncio.create_task(every(), name="bench-vacuum")
    try:
        yield
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task
        await connection.close()
