"""A cover's hold says exactly what the cover holds (``dvp_repo.save_cover``, ``covers_saved``).

Found by stop 42's review: the statement that saved a cover compared its held amount with 0
(``CASE WHEN $4 > 0 THEN $4 …``), so PostgreSQL typed that parameter ``integer``, and asyncpg
cut the amount to fit: a buy order's cover of 3 shares at 12.5 held 37 on the buyer's account, a
standing cover's 333.3333 left held 333, and an amount past 2^31 failed the statement. The
covers are now saved from typed arrays (numeric). Against the real PostgreSQL, settlement's
schema of a migrated database, rows written by hand.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from decimal import Decimal

import asyncpg
import pytest

from agents.settlement import dvp_repo
from agents.settlement.instructions import Cover


@pytest.fixture
async def settlement_db(database: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(database, server_settings={"search_path": "settlement"})
    try:
        await connection.execute("INSERT INTO accounts (account_id, owner_user_id) VALUES ('bob-1', 'bob')")
        yield connection
    finally:
        await connection.close()


async def order_cover(connection: asyncpg.Connection, unit_price: Decimal) -> uuid.UUID:
    cover_id = uuid.uuid4()
    await connection.execute(
        """INSERT INTO covers (cover_id, user_id, account_id, client_order_id, quantity, remaining, unit_price,
                               currency, status)
           VALUES ($1, 'bob', 'bob-1', $2, 10, 10, $3, 'JPY', 'active')""",
        cover_id,
        f"o-{cover_id}",
        unit_price,
    )
    return cover_id


async def standing_cover(connection: asyncpg.Connection, amount: Decimal) -> uuid.UUID:
    cover_id = uuid.uuid4()
    await connection.execute(
        """INSERT INTO covers (cover_id, user_id, account_id, kind, amount, unspent, currency, status)
           VALUES ($1, 'bob', 'bob-1', 'standing', $2, $2, 'JPY', 'active')""",
        cover_id,
        amount,
    )
    return cover_id


async def held(connection: asyncpg.Connection, cover_id: uuid.UUID) -> tuple[Decimal, str]:
    row = await connection.fetchrow("SELECT amount, status FROM holds WHERE hold_id = $1", cover_id)
    assert row is not None
    return row["amount"], row["status"]


async def test_a_buy_orders_cover_at_a_fractional_price_holds_its_exact_amount(
    settlement_db: asyncpg.Connection,
) -> None:
    cover_id = await order_cover(settlement_db, Decimal("12.5"))
    await dvp_repo.save_cover(settlement_db, Cover(cover_id, "bob", "bob-1", 3, Decimal("12.5"), True))
    assert await held(settlement_db, cover_id) == (Decimal("37.5"), "placed")


async def test_a_standing_covers_fractional_unspent_cash_is_held_exactly_and_kept_when_released(
    settlement_db: asyncpg.Connection,
) -> None:
    cover_id = await standing_cover(settlement_db, Decimal(1000))
    left = Decimal("333.3333")
    await dvp_repo.save_cover(settlement_db, Cover(cover_id, "bob", "bob-1", 0, Decimal(1000), True, left))
    assert await held(settlement_db, cover_id) == (left, "placed")
    await dvp_repo.save_cover(settlement_db, Cover(cover_id, "bob", "bob-1", 0, Decimal(1000), False, left))
    assert await held(settlement_db, cover_id) == (left, "released")  # a released hold keeps what it held


async def test_a_cover_holding_more_than_two_to_the_31st_is_held_exactly(settlement_db: asyncpg.Connection) -> None:
    cover_id = await standing_cover(settlement_db, Decimal(5_000_000_000))
    left = Decimal(3_000_000_000)
    await dvp_repo.save_cover(settlement_db, Cover(cover_id, "bob", "bob-1", 0, Decimal(5_000_000_000), True, left))
    assert await held(settlement_db, cover_id) == (left, "placed")
