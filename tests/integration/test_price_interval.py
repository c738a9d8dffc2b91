"""KABUTO_PRICE_INTERVAL (issue 8, R-003-25): an independent suite written to break the time
conflation of the exchange's price updates (agents/exchange/prices.py, migration 0079). It found
the lost update and the held issue that held back others, both mended at stop 30."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import timedelta
from decimal import Decimal

import asyncpg
import pytest

from agents.exchange import prices
from agents.exchange.trading import end_of_day
from broker.context import Context
from broker.runtime import AgentRuntime
from broker.settings import Settings, SettingsError, load
from tests import support

AGENTS = ("exchange", "brokerage", "credit")


def _trade_at(price: int, issue: str = "PRX") -> Callable[[Context], Awaitable[None]]:
    async def trade(ctx: Context) -> None:
        await prices.announce_trade(ctx, issue, Decimal(price))

    return trade


async def _updates(exchange: AgentRuntime, subscriber: str, issue: str = "PRX") -> list[tuple[str, Decimal | None]]:
    """(kind, last price) of every market.price_update the exchange sent ``subscriber`` for ``issue``."""
    rows = await support.rows(
        exchange,
        "SELECT body FROM outbox_messages WHERE message_type = 'market.price_update' AND routing_key = $1"
        " ORDER BY seq, place",
        subscriber,
    )
    out = []
    for r in rows:
        p = json.loads(r["body"])["payload"]
        if p["issue_code"] == issue:
            out.append((p["kind"], None if p["last_price"] is None else Decimal(p["last_price"])))
    return out


async def _last_prices(exchange: AgentRuntime, subscriber: str, issue: str = "PRX") -> list[Decimal | None]:
    return [price for _, price in await _updates(exchange, subscriber, issue)]


async def _credit_price(credit: AgentRuntime, issue: str = "PRX") -> Decimal | None:
    found = await support.rows(credit, "SELECT last_price FROM prices WHERE issue_code = $1", issue)
    return found[0]["last_price"] if found else None


async def _is(value: Awaitable[object], expected: object) -> bool:
    return await value == expected


async def _owed(exchange: AgentRuntime, issue: str = "PRX") -> bool:
    [row] = await support.rows(exchange, "SELECT price_owed FROM instruments WHERE issue_code = $1", issue)
    return bool(row["price_owed"])


async def _interval_passed(exchange: AgentRuntime, interval: timedelta, issue: str = "PRX") -> bool:
    """The database's clock is past the issue's last announcement plus the interval."""
    [row] = await support.rows(
        exchange,
        "SELECT clock_timestamp() >= announced_at + $2::interval AS passed FROM instruments WHERE issue_code = $1",
        issue,
        interval,
    )
    return bool(row["passed"])


async def _listed(exchange: AgentRuntime, *issues: str) -> None:
    await exchange.outcomes.wait_count(lambda s: s.type == "market.subscribe_prices", 2)
    for issue in issues:
        await exchange.command("exchange", prices.listed(issue, "common", Decimal(1_000)))


# --- found by this suite, mended -------------------------------------------------------------


async def _held_until_the_job_has_looked(exchange: AgentRuntime, issue: str = "PRX") -> None:
    """Inside a trade's transaction: wait until the job took the issue's hint and finished the
    round it took it in — i.e. send_owed ran (and committed) while this trade was uncommitted."""
    beat = exchange.heartbeats.beat("announce_owed")
    gave_way = prices.PRICES.gave_way
    assert issue in prices.PRICES._owed  # the hint of the trade just recorded
    await support.eventually(
        lambda: (
            (issue not in prices.PRICES._owed and beat.busy_since is None)  # looked, and done
            or prices.PRICES.gave_way > gave_way
        )  # or waited for this transaction's lock and gave way
    )


async def _arrives(exchange: AgentRuntime, credit: AgentRuntime, price: int) -> None:
    """The credit holder gets ``price`` within a few intervals, or the test fails saying why."""
    try:
        await support.eventually(lambda: _is(_credit_price(credit), Decimal(price)), timeout=5)
    except TimeoutError:
        pytest.fail(
            f"{price} never sent: price_owed={await _owed(exchange)}, hint={prices.PRICES._owed.get('PRX')}, "
            f"sent to credit={await _last_prices(exchange, 'credit')}, credit has {await _credit_price(credit)}"
        )


async def test_an_owed_price_whose_trade_commits_after_it_falls_due_is_still_sent(settings: Settings) -> None:
    """A trade's hint is due at announced_at + interval, but the trade's transaction may commit
    later (the rest of the handler, the outbox, sealing). send_owed judged ``price_owed`` on a
    snapshot where the committed row still said false and skipped the row; the hint was consumed,
    so nothing sent the held-back price (until a later trade, a close or a restart)."""
    interval = timedelta(seconds=0.5)
    async with support.agents(settings.with_(price_interval=interval), *AGENTS) as rt:
        exchange, credit = rt["exchange"], rt["credit"]
        await _listed(exchange, "PRX")
        await exchange.command("exchange", _trade_at(1_100))  # sent at once: announced_at = now

        async def trade_then_slow_commit(ctx: Context) -> None:
            await prices.announce_trade(ctx, "PRX", Decimal(1_300))  # within the interval: owed
            await _held_until_the_job_has_looked(exchange)

        await exchange.command("exchange", trade_then_slow_commit)
        assert await _owed(exchange)  # committed: owed
        # Delayed, never lost (docs/decisions.md): it must arrive, within a few intervals.
        await _arrives(exchange, credit, 1_300)


async def test_an_owed_price_of_a_batch_sealed_after_it_falls_due_is_still_sent(settings: Settings) -> None:
    """The same, on the group-commit path: the batch records its prices at the end of its scope, then
    seals its messages and commits. If the hint falls due in between, the price is stranded."""
    interval = timedelta(seconds=0.5)
    async with support.agents(settings.with_(price_interval=interval), *AGENTS) as rt:
        exchange, credit = rt["exchange"], rt["credit"]
        await _listed(exchange, "PRX")
        await exchange.command("exchange", _trade_at(1_100))

        async def batch(ctx: Context) -> None:
            async with prices.PRICES.batch(ctx.connection, ()):
                await prices.announce_trade(ctx, "PRX", Decimal(1_200))
                await prices.announce_trade(ctx, "PRX", Decimal(1_300))
            await _held_until_the_job_has_looked(exchange)  # sealing and committing, slowly

        await exchange.command("exchange", batch)
        await _arrives(exchange, credit, 1_300)


async def test_every_price_interval_the_settings_accept_lets_a_trade_be_recorded(settings: Settings) -> None:
    """The interval is added to a timestamptz in PostgreSQL, whose range ends in 294276 AD: 1e13 s
    fitted a timedelta and was accepted, and then every trade failed with 'timestamp out of
    range'. It is refused at load now (at most an hour); any interval accepted works."""
    try:
        interval = load({"KABUTO_PRICE_INTERVAL": "1e13"}).price_interval
    except SettingsError:
        return  # refused: fine
    async with support.agents(settings.with_(price_interval=interval), *AGENTS) as rt:
        exchange = rt["exchange"]
        await _listed(exchange, "PRX")
        await exchange.command("exchange", _trade_at(1_100))


# --- what holds --------------------------------------------------------------------------------


async def test_interval_zero_sends_every_trade_at_once_and_owes_nothing(settings: Settings) -> None:
    async with support.agents(settings.with_(price_interval=timedelta(0)), *AGENTS) as rt:
        exchange, credit = rt["exchange"], rt["credit"]
        await _listed(exchange, "PRX")
        for price in (1_100, 1_200, 1_300, 1_400):
            await exchange.command("exchange", _trade_at(price))
            assert not await _owed(exchange)
        for subscriber in ("credit", "brokerage"):
            assert await _last_prices(exchange, subscriber) == [None, 1_100, 1_200, 1_300, 1_400]
        await support.eventually(lambda: _is(_credit_price(credit), Decimal(1_400)))


async def test_a_trade_after_the_interval_goes_at_once_and_the_job_sends_no_duplicate(settings: Settings) -> None:
    """Owed, sent by the job; a trade after the interval is sent directly and not owed; the job
    never sends a price twice."""
    interval = timedelta(seconds=0.4)
    async with support.agents(settings.with_(price_interval=interval), *AGENTS) as rt:
        exchange, credit = rt["exchange"], rt["credit"]
        await _listed(exchange, "PRX")
        await exchange.command("exchange", _trade_at(1_100))
        await exchange.command("exchange", _trade_at(1_200))  # owed
        await support.eventually(lambda: _is(_last_prices(exchange, "credit"), [None, 1_100, 1_200]))
        assert not await _owed(exchange)
        await support.eventually(lambda: _interval_passed(exchange, interval))
        await exchange.command("exchange", _trade_at(1_300))
        assert not await _owed(exchange)
        assert await _last_prices(exchange, "credit") == [None, 1_100, 1_200, 1_300]  # at once
        await support.eventually(lambda: _is(_credit_price(credit), Decimal(1_300)))
        # one more interval and a round of the job later: still no duplicate
        await support.eventually(lambda: _interval_passed(exchange, interval))
        await exchange.command("exchange", prices.send_owed)
        assert await _last_prices(exchange, "credit") == [None, 1_100, 1_200, 1_300]


async def test_issues_owed_at_different_moments_each_get_their_latest(settings: Settings) -> None:
    interval = timedelta(seconds=0.4)
    async with support.agents(settings.with_(price_interval=interval), *AGENTS) as rt:
        exchange, credit = rt["exchange"], rt["credit"]
        await _listed(exchange, "PRX", "PRY")
        await exchange.command("exchange", _trade_at(1_100, "PRX"))
        await exchange.command("exchange", _trade_at(900, "PRY"))
        for price in (1_110, 1_120):
            await exchange.command("exchange", _trade_at(price, "PRX"))
        for price in (910, 920, 930):
            await exchange.command("exchange", _trade_at(price, "PRY"))
        await support.eventually(lambda: _is(_credit_price(credit, "PRX"), Decimal(1_120)))
        await support.eventually(lambda: _is(_credit_price(credit, "PRY"), Decimal(930)))
        for subscriber in ("credit", "brokerage"):
            assert await _last_prices(exchange, subscriber, "PRX") == [None, 1_100, 1_120]
            assert await _last_prices(exchange, subscriber, "PRY") == [None, 900, 930]


async def test_the_close_clears_what_is_owed_and_carries_the_latest_price(settings: Settings) -> None:
    """An update owed at the close: the close carries the latest price, nothing is owed after
    it, and a restart sends no stale LAST_TRADE after the CLOSE."""
    held = settings.with_(price_interval=timedelta(minutes=10))
    async with support.agents(held, *AGENTS) as rt:
        exchange, credit = rt["exchange"], rt["credit"]
        await _listed(exchange, "PRX")
        await exchange.command("exchange", _trade_at(1_100))
        await exchange.command("exchange", _trade_at(1_250))
        assert await _owed(exchange)
        await exchange.command("exchange", end_of_day)
        assert not await _owed(exchange)
        await support.eventually(lambda: _is(_credit_price(credit), Decimal(1_250)))
        [line] = await support.rows(credit, "SELECT previous_close FROM prices WHERE issue_code = 'PRX'")
        assert line["previous_close"] == Decimal(1_250)
    async with support.agents(held, "exchange") as rt:
        exchange = rt["exchange"]
        assert await exchange.command("exchange", prices.send_owed) == prices.OwedSent([], [])
        assert await _updates(exchange, "credit") == [
            ("snapshot", None),
            ("last_trade", Decimal(1_100)),
            ("close", Decimal(1_250)),
        ]


async def test_an_update_owed_under_interval_zero_after_a_restart_is_sent(settings: Settings) -> None:
    """Owed under a long interval, restarted with 0: the start sends it."""
    async with support.agents(settings.with_(price_interval=timedelta(minutes=10)), *AGENTS) as rt:
        exchange = rt["exchange"]
        await _listed(exchange, "PRX")
        await exchange.command("exchange", _trade_at(1_100))
        await exchange.command("exchange", _trade_at(1_250))
    async with support.agents(settings.with_(price_interval=timedelta(0)), "exchange") as rt:
        exchange = rt["exchange"]
        await support.eventually(lambda: _is(_last_prices(exchange, "credit"), [None, 1_100, 1_250]))
        assert not await _owed(exchange)
        await exchange.command("exchange", _trade_at(1_300))
        assert await _last_prices(exchange, "credit") == [None, 1_100, 1_250, 1_300]


async def test_an_exchange_with_an_update_owed_far_ahead_stops_promptly(settings: Settings) -> None:
    """The job waits for a hint due in 10 minutes; stopping must not wait for it."""
    async with asyncio.timeout(20):
        async with support.agents(settings.with_(price_interval=timedelta(minutes=10)), *AGENTS) as rt:
            exchange = rt["exchange"]
            await _listed(exchange, "PRX")
            await exchange.command("exchange", _trade_at(1_100))
            await exchange.command("exchange", _trade_at(1_250))
            assert "PRX" in prices.PRICES._owed
            stopping_from = asyncio.get_running_loop().time()
        assert asyncio.get_running_loop().time() - stopping_from < 10


async def test_the_job_gives_way_when_it_would_deadlock_with_a_transaction(settings: Settings) -> None:
    """The job wants PRX and PRY; a transaction holds PRY and then wants PRX. Neither errors: the
    job skips the row held (SKIP LOCKED, no wait), sends PRX, and tries PRY again after."""
    interval = timedelta(seconds=0.3)
    async with support.agents(settings.with_(price_interval=interval), *AGENTS) as rt:
        exchange, credit = rt["exchange"], rt["credit"]
        await _listed(exchange, "PRX", "PRY")
        for issue, price in (("PRX", 1_100), ("PRY", 900), ("PRX", 1_200), ("PRY", 950)):
            await exchange.command("exchange", _trade_at(price, issue))
        gave_way = prices.PRICES.gave_way
        holding, release = asyncio.Event(), asyncio.Event()

        async def pry_then_prx(ctx: Context) -> None:
            await ctx.connection.execute("SELECT 1 FROM instruments WHERE issue_code = 'PRY' FOR UPDATE")
            holding.set()
            await release.wait()
            await ctx.connection.execute("SELECT 1 FROM instruments WHERE issue_code = 'PRX' FOR UPDATE")

        holder = asyncio.create_task(exchange.command("exchange", pry_then_prx))
        await holding.wait()
        await support.eventually(lambda: prices.PRICES.gave_way >= gave_way + 2)
        release.set()
        await holder  # no DeadlockDetectedError, no lock timeout on our side
        await support.eventually(lambda: _is(_credit_price(credit, "PRX"), Decimal(1_200)))
        await support.eventually(lambda: _is(_credit_price(credit, "PRY"), Decimal(950)))


async def test_a_send_owed_blocked_by_a_trade_sends_the_trades_price(settings: Settings) -> None:
    """READ COMMITTED: an owed row a trade holds (and keeps owed) is not sent with its old price
    while the trade is in flight; once it commits, its price is sent, and the older one never."""
    async with support.agents(settings.with_(price_interval=timedelta(minutes=10)), *AGENTS) as rt:
        exchange = rt["exchange"]
        await _listed(exchange, "PRX")
        await exchange.command("exchange", _trade_at(1_100))
        await exchange.command("exchange", _trade_at(1_200))  # owed (committed)
        traded, release = asyncio.Event(), asyncio.Event()

        async def trade_held(ctx: Context) -> None:
            await prices.announce_trade(ctx, "PRX", Decimal(1_300))  # still owed
            traded.set()
            await release.wait()

        holder = asyncio.create_task(exchange.command("exchange", trade_held))
        await traded.wait()
        # the trade goes first: the row it holds is skipped, its older price not sent
        assert await exchange.command("exchange", prices.send_owed) == prices.OwedSent([], ["PRX"])
        release.set()
        await holder
        assert await exchange.command("exchange", prices.send_owed) == prices.OwedSent(["PRX"], [])
        assert await _last_prices(exchange, "credit") == [None, 1_100, 1_300]


async def test_a_round_of_the_owed_price_job_locks_and_sends_in_one_statement(settings: Settings) -> None:
    """Issue 8: the job's round locked the rows and then, by a statement of its own, sent what
    they owe (two round trips, the rows locked in between; about six rounds a second at 100
    trades/s). One statement does both now, judging each row as its lock found it (PostgreSQL
    returns the newest version of a row it locks): an owed issue sent, one not owed left alone."""
    async with support.agents(settings.with_(price_interval=timedelta(minutes=10)), *AGENTS) as rt:
        exchange = rt["exchange"]
        await _listed(exchange, "PRX", "PRY")
        await exchange.command("exchange", _trade_at(1_100))
        await exchange.command("exchange", _trade_at(1_200))  # owed
        await exchange.command("exchange", _trade_at(900, "PRY"))  # sent at once: nothing owed
        statements: list[str] = []

        def logged(record: asyncpg.connection.LoggedQuery) -> None:
            statements.append(" ".join(record.query.split()))

        async def round_of_the_job(ctx: Context) -> prices.OwedSent:
            ctx.connection.add_query_logger(logged)
            try:
                return await prices.send_owed(ctx, ["PRX", "PRY"])
            finally:
                ctx.connection.remove_query_logger(logged)

        assert await exchange.command("exchange", round_of_the_job) == prices.OwedSent(["PRX"], [])
        assert [s for s in statements if "instruments" in s] == [" ".join(prices._SEND_OWED.split())]
        assert await _last_prices(exchange, "credit") == [None, 1_100, 1_200]
        assert not await _owed(exchange)


async def test_a_held_issue_does_not_hold_back_another_issues_owed_update(settings: Settings) -> None:
    """Liveness: send_owed gave up a whole round when one of its issues was held, and tried the
    same set again; at start the set is every owed issue, so one issue a transaction held kept
    every other's owed update from going. Here PRY is held from before the start: PRX, free,
    goes at once, and PRY an interval after it is let go."""
    held = settings.with_(price_interval=timedelta(minutes=10))
    async with support.agents(held, *AGENTS) as rt:
        exchange = rt["exchange"]
        await _listed(exchange, "PRX", "PRY")
        for issue, price in (("PRX", 1_100), ("PRY", 900), ("PRX", 1_200), ("PRY", 950)):
            await exchange.command("exchange", _trade_at(price, issue))
        assert await _owed(exchange, "PRX") and await _owed(exchange, "PRY")
    holder = await asyncpg.connect(settings.database_url)
    try:
        transaction = holder.transaction()
        await transaction.start()
        await holder.execute("SELECT 1 FROM exchange.instruments WHERE issue_code = 'PRY' FOR UPDATE")
        gave_way = prices.PRICES.gave_way
        async with support.agents(held.with_(price_interval=timedelta(seconds=0.3)), "exchange") as rt:
            exchange = rt["exchange"]
            await support.eventually(lambda: prices.PRICES.gave_way >= gave_way + 1)
            try:
                await support.eventually(
                    lambda: _is(_last_prices(exchange, "credit", "PRX"), [None, 1_100, 1_200]), timeout=3
                )
            except TimeoutError:
                pytest.fail(
                    f"PRX, not held, still owed={await _owed(exchange, 'PRX')} after "
                    f"{prices.PRICES.gave_way - gave_way} rounds that found PRY held"
                )
            finally:
                await transaction.rollback()
            await support.eventually(lambda: _is(_last_prices(exchange, "credit", "PRY"), [None, 900, 950]))
    finally:
        await holder.close()
