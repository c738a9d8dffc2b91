"""Running totals kept beside the rows they sum (issue 8, migration 0068): a buyer's open buy
exposure at the exchange and what placed holds keep on an account at settlement. A trigger moves
each total with every write to its rows, so an order's acceptance and a cover read one row
however many orders rest or holds are placed. Here every kind of write — insert, partial fill,
fill, cancel, a price or owner changed, delete, a rolled-back transaction — is made in SQL, as a
command or a hand repair would, in a random sequence, and the totals are compared with the sums
after each one."""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal

import asyncpg
import pytest

from agents.exchange import order_repo
from agents.settlement import dvp_repo, funds_repo
from agents.settlement import repo as settlement_repo

ISSUE = "TOTALS"
USERS = ("alice", "bob", "carol")
ACCOUNTS = ("acct-a", "acct-b", "acct-c")


@pytest.fixture
async def connection(database: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database)
    await conn.execute("SET search_path TO exchange")
    await order_repo.list_instrument(conn, ISSUE, "common", Decimal(1000))
    await conn.execute("SET search_path TO settlement")
    for account in ACCOUNTS:
        await conn.execute("INSERT INTO accounts (account_id, owner_user_id) VALUES ($1, $1)", account)
    yield conn
    await conn.close()


async def place_order(conn: asyncpg.Connection, rng: random.Random) -> None:
    await conn.execute("SET search_path TO exchange")  # the exchange's own trigger on orders needs it
    market = rng.random() < 0.15
    quantity = rng.choice((100, 200, 500))
    await conn.execute(
        """INSERT INTO exchange.orders (acceptance_number, client_order_id, user_id, issue_code, side, order_type,
               price, quantity, remaining, time_in_force, priority, status, settlement_account, request_hash)
           VALUES (nextval('exchange.acceptance_numbers'), 'c' || currval('exchange.acceptance_numbers'), $1, $2,
                   $3, $4, $5, $6, $6, 'gtc', currval('exchange.acceptance_numbers'), 'open', 'acct', 'hash')""",
        rng.choice(USERS),
        ISSUE,
        rng.choice(("buy", "buy", "sell")),
        "market" if market else "limit",
        None if market else Decimal(rng.randrange(900, 1100)) + Decimal("0.25"),
        quantity,
    )


async def change_order(conn: asyncpg.Connection, rng: random.Random) -> None:
    await conn.execute("SET search_path TO exchange")
    number = await conn.fetchval(
        "SELECT acceptance_number FROM exchange.orders WHERE status = 'open' ORDER BY random() LIMIT 1"
    )
    if number is None:
        return
    where = "WHERE acceptance_number = $1"
    writes = (
        f"UPDATE exchange.orders SET remaining = remaining / 2 {where} AND remaining > 1",  # a partial fill
        f"UPDATE exchange.orders SET remaining = 0, status = 'filled' {where}",
        f"UPDATE exchange.orders SET status = 'cancelled', cancel_reason = 'by hand' {where}",
        f"UPDATE exchange.orders SET price = price + 5 {where}",  # a replacement's new price
        f"UPDATE exchange.orders SET user_id = 'dave' {where}",  # moved to another participant
        f"UPDATE exchange.orders SET side = CASE side WHEN 'buy' THEN 'sell' ELSE 'buy' END {where}",
        f"UPDATE exchange.orders SET updated_at = now() {where}",  # nothing the total depends on
        f"DELETE FROM exchange.orders {where}",
    )
    await conn.execute(rng.choice(writes), number)


async def place_hold(conn: asyncpg.Connection, rng: random.Random) -> None:
    accounts = rng.sample(ACCOUNTS, rng.randint(1, 2))
    hold_id = uuid.UUID(int=rng.getrandbits(128))
    for account in accounts:
        await conn.execute(
            """INSERT INTO settlement.holds (hold_id, account_id, owner, amount, status)
               VALUES ($1, $2, 'x', $3, 'placed')""",
            hold_id,
            account,
            Decimal(rng.randrange(1, 10_000)) / 4,
        )


async def change_hold(conn: asyncpg.Connection, rng: random.Random) -> None:
    row = await conn.fetchrow(
        "SELECT hold_id, account_id FROM settlement.holds WHERE status = 'placed' ORDER BY random() LIMIT 1"
    )
    if row is None:
        return
    where = "WHERE hold_id = $1 AND account_id = $2"
    writes = (
        f"UPDATE settlement.holds SET status = 'released', closed_at = now() {where}",
        f"UPDATE settlement.holds SET status = 'consumed' {where}",
        f"UPDATE settlement.holds SET amount = amount / 2 {where}",  # a hold revised down
        f"UPDATE settlement.holds SET amount = amount * 3 {where}",  # and up
        f"UPDATE settlement.holds SET closed_at = now() {where}",  # nothing the total depends on
        f"DELETE FROM settlement.holds {where}",
    )
    await conn.execute(rng.choice(writes), row["hold_id"], row["account_id"])


async def reopen_hold(conn: asyncpg.Connection, rng: random.Random) -> None:
    """A released hold placed again under the same id (as a cover re-placed on a retry)."""
    await conn.execute(
        """UPDATE settlement.holds SET status = 'placed', closed_at = NULL
           WHERE (hold_id, account_id) IN (SELECT hold_id, account_id FROM settlement.holds
                                            WHERE status = 'released' ORDER BY random() LIMIT 1)"""
    )


WRITES = (place_order, place_order, change_order, change_order, place_hold, change_hold, change_hold, reopen_hold)


async def assert_totals_match(conn: asyncpg.Connection) -> None:
    await conn.execute("SET search_path TO exchange")
    assert await order_repo.exposure_drift(conn) == []
    await conn.execute("SET search_path TO settlement")
    assert await funds_repo.held_drift(conn) == []


@pytest.mark.parametrize("seed", range(3))
async def test_the_totals_follow_every_kind_of_write(connection: asyncpg.Connection, seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(300):
        await rng.choice(WRITES)(connection, rng)
        await assert_totals_match(connection)
    opened = await connection.fetchval("SELECT count(*) FROM exchange.orders WHERE status = 'open' AND side = 'buy'")
    placed = await connection.fetchval("SELECT count(*) FROM settlement.holds WHERE status = 'placed'")
    assert opened > 0 and placed > 0  # the sequence left something to sum, so the comparison could fail


async def test_a_rolled_back_write_leaves_the_totals_as_they_were(connection: asyncpg.Connection) -> None:
    rng = random.Random(7)
    for _ in range(20):
        await place_order(connection, rng)
        await place_hold(connection, rng)
    await connection.execute("SET search_path TO exchange")
    before = await connection.fetch("SELECT * FROM exchange.open_buy_exposure ORDER BY user_id")
    held = await connection.fetch("SELECT * FROM settlement.placed_holds ORDER BY account_id")
    with pytest.raises(asyncpg.CheckViolationError):
        async with connection.transaction():
            await connection.execute("UPDATE exchange.orders SET status = 'cancelled'")
            await connection.execute("UPDATE settlement.holds SET status = 'released'")
            await connection.execute("UPDATE settlement.holds SET amount = -1")  # refused: the whole of it undone
    assert await connection.fetch("SELECT * FROM exchange.open_buy_exposure ORDER BY user_id") == before
    assert await connection.fetch("SELECT * FROM settlement.placed_holds ORDER BY account_id") == held
    await assert_totals_match(connection)


async def test_the_readers_see_the_totals(connection: asyncpg.Connection) -> None:
    """What the acceptance checks and the cover decisions read is the kept total: the same figure
    the sums gave before migration 0068, and for ``excluding`` a hold less that hold's share."""
    await connection.execute("SET search_path TO exchange")
    for price, quantity, side in ((Decimal(1000), 100, "buy"), (Decimal("999.5"), 200, "buy"), (Decimal(1), 7, "sell")):
        await connection.execute(
            """INSERT INTO orders (acceptance_number, client_order_id, user_id, issue_code, side, order_type,
                   price, quantity, remaining, time_in_force, priority, status, settlement_account, request_hash)
               VALUES (nextval('acceptance_numbers'), 'c' || currval('acceptance_numbers'), 'alice', $1, $2,
                       'limit', $3, $4, $4, 'gtc', currval('acceptance_numbers'), 'open', 'acct', 'hash')""",
            ISSUE,
            side,
            price,
            quantity,
        )
    assert await order_repo.open_buy_exposure(connection, "alice") == Decimal("299900")
    assert await order_repo.open_buy_exposure(connection, "nobody") == 0
    view = await order_repo.acceptance_view(connection, "alice", "new", ISSUE, None)
    assert view.books.open_buy_exposure == Decimal("299900")

    await connection.execute("SET search_path TO settlement")
    first, second = uuid.uuid4(), uuid.uuid4()
    await funds_repo.place(connection, first, "x", [("acct-a", Decimal(300)), ("acct-b", Decimal(5))])
    await funds_repo.place(connection, second, "x", [("acct-a", Decimal(40))])
    assert await funds_repo.held(connection, ACCOUNTS) == {"acct-a": Decimal(340), "acct-b": Decimal(5)}
    assert await funds_repo.held_by_others(connection, ACCOUNTS, first) == {"acct-a": Decimal(40)}
    assert await dvp_repo.held_on(connection, "acct-a") == Decimal(340)
    assert await dvp_repo.held_on(connection, "acct-a", excluding=second) == Decimal(300)
    cover = await settlement_repo.cover_view(connection, "acct-a", first)
    assert cover.held == Decimal(340)
    await funds_repo.release(connection, first)
    assert await funds_repo.held(connection, ACCOUNTS) == {"acct-a": Decimal(40)}
    assert await funds_repo.held_by_others(connection, ACCOUNTS, second) == {}
