"""Running totals kept beside the rows they sum (issue 8, migrations 0068 and 0072,
broker.running_totals): a buyer's open buy exposure at the exchange, and what placed holds keep
on an account and an account's balance at settlement. A trigger records every change of a row's
share as a row of its own, which the agents fold into the amounts every second, so an order's
acceptance, a cover and an account read a second's worth of rows however many orders rest, holds
are placed or postings were made. Here every kind of write — insert, partial fill, fill, cancel,
a price or owner changed, delete, a posting, an entry taken out, a rolled-back transaction — is
made in SQL, as a command or a hand repair would, in a random sequence with folds between, and
the totals are compared with the sums after each one; two writers of one total never wait on
each other (review found the first design, one row updated in place, deadlocking the end of day
with the exchange's batch), and the migration leaves out no write made while it ran."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import asyncpg
import pytest

from agents.exchange import order_repo, standing_repo
from agents.exchange.app import AGENT as EXCHANGE
from agents.settlement import dvp_repo, funds_repo
from agents.settlement import repo as settlement_repo
from agents.settlement.app import AGENT as SETTLEMENT
from broker.migrate import migrate
from broker.runtime import started
from broker.settings import Settings
from chaos import invariants
from tests import support
from tests.conftest import DATABASE_URL, MIGRATIONS, database_url

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


async def deposit(conn: asyncpg.Connection, account: str, amount: Decimal) -> None:
    await transfer(conn, "external:deposits", account, amount)


async def transfer(conn: asyncpg.Connection, payer: str, payee: str, amount: Decimal) -> None:
    async with conn.transaction():
        entry = await conn.fetchval(
            "INSERT INTO entries (kind, reference, description) VALUES ('deposit', $1, 'test') RETURNING entry_id",
            str(uuid.uuid4()),
        )
        await conn.executemany(
            "INSERT INTO postings (entry_id, account_id, amount) VALUES ($1, $2, $3)",
            [(entry, payer, -amount), (entry, payee, amount)],
        )


async def post_entry(conn: asyncpg.Connection, rng: random.Random) -> None:
    """A deposit into an account, or a transfer between two of no more than the payer has."""
    await conn.execute("SET search_path TO settlement")
    payee = rng.choice(ACCOUNTS)
    payer = rng.choice([a for a in ACCOUNTS if a != payee] + ["external:deposits"] * 2)
    amount = Decimal(rng.randrange(1, 40_000)) / 4
    if payer != "external:deposits":
        amount = min(amount, await settlement_repo.balance(conn, payer))
        if amount <= 0:
            return
    await transfer(conn, payer, payee, amount)


async def remove_entry(conn: asyncpg.Connection, rng: random.Random) -> None:
    """A superuser's correction (the agent may not): a whole deposit taken out of the ledger,
    when that leaves no customer account below zero."""
    await conn.execute("SET search_path TO settlement")
    entry = await conn.fetchval(
        """SELECT e.entry_id FROM entries e JOIN postings p USING (entry_id)
           WHERE p.account_id = 'external:deposits' ORDER BY random() LIMIT 1"""
    )
    if entry is None:
        return
    removal = conn.transaction()
    await removal.start()
    await conn.execute("DELETE FROM postings WHERE entry_id = $1", entry)
    await conn.execute("DELETE FROM entries WHERE entry_id = $1", entry)
    overdrawn = await conn.fetchval(
        f"""SELECT count(*) FROM accounts a WHERE a.kind = 'customer'
            AND {settlement_repo.ACCOUNT_BALANCES.of("a.account_id")} < 0"""
    )
    await (removal.rollback() if overdrawn else removal.commit())


async def fold(conn: asyncpg.Connection, _: random.Random) -> None:
    await conn.execute("SET search_path TO exchange")
    await order_repo.OPEN_BUY_EXPOSURE.fold(conn)
    await conn.execute("SET search_path TO settlement")
    await settlement_repo.PLACED_HOLDS.fold(conn)
    await settlement_repo.ACCOUNT_BALANCES.fold(conn)


WRITES = (
    place_order, place_order, change_order, change_order, place_hold, change_hold, change_hold, reopen_hold,
    post_entry, post_entry, remove_entry, fold,
)  # fmt: skip


async def assert_totals_match(conn: asyncpg.Connection) -> None:
    assert await invariants.running_totals(conn) == []


@pytest.mark.parametrize("seed", range(3))
async def test_the_totals_follow_every_kind_of_write(connection: asyncpg.Connection, seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(300):
        await rng.choice(WRITES)(connection, rng)
        await assert_totals_match(connection)
    opened = await connection.fetchval("SELECT count(*) FROM exchange.orders WHERE status = 'open' AND side = 'buy'")
    placed = await connection.fetchval("SELECT count(*) FROM settlement.holds WHERE status = 'placed'")
    posted = await connection.fetchval("SELECT count(*) FROM settlement.postings")
    assert opened > 0 and placed > 0 and posted > 0  # something to sum, so the comparison could fail
    await fold(connection, rng)
    assert await connection.fetchval("SELECT count(*) FROM exchange.open_buy_exposure_changes") == 0
    assert await connection.fetchval("SELECT count(*) FROM settlement.placed_holds_changes") == 0
    assert await connection.fetchval("SELECT count(*) FROM settlement.account_balances_changes") == 0
    await assert_totals_match(connection)  # all of it now in the folded amounts


async def test_a_rolled_back_write_leaves_the_totals_as_they_were(connection: asyncpg.Connection) -> None:
    rng = random.Random(7)
    for _ in range(20):
        await place_order(connection, rng)
        await place_hold(connection, rng)
        await post_entry(connection, rng)
    before = await totals(connection)
    assert all(before)
    await connection.execute("SET search_path TO exchange")  # the exchange's own trigger on orders needs it
    with pytest.raises(asyncpg.CheckViolationError):
        async with connection.transaction():
            await connection.execute("UPDATE exchange.orders SET status = 'cancelled'")
            await connection.execute("UPDATE settlement.holds SET status = 'released'")
            await post_entry(connection, rng)
            await connection.execute("UPDATE settlement.holds SET amount = -1")  # refused: the whole of it undone
    assert await totals(connection) == before
    await assert_totals_match(connection)


async def insert_buy(conn: asyncpg.Connection, issue: str) -> int:
    """A buy of alice's resting in ``issue`` (search path: exchange)."""
    number: int = await conn.fetchval(
        """INSERT INTO orders (acceptance_number, client_order_id, user_id, issue_code, side, order_type,
               price, quantity, remaining, time_in_force, priority, status, settlement_account, request_hash)
           VALUES (nextval('acceptance_numbers'), 'c' || currval('acceptance_numbers'), 'alice', $1, 'buy',
                   'limit', 10, 100, 100, 'day', currval('acceptance_numbers'), 'open', 'acct', 'hash')
           RETURNING acceptance_number""",
        issue,
    )
    return number


async def totals(conn: asyncpg.Connection) -> tuple[dict[str, Decimal], ...]:
    found = []
    kinds = (
        ("exchange", order_repo.OPEN_BUY_EXPOSURE),
        ("settlement", settlement_repo.PLACED_HOLDS),
        ("settlement", settlement_repo.ACCOUNT_BALANCES),
    )
    for schema, total in kinds:
        await conn.execute(f"SET search_path TO {schema}")
        found.append({r["key"]: r["amount"] for r in await conn.fetch(total.kept)})
    return tuple(found)


async def test_two_writers_of_one_total_never_wait_on_each_other(database: str, connection: asyncpg.Connection) -> None:
    """The end of day cancels alice's buy in one issue while the exchange's batch books a new buy
    of hers in another (and settlement's batch releases a hold on an account its recycle earmarks
    on): each write moves the same total, and neither may wait for the other's commit — with the
    other locks each holds, a wait there was a deadlock."""
    await connection.execute("SET search_path TO exchange")
    await order_repo.list_instrument(connection, "OTHER", "common", Decimal(1000))
    cancelled = await insert_buy(connection, ISSUE)
    rng = random.Random(11)
    await place_hold(connection, rng)
    hold = await connection.fetchrow("SELECT hold_id, account_id FROM settlement.holds LIMIT 1")
    first = await asyncpg.connect(database, server_settings={"search_path": "exchange"})
    second = await asyncpg.connect(database, server_settings={"search_path": "exchange", "lock_timeout": "2s"})
    try:
        async with first.transaction():
            await first.execute(
                "UPDATE orders SET status = 'cancelled', cancel_reason = 'expired' WHERE acceptance_number = $1",
                cancelled,
            )
            await first.execute("UPDATE settlement.holds SET status = 'released' WHERE hold_id = $1", hold["hold_id"])
            async with second.transaction():  # raises LockNotAvailableError after 2 s if it waits
                await insert_buy(second, "OTHER")
                await second.execute("SET search_path TO settlement")
                await second.execute(
                    """INSERT INTO holds (hold_id, account_id, owner, amount, status)
                       VALUES (gen_random_uuid(), $1, 'x', 5, 'placed')""",
                    hold["account_id"],
                )
                await settlement_repo.PLACED_HOLDS.fold(second)  # a fold meanwhile waits on neither
                await second.execute("SET search_path TO exchange")
                await order_repo.OPEN_BUY_EXPOSURE.fold(second)
    finally:
        await first.close()
        await second.close()
    await assert_totals_match(connection)


async def test_writes_made_while_the_migration_runs_are_counted_and_nothing_deadlocks(
    tmp_path: Path,
    template_database: str,  # made first: the agents' roles exist before this migrates outside the lock
) -> None:
    """The backfill and the trigger are one transaction that locks out writes: an order and a
    hold written while migration 0068 runs are each in the backfill or move the total, never
    neither (review found a write in flight counted nowhere). And a running exchange that read
    its orders before the migration's lock and writes them after does not deadlock with it
    (review found 0068 dropping an index — an exclusive lock on top of its own — doing so).
    The migrations after 0068 run in the same race: 0070 (standing covers) locks the tables it
    alters first, so it waits behind the same writers without deadlocking either."""
    name = f"kabuto_totals_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(DATABASE_URL)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = database_url(name)
    before = tmp_path / "before"
    before.mkdir()
    for migration in sorted(MIGRATIONS.glob("*.sql")):
        if migration.name < "0068":
            (before / migration.name).write_text(migration.read_text())

    connections: list[asyncpg.Connection] = []
    try:
        await migrate(url, before)
        inspector = await asyncpg.connect(url)
        connections.append(inspector)
        for _ in range(3):
            connections.append(await asyncpg.connect(url, server_settings={"search_path": "exchange"}))
        _, writer, holder, reader = connections
        await order_repo.list_instrument(writer, ISSUE, "common", Decimal(1000))
        resting = await insert_buy(writer, ISSUE)
        await holder.execute("INSERT INTO settlement.accounts (account_id, owner_user_id) VALUES ('acct-m', 'm')")
        writing, holding, reading = writer.transaction(), holder.transaction(), reader.transaction()
        for transaction in (writing, holding, reading):
            await transaction.start()
        await insert_buy(writer, ISSUE)  # in flight when the migration starts
        await holder.execute(
            """INSERT INTO settlement.holds (hold_id, account_id, owner, amount, status)
               VALUES (gen_random_uuid(), 'acct-m', 'x', 9, 'placed')"""
        )
        await reader.fetch("SELECT * FROM orders WHERE status = 'open'")  # a book loaded
        migrating = asyncio.ensure_future(migrate(url, MIGRATIONS))
        orders_oid = await inspector.fetchval("SELECT 'exchange.orders'::regclass::oid")
        await support.eventually(lambda: waits_on_oid(admin, name, orders_oid))
        await writing.commit()
        holds_oid = await inspector.fetchval("SELECT 'settlement.holds'::regclass::oid")
        await support.eventually(lambda: waits_on_oid(admin, name, holds_oid))
        # 0068 holds orders now: the exchange's fill waits for it, and must not deadlock with it.
        filling = asyncio.ensure_future(
            reader.execute("UPDATE orders SET remaining = 50 WHERE acceptance_number = $1", resting)
        )
        await support.eventually(lambda: waits_on_oid(admin, name, orders_oid))
        await holding.commit()
        await filling
        await reading.commit()
        assert await migrating == sorted(m.name for m in MIGRATIONS.glob("*.sql") if m.name >= "0068")
        assert await order_repo.exposure_drift(writer) == []
        assert await order_repo.open_buy_exposure(writer, "alice") == 1500
        await writer.execute("SET search_path TO settlement")
        assert await funds_repo.held_drift(writer) == []
        assert await funds_repo.held(writer, ["acct-m"]) == {"acct-m": 9}
    finally:
        for connection in connections:
            await connection.close()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def waits_on_oid(admin: asyncpg.Connection, database: str, relation: int) -> bool:
    """Someone in ``database`` waits for a lock on ``relation``."""
    return bool(
        await admin.fetchval(
            """SELECT true FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
               WHERE a.datname = $1 AND NOT l.granted AND l.relation = $2""",
            database,
            relation,
        )
    )


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
    view = await order_repo.acceptance_view(connection, order_repo.ViewKey("alice", "new", ISSUE, None))
    assert view.books.open_buy_exposure == Decimal("299900")

    await connection.execute("SET search_path TO settlement")
    first, second = uuid.uuid4(), uuid.uuid4()
    await funds_repo.place(connection, first, "x", [("acct-a", Decimal(300)), ("acct-b", Decimal(5))], "brokerage")
    await funds_repo.place(connection, second, "x", [("acct-a", Decimal(40))], "brokerage")
    assert await funds_repo.held(connection, ACCOUNTS) == {"acct-a": Decimal(340), "acct-b": Decimal(5)}
    assert await funds_repo.held_by_others(connection, ACCOUNTS, first) == {"acct-a": Decimal(40)}
    assert await dvp_repo.held_on(connection, "acct-a") == Decimal(340)
    assert await dvp_repo.held_on(connection, "acct-a", excluding=second) == Decimal(300)
    cover = await settlement_repo.cover_view(connection, "acct-a", first)
    assert cover.held == Decimal(340)
    await funds_repo.release(connection, first)
    assert await funds_repo.held(connection, ACCOUNTS) == {"acct-a": Decimal(40)}
    assert await funds_repo.held_by_others(connection, ACCOUNTS, second) == {}


async def test_the_exchange_and_settlement_fold_their_totals_every_second(settings: Settings) -> None:
    """The fold is a background job of each agent (supervised, with a heartbeat): the changes a
    write recorded move into the amounts by themselves."""
    async with started([EXCHANGE, SETTLEMENT], settings) as agents:
        exchange, settlement = agents["exchange"], agents["settlement"]

        async def write(connection: asyncpg.Connection) -> None:
            await order_repo.list_instrument(connection, ISSUE, "common", Decimal(1000))
            await insert_buy(connection, ISSUE)

        await exchange.query(write)
        await settlement.query(
            lambda c: c.execute(
                """INSERT INTO accounts (account_id, owner_user_id) VALUES ('acct-f', 'f');
                   INSERT INTO holds (hold_id, account_id, owner, amount, status)
                   VALUES (gen_random_uuid(), 'acct-f', 'x', 7, 'placed')"""
            )
        )
        await settlement.query(lambda c: deposit(c, "acct-f", Decimal(12)))

        async def folded() -> bool:
            changes = await exchange.query(lambda c: c.fetchval("SELECT count(*) FROM open_buy_exposure_changes"))
            changes += await settlement.query(lambda c: c.fetchval("SELECT count(*) FROM placed_holds_changes"))
            changes += await settlement.query(lambda c: c.fetchval("SELECT count(*) FROM account_balances_changes"))
            return changes == 0

        await support.eventually(folded)
        assert await exchange.query(lambda c: c.fetchval("SELECT amount FROM open_buy_exposure")) == 1000
        assert await settlement.query(lambda c: c.fetchval("SELECT amount FROM placed_holds")) == 7
        balance = "SELECT amount FROM account_balances WHERE account_id = 'acct-f'"
        assert await settlement.query(lambda c: c.fetchval(balance)) == 12
        since = time.monotonic()
        for agent in (exchange, settlement):  # a round completed: what `kabuto health` watches
            await agent.heartbeats.beat("fold_running_totals").until_progress(since)


@pytest.mark.parametrize("folded", [True, False], ids=["folded", "not folded"])
async def test_the_overdraft_check_at_commit_reads_the_kept_balance(
    connection: asyncpg.Connection, folded: bool
) -> None:
    """0005's check (no customer account below zero when an entry commits) now reads migration
    0072's kept balance: it refuses the same entries whether the account's changes were folded."""
    await connection.execute("SET search_path TO settlement")
    await deposit(connection, "acct-a", Decimal(100))
    await deposit(connection, "acct-a", Decimal("50.25"))
    if folded:
        await settlement_repo.ACCOUNT_BALANCES.fold(connection)
    with pytest.raises(asyncpg.CheckViolationError, match="overdraws customer account acct-a"):
        await transfer(connection, "acct-a", "acct-b", Decimal("150.50"))
    assert await settlement_repo.balance(connection, "acct-a") == Decimal("150.25")  # refused: nothing moved
    await transfer(connection, "acct-a", "acct-b", Decimal("150.25"))  # to the last yen is allowed
    assert await settlement_repo.balance(connection, "acct-a") == 0
    assert await settlement_repo.balance(connection, "acct-b") == Decimal("150.25")
    with pytest.raises(asyncpg.CheckViolationError, match="overdraws customer account acct-a"):
        await transfer(connection, "acct-a", "acct-b", Decimal("0.01"))
    await assert_totals_match(connection)


async def test_reading_an_account_reads_none_of_its_postings(connection: asyncpg.Connection) -> None:
    """An account's balance was the sum of every posting it ever had, read for both parties of
    every trade (four times slower by the end of a 600-trade burst): now it reads the kept
    balance and a second's worth of changes, however long the account's history."""
    await connection.execute("SET search_path TO settlement")
    for _ in range(30):
        await deposit(connection, "acct-a", Decimal(10))
    await settlement_repo.ACCOUNT_BALANCES.fold(connection)
    read = f"SELECT a.*, {settlement_repo.ACCOUNT_BALANCES.of('a.account_id')} FROM accounts a WHERE a.account_id = $1"
    relations = {n.get("Relation Name") for n in await support.plan_nodes(connection, read, "acct-a")}
    assert "account_balances" in relations and "postings" not in relations, relations
    account = await settlement_repo.account(connection, "acct-a")
    assert account is not None and account.balance == Decimal(300)


async def test_the_agents_login_may_read_the_kept_balances_but_not_write_them(database: str) -> None:
    """Found by review: the overdraft check trusts the kept balance, and 0001's default
    privileges let the agent's role write it — one stray change row through the agent's login
    and an overdraft committed (postings summing to -1,000 on a customer account). The agent's
    role may read the two tables; postings and the fold (a SECURITY DEFINER function) are the
    only ways a kept balance changes."""
    admin = await asyncpg.connect(database, server_settings={"search_path": "settlement"})
    agent = await asyncpg.connect(database, server_settings={"search_path": "settlement", "role": "kabuto_settlement"})
    try:
        for account in ACCOUNTS:
            await admin.execute("INSERT INTO accounts (account_id, owner_user_id) VALUES ($1, $1)", account)
        writes = (
            "INSERT INTO account_balances_changes (account_id, change) VALUES ('acct-a', 1000)",
            "INSERT INTO account_balances (account_id, amount) VALUES ('acct-a', 1000)",
            "UPDATE account_balances SET amount = amount + 1000",
            "DELETE FROM account_balances_changes",
        )
        for write in writes:
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await agent.execute(write)
        await deposit(agent, "acct-a", Decimal(40))  # the agent posts; the trigger records it
        with pytest.raises(asyncpg.CheckViolationError, match="overdraws customer account acct-a"):
            await transfer(agent, "acct-a", "acct-b", Decimal(1000))
        assert await settlement_repo.ACCOUNT_BALANCES.fold(agent) == 2  # acct-a and the deposits account
        assert await settlement_repo.balance(agent, "acct-a") == Decimal(40)
        assert await admin.fetchval("SELECT amount FROM account_balances WHERE account_id = 'acct-a'") == 40
        assert await settlement_repo.balance_drift(admin) == []
    finally:
        await agent.close()
        await admin.close()


async def test_every_change_table_is_vacuumed_as_soon_as_it_churns(connection: asyncpg.Connection) -> None:
    """Migration 0073: a running total's change table left to autovacuum's defaults bloats
    between rounds, and every read of a total walks its dead index entries (order entry fell
    from about 490 to 300 orders/s over a minute). Each is vacuumed at 500 dead rows, without
    the cost delay; custody's journal of positions is not one of them (0074)."""
    totals = (
        order_repo.OPEN_BUY_EXPOSURE,
        standing_repo.STANDING_COVER_DRAWN,
        settlement_repo.PLACED_HOLDS,
        settlement_repo.ACCOUNT_BALANCES,
    )
    rows = await connection.fetch(
        """SELECT c.relname AS name, coalesce(c.reloptions, '{}') AS options FROM pg_class c
           WHERE c.relkind = 'r' AND c.relname = ANY($1::text[]) ORDER BY 1""",
        [total.changes for total in totals] + ["position_changes"],
    )
    wanted = ["autovacuum_vacuum_cost_delay=0", "autovacuum_vacuum_scale_factor=0", "autovacuum_vacuum_threshold=500"]
    assert {r["name"]: sorted(r["options"]) for r in rows} == {
        "account_balances_changes": wanted,
        "open_buy_exposure_changes": wanted,
        "placed_holds_changes": wanted,
        "position_changes": [],
        "standing_cover_drawn_changes": wanted,
    }
