"""The end of the exchange's batch (issue 8): its last prices (prices.py) and its books' seal
(warm_book.py) are one write of the instrument rows, where they were two statements one after
the other on the same rows. What each wrote and what each told stays as it was."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from agents.exchange import prices
from agents.exchange.warm_book import BOOKS, Segment, UncountedOrderWrite
from broker.context import Context
from broker.runtime import AgentRuntime
from broker.settings import Settings
from tests import support

AGENTS = ("exchange", "brokerage", "credit")


def _loading(*issues: str) -> Callable[[Context], Awaitable[None]]:
    """A handler that loads the books of ``issues`` (as a trading order's does), sealed by the batch."""

    async def load(_: object, ctx: Any) -> None:
        for issue in issues:
            await BOOKS.load(ctx.connection, issue)

    sealed = BOOKS.sealing(load)
    return lambda ctx: sealed(None, ctx)


async def _listed(exchange: AgentRuntime, *issues: str) -> None:
    await exchange.outcomes.wait_count(lambda s: s.type == "market.subscribe_prices", 2)
    for issue in issues:
        await exchange.command("exchange", prices.listed(issue, "common", Decimal(1_000)))


async def _sent(exchange: AgentRuntime) -> list[tuple[str, str, str, Decimal | None]]:
    rows = await support.rows(
        exchange,
        """SELECT message_type, routing_key, body FROM outbox_messages
           WHERE message_type IN ('market.last_price', 'market.price_update') ORDER BY seq, place""",
    )
    sent = [(r["message_type"], r["routing_key"], json.loads(r["body"])["payload"]) for r in rows]
    return [
        (kind, key, p["issue_code"], Decimal(p["price"] if "price" in p else p["last_price"] or 0) or None)
        for kind, key, p in sent
    ]


async def test_a_batchs_last_prices_are_written_with_its_seal_in_one_statement(settings: Settings) -> None:
    """PRX traded and its book sealed, PRY traded with no book of its own in the batch, PRZ's book
    sealed with no trade: one statement writes all three rows, each as the two statements did."""
    async with support.agents(settings, *AGENTS) as rt:
        exchange = rt["exchange"]
        await _listed(exchange, "PRX", "PRY", "PRZ")
        before = await _sent(exchange)
        pry_token = await support.rows(exchange, "SELECT book_token FROM instruments WHERE issue_code = 'PRY'")
        statements: list[str] = []

        def logged(record: asyncpg.connection.LoggedQuery) -> None:
            statements.append(" ".join(record.query.split()))

        async def batch(ctx: Context) -> None:
            ctx.connection.add_query_logger(logged)
            try:
                async with BOOKS.batch(ctx.connection, ()), prices.PRICES.batch(ctx.connection, ()):
                    await _loading("PRX", "PRZ")(ctx)
                    for issue, price in (("PRX", 1_010), ("PRY", 505), ("PRX", 1_020)):
                        await prices.announce_trade(ctx, issue, Decimal(price))
            finally:
                ctx.connection.remove_query_logger(logged)

        await exchange.command("exchange", batch)

        written = [s for s in statements if "UPDATE instruments" in s]  # the loads only lock the rows
        assert len(written) == 1, written
        assert written[0].startswith("WITH moment AS (SELECT clock_timestamp() AS at), priced AS (")
        rows = {
            r["issue_code"]: r
            for r in await support.rows(exchange, "SELECT issue_code, last_price, book_token FROM instruments")
        }
        assert rows["PRX"]["last_price"] == Decimal(1_020) and rows["PRY"]["last_price"] == Decimal(505)
        assert rows["PRZ"]["last_price"] is None
        for issue in ("PRX", "PRZ"):  # sealed with the token its book is kept under
            assert rows[issue]["book_token"] == BOOKS._warm[Segment(issue, False)].token
        assert rows["PRY"]["book_token"] == pry_token[0]["book_token"]  # no book of it in the batch: as it was
        told = (await _sent(exchange))[len(before) :]
        assert [t for t in told if t[0] == "market.last_price"] == [
            ("market.last_price", "market.last_price", "PRY", Decimal(505)),
            ("market.last_price", "market.last_price", "PRX", Decimal(1_020)),
        ]  # in the order of each issue's last trade, as before
        assert sorted(t for t in told if t[0] == "market.price_update") == sorted(
            ("market.price_update", subscriber, issue, price)
            for subscriber in ("brokerage", "credit")
            for issue, price in (("PRX", Decimal(1_020)), ("PRY", Decimal(505)))
        )


async def test_an_order_row_written_behind_order_repo_fails_a_batch_whose_seal_carries_its_prices(
    settings: Settings,
) -> None:
    """The seal's count of order rows is still checked when the prices write it, before anyone is
    told: the batch is refused whole (it then runs a delivery at a time) and nothing of it stays."""
    async with support.agents(settings, *AGENTS) as rt:
        exchange = rt["exchange"]
        await _listed(exchange, "PRX")
        before = await _sent(exchange)

        async def batch(ctx: Context) -> None:
            async with BOOKS.batch(ctx.connection, ()), prices.PRICES.batch(ctx.connection, ()):
                await _loading("PRX")(ctx)
                await ctx.connection.execute(  # an order row order_repo did not report
                    """INSERT INTO orders (acceptance_number, client_order_id, user_id, issue_code, side, order_type,
                           price, quantity, remaining, time_in_force, priority, status, settlement_account,
                           request_hash)
                       VALUES (nextval('acceptance_numbers'), 'behind', 'someone', 'PRX', 'buy', 'limit', 990, 100,
                               100, 'day', currval('acceptance_numbers'), 'open', 'acc', 'h')"""
                )
                await prices.announce_trade(ctx, "PRX", Decimal(1_010))

        uncounted = BOOKS.uncounted
        with pytest.raises(UncountedOrderWrite, match=r"counted 1 order rows.*order_repo 0"):
            await exchange.command("exchange", batch)
        assert BOOKS.uncounted == uncounted + 1
        BOOKS.uncounted = uncounted  # this test's own, on purpose (conftest fails any other)
        assert await _sent(exchange) == before
        assert await support.rows(exchange, "SELECT last_price FROM instruments") == [{"last_price": None}]
        assert await support.rows(exchange, "SELECT count(*) AS n FROM orders") == [{"n": 0}]
