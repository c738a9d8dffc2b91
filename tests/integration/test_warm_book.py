"""The exchange's warm book (issue 8): kept in memory between orders, and rebuilt from rows
whenever it might not match them — after a failed handler, a write from elsewhere, or a
seal that was rolled back with its savepoint. Against the real PostgreSQL and migration 0055."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from agents.exchange import order_repo
from agents.exchange.book import Order
from agents.exchange.warm_book import WarmBooks
from schemas.trading import OrderType, Side, TimeInForce

ISSUE = "WARM"


class Failed(Exception):
    pass


@pytest.fixture
async def connection(database: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database, server_settings={"search_path": "exchange"})
    await order_repo.list_instrument(conn, ISSUE, "common", Decimal(1000))
    yield conn
    await conn.close()


class Ctx:
    def __init__(self, connection: asyncpg.Connection) -> None:
        self.connection = connection


async def insert_resting(connection: asyncpg.Connection, price: int) -> int:
    number: int = await connection.fetchval(
        """INSERT INTO orders (acceptance_number, client_order_id, user_id, issue_code, side, order_type, price,
               quantity, remaining, time_in_force, priority, status, settlement_account, request_hash)
           VALUES (nextval('acceptance_numbers'), 'c' || currval('acceptance_numbers'), 'someone', $1, 'buy',
                   'limit', $2, 100, 100, 'gtc', currval('acceptance_numbers'), 'open', 'acc', 'hash')
           RETURNING acceptance_number""",
        ISSUE,
        price,
    )
    return number


def handler(books: WarmBooks, seen: list[list[int]], fail: bool = False) -> Any:
    """Loads the book, notes what rests on it, and (if asked) mutates it then fails."""

    async def handle(_: object, ctx: Any) -> None:
        book = await books.load(ctx.connection, ISSUE)
        seen.append([o.acceptance_number for o in book.resting(Side.BUY)])
        if fail:
            book.load(
                Order(999_999, "ghost", "ghost", Side.BUY, OrderType.LIMIT, Decimal(1), 100, 100, TimeInForce.GTC)
            )
            raise Failed

    return books.sealing(handle)


async def run(connection: asyncpg.Connection, handle: Any) -> None:
    async with connection.transaction():
        await handle(None, Ctx(connection))


async def test_the_book_stays_warm_between_handlers_and_is_rebuilt_after_a_failed_one(
    connection: asyncpg.Connection,
) -> None:
    books, seen = WarmBooks(), []
    await run(connection, handler(books, seen))
    await run(connection, handler(books, seen))
    assert books.rebuilt == 1  # the second handler got the book from memory
    with pytest.raises(Failed):
        await run(connection, handler(books, seen, fail=True))
    await run(connection, handler(books, seen))
    assert books.rebuilt == 2 and seen[-1] == []  # the ghost the failed handler added is gone


async def test_a_write_from_elsewhere_makes_the_next_handler_rebuild_and_see_it(
    connection: asyncpg.Connection,
) -> None:
    books, seen = WarmBooks(), []
    await run(connection, handler(books, seen))
    number = await insert_resting(connection, 990)  # as a command from another process would
    await run(connection, handler(books, seen))
    assert books.rebuilt == 2 and seen[-1] == [number]
    await run(connection, handler(books, seen))
    assert books.rebuilt == 2


async def test_a_seal_rolled_back_with_its_savepoint_is_not_trusted(connection: asyncpg.Connection) -> None:
    books, seen = WarmBooks(), []
    await run(connection, handler(books, seen))
    async with connection.transaction():
        with pytest.raises(Failed):
            async with connection.transaction():  # a delivery of a batch, rolled back after its seal
                await handler(books, seen)(None, Ctx(connection))
                raise Failed
    await run(connection, handler(books, seen))
    assert books.rebuilt == 2
