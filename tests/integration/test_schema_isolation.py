"""An agent's pool sees its own schema only, as its own role, across connection resets."""

from __future__ import annotations

import asyncpg
import pytest

from broker.db import agent_pool


async def test_the_issuer_cannot_read_the_investor_wallet_but_reads_its_own_register(database: str) -> None:
    async with agent_pool(database, "issuer") as pool:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await pool.fetch("SELECT * FROM investor.wallet")
        assert await pool.fetch("SELECT * FROM register") == []


async def test_the_agent_role_survives_the_pools_connection_reset(database: str) -> None:
    async with agent_pool(database, "issuer", max_size=1) as pool:
        for _ in range(2):
            async with pool.acquire() as conn:
                assert await conn.fetchval("SELECT current_user") == "kabuto_issuer"
                assert await conn.fetchval("SHOW search_path") == "issuer"


async def test_a_transaction_left_open_is_rolled_back_when_the_pool_takes_its_connection_back(database: str) -> None:
    """The pool no longer runs asyncpg's reset query on release (db.nothing_to_undo); what it
    must still undo, a transaction a caller left open, asyncpg rolls back before our reset."""
    async with agent_pool(database, "issuer", max_size=1) as pool:
        async with pool.acquire() as conn:
            await conn.execute("BEGIN")
            await conn.execute("SELECT set_config('application_name', 'left-behind', true)")
        async with pool.acquire() as conn:
            assert not conn.is_in_transaction()
            assert await conn.fetchval("SHOW application_name") == "kabuto-issuer"
            assert await conn.fetchval("SELECT current_user") == "kabuto_issuer"
