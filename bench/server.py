"""The one server setting the benchmark depends on, set for its run and put back after.

Every running total's change table churns every second (migration 0073): with PostgreSQL's
default of a minute between autovacuum rounds, their dead rows slow every read of a total as
the minute goes on, and order entry sustained for 60 s fell from about 490 to 300 orders/s
(docs/performance.md, stop 21). The bench runs with the setting compose.yaml gives the
database, 5 s, and says so; a server it may not configure is measured as it is, and said so.
"""

from __future__ import annotations

from collections.abc import Callable

import asyncpg

NAPTIME = "5s"


async def tune(database_url: str, say: Callable[[str], None]) -> str | None:
    """Set ``autovacuum_naptime`` to ``NAPTIME``; the ALTER SYSTEM that puts it back, or None."""
    connection = await asyncpg.connect(database_url)
    try:
        row = await connection.fetchrow(
            """SELECT setting || coalesce(unit, '') AS value, sourcefile
               FROM pg_settings WHERE name = 'autovacuum_naptime'"""
        )
        assert row is not None
        if row["value"] == NAPTIME:
            say(f"PostgreSQL autovacuum_naptime {NAPTIME}")
            return None
        try:
            await connection.execute(f"ALTER SYSTEM SET autovacuum_naptime = '{NAPTIME}'")
        except asyncpg.InsufficientPrivilegeError:
            say(f"PostgreSQL autovacuum_naptime {row['value']}, left as it is (not a superuser): see performance.md")
            return None
        await connection.execute("SELECT pg_reload_conf()")
        say(f"PostgreSQL autovacuum_naptime {row['value']} → {NAPTIME} for this run (put back after)")
        if (row["sourcefile"] or "").endswith("postgresql.auto.conf"):
            return f"ALTER SYSTEM SET autovacuum_naptime = '{row['value']}'"
        return "ALTER SYSTEM RESET autovacuum_naptime"
    finally:
        await connection.close()


async def restore(database_url: str, statement: str | None) -> None:
    if statement is None:
        return
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute(statement)
        await connection.execute("SELECT pg_reload_conf()")
    finally:
        await connection.close()
