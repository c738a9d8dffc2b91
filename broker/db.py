"""PostgreSQL access for an agent: a pool confined to the agent's own schema and role.

Each agent connects with ``search_path`` set to its schema and ``role`` set to
``kabuto_<agent>``, a role the migrations grant rights on that schema only, so a query that
strays into another agent's schema fails with a permission error instead of succeeding.
Both are startup parameters, so they survive the pool's ``RESET ALL`` between uses. The
role guards against mistakes, not attacks: code that ran ``RESET ROLE`` would regain the
login user's rights, so a production deployment gives each agent its own login role.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg


def role_of(agent: str) -> str:
    return f"kabuto_{agent}"


@asynccontextmanager
async def agent_pool(database_url: str, agent: str, *, max_size: int = 4) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(
        database_url,
        min_size=1,
        max_size=max_size,
        server_settings={
            "search_path": agent,
            "role": role_of(agent),
            "application_name": f"kabuto-{agent}",
        },
    )
    try:
        yield pool
    finally:
        await close_pool(pool)


async def close_pool(pool: asyncpg.Pool, within: float = 10.0) -> None:
    """Close gracefully, but only for ``within`` seconds: a connection a stuck task still holds
    (the database not answering it) must not keep the agent from stopping; it is terminated."""
    try:
        async with asyncio.timeout(within):
            await pool.close()
    except TimeoutError:
        pool.terminate()


def notify_channel(agent: str) -> str:
    """The LISTEN/NOTIFY channel on which a commit wakes the agent's outbox relay."""
    return f"kabuto_outbox_{agent}"
