"""The exchange's prices as events (design flow 5, R-003-25): subscribers get the listing, every
last price and the close; at the close the reference price rolls to the day's close, and the
brokerage and the credit holder use those prices instead of their own copies."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from decimal import Decimal

import pytest

from agents.credit import line_repo
from agents.exchange import prices
from agents.exchange.trading import end_of_day
from broker.context import Context
from broker.runtime import AgentRuntime
from broker.settings import Settings
from tests import support

AGENTS = ("exchange", "brokerage", "credit")


def _trade_at(price: int) -> Callable[[Context], Awaitable[None]]:
    async def trade(ctx: Context) -> None:  # what the matcher does after an execution (trading._executed)
        await prices.announce_trade(ctx, "PRX", Decimal(price))

    return trade


async def test_listing_trades_and_the_close_reach_subscribers_and_roll_the_reference(settings: Settings) -> None:
    async with support.agents(settings, *AGENTS) as rt:
        exchange, brokerage, credit = rt["exchange"], rt["brokerage"], rt["credit"]
        await exchange.outcomes.wait_count(lambda s: s.type == "market.subscribe_prices", 2)
        await exchange.command("exchange", prices.listed("PRX", "common", Decimal(1_000)))
        await brokerage.outcomes.wait(lambda s: s.type == "market.price_update")
        assert await support.rows(brokerage, "SELECT reference_price FROM securities WHERE issue_code = 'PRX'") == [
            {"reference_price": Decimal(1_000)}
        ]
        await exchange.command("exchange", _trade_at(1_100))
        await credit.outcomes.wait_count(lambda s: s.type == "market.price_update", 2)
        [quote] = await support.rows(credit, "SELECT * FROM prices")
        assert (quote["last_price"], quote["previous_close"]) == (Decimal(1_100), None)

        await exchange.command("exchange", end_of_day)
        await credit.outcomes.wait_count(lambda s: s.type == "market.price_update", 3)
        await brokerage.outcomes.wait_count(lambda s: s.type == "market.price_update", 3)
        [instrument] = await support.rows(exchange, "SELECT reference_price, previous_close FROM instruments")
        assert instrument == {"reference_price": Decimal(1_100), "previous_close": Decimal(1_100)}
        [quote] = await support.rows(credit, "SELECT * FROM prices")
        assert (quote["reference_price"], quote["previous_close"]) == (Decimal(1_100), Decimal(1_100))
        assert await support.rows(brokerage, "SELECT reference_price FROM securities WHERE issue_code = 'PRX'") == [
            {"reference_price": Decimal(1_100)}
        ]
        events = [
            (r["message_type"], json.loads(r["body"])["payload"])
            for r in await support.rows(
                exchange, "SELECT message_type, body FROM outbox_messages WHERE exchange = 'events' ORDER BY seq, place"
            )
            if r["message_type"].startswith("market.")
        ]
        assert [(t, p["issue_code"]) for t, p in events] == [("market.last_price", "PRX"), ("market.close", "PRX")]
        assert events[1][1]["traded_today"] is True and events[1][1]["close"] == "1100.0000"

        await exchange.command("exchange", end_of_day)  # a day without trades closes at the reference
        closes = [
            json.loads(r["body"])["payload"]
            for r in await support.rows(
                exchange, "SELECT body FROM outbox_messages WHERE message_type = 'market.close' ORDER BY seq, place"
            )
        ]
        assert [(c["close"], c["traded_today"]) for c in closes] == [("1100.0000", True), ("1100.0000", False)]


async def test_a_late_price_update_never_rolls_the_lines_price_back(settings: Settings) -> None:
    async with support.agents(settings, *AGENTS) as rt:
        exchange, credit = rt["exchange"], rt["credit"]
        await exchange.outcomes.wait_count(lambda s: s.type == "market.subscribe_prices", 2)
        await exchange.command("exchange", prices.listed("PRX", "common", Decimal(1_000)))
        await exchange.command("exchange", _trade_at(1_100))
        await credit.outcomes.wait_count(lambda s: s.type == "market.price_update", 2)
        snapshot = await support.rows(
            exchange, "SELECT body FROM outbox_messages WHERE routing_key = 'credit' ORDER BY seq, place"
        )
        assert len(snapshot) == 2
        # The listing snapshot delivered again, after the trade, changes nothing.
        await credit.command(
            "credit",
            lambda ctx: line_repo.store_price(ctx.connection, "PRX", Decimal(1_000), None, None, None, None, ctx.now),
        )
        [quote] = await support.rows(credit, "SELECT last_price FROM prices")
        assert quote["last_price"] == Decimal(1_100)


async def test_a_batchs_trades_announce_each_issues_last_price_once_at_its_end(settings: Settings) -> None:
    """Issue 8: market data is conflated per group-committed batch — one last price event and
    one update per subscriber for each issue, with the price of its last trade there; a batch
    that fails announces nothing (it runs again a delivery at a time, each trade announced)."""
    async with support.agents(settings, *AGENTS) as rt:
        exchange = rt["exchange"]
        await exchange.outcomes.wait_count(lambda s: s.type == "market.subscribe_prices", 2)
        await exchange.command("exchange", prices.listed("PRX", "common", Decimal(1_000)))
        await exchange.command("exchange", prices.listed("PRY", "common", Decimal(500)))

        async def batch(ctx: Context) -> None:
            async with prices.PRICES.batch(ctx.connection, ()):
                for issue, price in (("PRX", 1_010), ("PRY", 505), ("PRX", 1_020), ("PRX", 1_030)):
                    await prices.announce_trade(ctx, issue, Decimal(price))
                assert (
                    await support.rows(
                        exchange, "SELECT * FROM outbox_messages WHERE message_type = 'market.last_price'"
                    )
                    == []
                )

        async def failing(ctx: Context) -> None:
            async with prices.PRICES.batch(ctx.connection, ()):
                await prices.announce_trade(ctx, "PRX", Decimal(1_040))
                raise RuntimeError("a later handler of the batch failed")

        await exchange.command("exchange", batch)
        with pytest.raises(RuntimeError, match="later handler"):
            await exchange.command("exchange", failing)

        sent = [
            (r["message_type"], r["routing_key"], json.loads(r["body"])["payload"])
            for r in await support.rows(
                exchange,
                """SELECT message_type, routing_key, body FROM outbox_messages
                   WHERE message_type IN ('market.last_price', 'market.price_update') ORDER BY seq, place""",
            )
        ]
        trades = [(t, key, p["issue_code"], Decimal(p.get("price") or p.get("last_price") or 0)) for t, key, p in sent]
        assert [t for t in trades if t[0] == "market.last_price"] == [
            ("market.last_price", "market.last_price", "PRY", Decimal(505)),
            ("market.last_price", "market.last_price", "PRX", Decimal(1_030)),
        ]
        updates = [t for t in trades if t[0] == "market.price_update" and t[3]]  # not the listings' snapshots
        assert sorted(updates) == sorted(
            ("market.price_update", subscriber, issue, price)
            for subscriber in ("brokerage", "credit")
            for issue, price in (("PRY", Decimal(505)), ("PRX", Decimal(1_030)))
        )
        instruments = await support.rows(exchange, "SELECT issue_code, last_price FROM instruments ORDER BY 1")
        assert instruments == [
            {"issue_code": "PRX", "last_price": Decimal(1_030)},
            {"issue_code": "PRY", "last_price": Decimal(505)},
        ]


async def _price_updates_to(exchange: AgentRuntime, subscriber: str) -> list[Decimal | None]:
    """The last prices the exchange sent ``subscriber``, in order (a listing's snapshot: None)."""
    rows = await support.rows(
        exchange,
        "SELECT body FROM outbox_messages WHERE message_type = 'market.price_update' AND routing_key = $1"
        " ORDER BY seq, place",
        subscriber,
    )
    return [None if (last := json.loads(r["body"])["payload"]["last_price"]) is None else Decimal(last) for r in rows]


async def _credit_price(credit: AgentRuntime) -> Decimal | None:
    found = await support.rows(credit, "SELECT last_price FROM prices WHERE issue_code = 'PRX'")
    return found[0]["last_price"] if found else None


async def test_prices_within_the_interval_are_held_back_and_the_latest_sent_when_due(settings: Settings) -> None:
    """Issue 8, R-003-25 (a delayed price): a subscriber gets an issue's last price at most once
    per KABUTO_PRICE_INTERVAL — the first at once, those within the interval held back, and the
    latest of them when it is due; every trade is still its own ``market.last_price`` event."""
    interval = timedelta(seconds=3)  # three commands fit in it on a loaded machine
    async with support.agents(settings.with_(price_interval=interval), *AGENTS) as rt:
        exchange, credit = rt["exchange"], rt["credit"]
        await exchange.outcomes.wait_count(lambda s: s.type == "market.subscribe_prices", 2)
        await exchange.command("exchange", prices.listed("PRX", "common", Decimal(1_000)))
        started = time.monotonic()
        for price in (1_100, 1_200, 1_300):
            await exchange.command("exchange", _trade_at(price))
        assert time.monotonic() - started < interval.total_seconds()  # else this test proves nothing
        assert await _price_updates_to(exchange, "credit") == [None, Decimal(1_100)]
        assert await support.rows(exchange, "SELECT price_owed FROM instruments") == [{"price_owed": True}]

        await support.eventually(lambda: _equals(_credit_price(credit), Decimal(1_300)))
        assert time.monotonic() - started >= interval.total_seconds() * 0.9  # held back, not sent at once
        for subscriber in ("credit", "brokerage"):  # 1,200 never went out: the latest did
            assert await _price_updates_to(exchange, subscriber) == [None, Decimal(1_100), Decimal(1_300)]
        assert await support.rows(exchange, "SELECT price_owed FROM instruments") == [{"price_owed": False}]
        events = await support.rows(
            exchange, "SELECT count(*) AS n FROM outbox_messages WHERE message_type = 'market.last_price'"
        )
        assert events == [{"n": 3}]


async def _equals(value: Awaitable[object], expected: object) -> bool:
    return await value == expected


async def test_an_update_owed_when_the_exchange_stopped_is_sent_when_it_starts(settings: Settings) -> None:
    """What is owed is a fact of the database (migration 0079), not of the process: an exchange
    stopped with an update held back sends it when it starts again, interval or not."""
    held = settings.with_(price_interval=timedelta(minutes=10))
    async with support.agents(held, *AGENTS) as rt:
        exchange = rt["exchange"]
        await exchange.outcomes.wait_count(lambda s: s.type == "market.subscribe_prices", 2)
        await exchange.command("exchange", prices.listed("PRX", "common", Decimal(1_000)))
        await exchange.command("exchange", _trade_at(1_100))
        await exchange.command("exchange", _trade_at(1_250))
        assert await _price_updates_to(exchange, "credit") == [None, Decimal(1_100)]
    sent_once_owed = [None, Decimal(1_100), Decimal(1_250)]
    async with support.agents(held, "exchange") as rt:  # alone: the subscribers' snapshots would cover it
        await support.eventually(lambda: _equals(_price_updates_to(rt["exchange"], "credit"), sent_once_owed))
        assert await _price_updates_to(rt["exchange"], "brokerage") == sent_once_owed
        assert await support.rows(rt["exchange"], "SELECT price_owed FROM instruments") == [{"price_owed": False}]


async def test_two_prices_recorded_in_one_transaction_leave_the_later_with_the_subscribers(
    settings: Settings,
) -> None:
    """A batch run again a savepoint each records every trade in one transaction. Each price gets
    the clock's moment, not the transaction's: with one moment for both, the subscribers, who keep
    the newest, kept the first price and dropped the later one as no newer."""
    async with support.agents(settings.with_(price_interval=timedelta(0)), *AGENTS) as rt:
        exchange, credit = rt["exchange"], rt["credit"]
        await exchange.outcomes.wait_count(lambda s: s.type == "market.subscribe_prices", 2)
        await exchange.command("exchange", prices.listed("PRX", "common", Decimal(1_000)))

        async def two_trades(ctx: Context) -> None:
            await prices.announce_trade(ctx, "PRX", Decimal(1_100))
            await prices.announce_trade(ctx, "PRX", Decimal(1_250))

        await exchange.command("exchange", two_trades)
        await credit.outcomes.wait_count(lambda s: s.type == "market.price_update", 3)
        assert await _credit_price(credit) == Decimal(1_250)
        assert await _price_updates_to(exchange, "credit") == [None, Decimal(1_100), Decimal(1_250)]


async def test_the_owed_update_gives_way_to_a_transaction_holding_the_issue_and_goes_after_it(
    settings: Settings,
) -> None:
    """The job never waits for an issue's row (SKIP LOCKED): a batch holding it (and maybe about to
    lock one the job holds) goes first; the update follows an interval later, once it is done."""
    interval = timedelta(seconds=0.3)
    async with support.agents(settings.with_(price_interval=interval), *AGENTS) as rt:
        exchange, credit = rt["exchange"], rt["credit"]
        await exchange.outcomes.wait_count(lambda s: s.type == "market.subscribe_prices", 2)
        await exchange.command("exchange", prices.listed("PRX", "common", Decimal(1_000)))
        await exchange.command("exchange", _trade_at(1_100))
        holding, release = asyncio.Event(), asyncio.Event()

        async def hold_the_row(ctx: Context) -> None:
            await ctx.connection.execute("SELECT 1 FROM instruments WHERE issue_code = 'PRX' FOR UPDATE")
            holding.set()
            await release.wait()

        await exchange.command("exchange", _trade_at(1_300))  # held back
        gave_way = prices.PRICES.gave_way
        holder = asyncio.create_task(exchange.command("exchange", hold_the_row))
        await holding.wait()
        await support.eventually(lambda: prices.PRICES.gave_way >= gave_way + 2)  # tried, and again
        assert await _price_updates_to(exchange, "credit") == [None, Decimal(1_100)]
        release.set()
        await holder
        await support.eventually(lambda: _equals(_credit_price(credit), Decimal(1_300)))
        assert await support.rows(exchange, "SELECT price_owed FROM instruments") == [{"price_owed": False}]
