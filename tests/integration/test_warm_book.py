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
from agents.exchange.warm_book import UncountedOrderWrite, WarmBooks
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


# A group-committed batch (broker.group_commit) passes the books from handler to handler and
# seals them once when its last handler returned (migration 0066 counts the order rows written).


def adding(books: WarmBooks, seen: list[list[int]], number: int) -> Any:
    """Loads the book, notes what rests on it, and rests one more order through order_repo."""

    async def handle(_: object, ctx: Any) -> None:
        book = await books.load(ctx.connection, ISSUE)
        seen.append([o.acceptance_number for o in book.resting(Side.BUY)])
        order = Order(number, f"c{number}", "someone", Side.BUY, OrderType.LIMIT, Decimal(990), 100, 100)
        book.submit(order)
        await ctx.connection.execute(
            """INSERT INTO orders (acceptance_number, client_order_id, user_id, issue_code, side, order_type, price,
                   quantity, remaining, time_in_force, priority, status, settlement_account, request_hash)
               VALUES ($1, $2, 'someone', $3, 'buy', 'limit', 990, 100, 100, 'day', $1, 'open', 'acc', 'h')""",
            number,
            order.client_order_id,
            ISSUE,
        )
        books.wrote(ISSUE, 1)  # what order_repo reports for each row it writes

    return books.sealing(handle)


async def numbers(connection: asyncpg.Connection, count: int) -> list[int]:
    return [
        int(r[0])
        for r in await connection.fetch("SELECT nextval('acceptance_numbers') FROM generate_series(1, $1)", count)
    ]


async def test_a_batch_locks_the_book_once_and_every_handler_sees_the_orders_before_it(
    connection: asyncpg.Connection,
) -> None:
    books, seen = WarmBooks(), []
    first, second, third = await numbers(connection, 3)
    async with connection.transaction(), books.batch(connection, ()):
        for number in (first, second, third):
            await adding(books, seen, number)(None, Ctx(connection))
    assert books.locked == 1 and books.rebuilt == 1
    assert seen == [[], [first], [first, second]]
    token = await connection.fetchval("SELECT book_token FROM instruments WHERE issue_code = $1", ISSUE)
    assert token is not None  # sealed at the end of the batch, after the last write cleared it
    await run(connection, handler(books, seen))
    assert books.locked == 2 and books.rebuilt == 1 and seen[-1] == [first, second, third]


async def test_an_order_row_written_behind_order_repo_fails_the_batch_before_it_commits(
    connection: asyncpg.Connection,
) -> None:
    books, seen = WarmBooks(), []
    (first,) = await numbers(connection, 1)
    with pytest.raises(UncountedOrderWrite, match=r"counted 2 order rows.*order_repo 1"):
        async with connection.transaction(), books.batch(connection, ()):
            await adding(books, seen, first)(None, Ctx(connection))
            await insert_resting(connection, 980)  # not reported: the book the batch holds misses it
            await handler(books, seen)(None, Ctx(connection))
    assert await connection.fetchval("SELECT count(*) FROM orders WHERE issue_code = $1", ISSUE) == 0
    await run(connection, handler(books, seen))
    assert books.rebuilt == 2 and seen[-1] == []  # nothing of the batch happened, and the book was rebuilt


async def test_a_write_by_a_handler_without_the_book_makes_the_batch_forget_it(
    connection: asyncpg.Connection,
) -> None:
    books, seen = WarmBooks(), []
    first, second = await numbers(connection, 2)
    async with connection.transaction(), books.batch(connection, ()):
        await adding(books, seen, first)(None, Ctx(connection))
        await connection.execute("UPDATE orders SET remaining = 50 WHERE acceptance_number = $1", first)
        books.wrote(ISSUE, 1)  # a handler that changed an order without loading the book
        await adding(books, seen, second)(None, Ctx(connection))
        await handler(books, seen)(None, Ctx(connection))
    assert books.locked == 2 and books.rebuilt == 2  # read again under the lock, rebuilt from the rows
    resting = await books.load(connection, ISSUE)
    assert [(o.acceptance_number, o.remaining) for o in resting.resting(Side.BUY)] == [(first, 50), (second, 100)]


async def test_a_batch_that_raises_seals_nothing_and_keeps_no_book(connection: asyncpg.Connection) -> None:
    books, seen = WarmBooks(), []
    (first,) = await numbers(connection, 1)
    async with connection.transaction():
        with pytest.raises(Failed):
            async with books.batch(connection, ()):
                await adding(books, seen, first)(None, Ctx(connection))
                raise Failed
        # Still in the transaction: no seal was written over the token the order's write cleared.
        assert await connection.fetchval("SELECT book_token FROM instruments WHERE issue_code = $1", ISSUE) is None
        await handler(books, seen)(None, Ctx(connection))
    assert books.rebuilt == 2 and seen[-1] == [first]  # rebuilt from the rows, not taken from the batch


async def test_order_repo_reports_each_row_it_writes(connection: asyncpg.Connection) -> None:
    """Every order write of the exchange goes through order_repo, which tells the warm books."""
    from agents.exchange.warm_book import BOOKS

    (first,) = await numbers(connection, 1)
    await insert_resting(connection, 970)
    order = Order(first, "gone", "someone", Side.BUY, OrderType.LIMIT, Decimal(1), 100, 0)
    async with connection.transaction(), BOOKS.batch(connection, ()):
        await BOOKS.load(connection, ISSUE)
        await order_repo.save(connection, ISSUE, order)  # no such row: nothing written, nothing counted
        rows = await connection.fetch("SELECT acceptance_number FROM orders WHERE issue_code = $1", ISSUE)
        for row in rows:
            written = Order(row[0], "x", "someone", Side.BUY, OrderType.LIMIT, Decimal(970), 100, 40)
            await order_repo.save(connection, ISSUE, written)
    assert await connection.fetchval("SELECT remaining FROM orders WHERE issue_code = $1", ISSUE) == 40


async def test_an_order_write_waits_for_the_transaction_deciding_on_the_book_even_with_no_token(
    connection: asyncpg.Connection, database: str
) -> None:
    """Migration 0066: with the token already cleared, a command's order write (the end of day)
    used to take no lock, so the exchange could rebuild from rows without it and seal that book."""
    number = await insert_resting(connection, 990)  # leaves the token cleared, as any outside write does
    assert await connection.fetchval("SELECT book_token FROM instruments WHERE issue_code = $1", ISSUE) is None
    other = await asyncpg.connect(database, server_settings={"search_path": "exchange", "lock_timeout": "300ms"})
    try:
        async with connection.transaction():
            await WarmBooks().load(connection, ISSUE)  # the exchange deciding: the instrument row locked
            with pytest.raises(asyncpg.LockNotAvailableError):
                await other.execute("UPDATE orders SET status = 'cancelled' WHERE acceptance_number = $1", number)
        await other.execute("UPDATE orders SET status = 'cancelled' WHERE acceptance_number = $1", number)
    finally:
        await other.close()


async def test_the_token_read_with_the_batchs_lock_is_used_until_the_batch_writes_an_order_of_the_issue(
    connection: asyncpg.Connection,
) -> None:
    """``lock_issues`` reads each issue's token with its lock, so the batch's first load needs no
    read of its own; once the batch wrote an order of the issue the token in the row is cleared,
    and the kept one must not be trusted: the next load reads the row again and rebuilds."""
    books, seen, statements = WarmBooks(), [], []
    await run(connection, handler(books, seen))  # warm, sealed under a token
    (first,) = await numbers(connection, 1)
    async with connection.transaction(), books.batch(connection, ()):
        await books.lock_issues(connection, [ISSUE])
        connection.add_query_logger(lambda record: statements.append(record.query))
        await handler(books, seen)(None, Ctx(connection))
        assert statements == [] and books.rebuilt == 1  # the warm book, on the token read with the lock
        await insert_resting(connection, 980)  # the batch writes an order of the issue through a handler
        books.wrote(ISSUE, 1)  # that did not hold the book, as order_repo reports it
        await adding(books, seen, first)(None, Ctx(connection))
    assert any("SELECT book_token" in query for query in statements)  # read again under the lock
    assert books.rebuilt == 2 and len(seen[-1]) == 1  # and rebuilt: the order written behind the book is on it
