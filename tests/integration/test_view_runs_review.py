"""Review of stop 31 (commit 8bb4742): a user's buy orders share a run of acceptance views, each
told what the run's earlier ones booked (read_ahead.Booked), and a buy that traded with sells
keeps the views read ahead but those of the CertIDs it bought.

Each test queues orders while the exchange is stopped and settles them as one batch, or lets the
exchange take them one delivery at a time: both must decide the same (R-001-23, S71-S95).
"""

from __future__ import annotations

import dataclasses
from decimal import Decimal

import pytest

from agents.exchange import order_repo, standing_repo
from agents.registry import AGENTS
from broker.runtime import AgentRuntime, running
from broker.settings import Settings
from kabuto_client import Participant
from schemas import market_rules as rules
from schemas.identity import EXCHANGE_ID
from schemas.trading import OrderType, SubmitOrder, TimeInForce
from tests import support
from tests.integration.test_read_ahead import (
    answer,
    book_entry_sell,
    buy,
    settle_queued_as_one_batch,
    standing_cover,
)
from tests.integration.test_standing_cover import cover_requests, drawn

UPPER = rules.price_band(Decimal(1000)).upper  # a market buy's cover unit on support.ISSUE
OTHER = "KB2"
OTHER_UPPER = rules.price_band(Decimal(500)).upper


def terms(order: SubmitOrder, **update: object) -> SubmitOrder:
    return order.model_copy(update={"terms": order.terms.model_copy(update=update)})


def market(order: SubmitOrder) -> SubmitOrder:
    return terms(order, order_type=OrderType.MARKET, price=None)


async def standing_drift(exchange: AgentRuntime) -> list[object]:
    async with exchange.pool.acquire() as connection:
        return list(await standing_repo.STANDING_COVER_DRAWN.drift(connection, _DRAWN_SUMMED))


_DRAWN_SUMMED = """SELECT o.cover_id AS key,
       sum(CASE WHEN o.status = 'open' THEN o.remaining * o.cover_unit ELSE 0 END)
     + coalesce(sum((SELECT sum(CASE m.status WHEN 'failed' THEN 0 WHEN 'completed' THEN m.shares * m.price
                                              ELSE m.shares * o.cover_unit END)
                     FROM matches m WHERE m.buy_order = o.acceptance_number)), 0) AS summed
  FROM orders o WHERE o.cover_unit IS NOT NULL GROUP BY o.cover_id"""


@pytest.mark.parametrize("one_batch", [False, True], ids=["one at a time", "one batch"])
async def test_a_market_buy_stopped_by_self_trade_prevention_draws_its_filled_shares_only(
    settings: Settings, traders: dict[str, Participant], one_batch: bool
) -> None:
    """A market buy (cover unit: the band's upper price) fills against frank, then meets dora's
    own sell: the rest is cancelled (self-trade prevention) and draws nothing; a FOK order that
    would meet her own sell is cancelled whole. The cover has room for exactly what one at a
    time draws, so the last order that fits must be drawn, and the one after it must not."""
    dora, frank = traders["dora"], traders["frank"]
    settings = dataclasses.replace(settings, batch_size=1)
    room = UPPER * 100 + Decimal(98_000) + Decimal(99_000)
    async with AgentRuntime(AGENTS["exchange"], settings) as exchange, support.agents(settings, "settlement") as rt:
        async with running(exchange):
            await support.list_issue(exchange)
            for name in ("dora", "frank"):
                await support.fund(rt["settlement"], name, Decimal(10_000_000))
            cover = await standing_cover(dora, int(room))
            for who, coid, price in ((frank, "f1", Decimal(990)), (dora, "ds", Decimal(1000))):
                placed = await who.send(book_entry_sell(who, coid, price=price), to=EXCHANGE_ID)
                assert (await answer(placed))[0] == "order.accepted"
        sent = [
            # fills 100 at 990 with frank's f1, then meets dora's ds: 50 cancelled; draws 100 x upper
            await dora.send(market(buy(dora, "d1", quantity=150, book_entry=True)), to=EXCHANGE_ID),
            # would fill only against her own ds: cancelled whole, draws nothing
            await dora.send(
                terms(buy(dora, "d2", price=Decimal(1000), book_entry=True), time_in_force=TimeInForce.FOK),
                to=EXCHANGE_ID,
            ),
            await dora.send(buy(dora, "d3", price=Decimal(980), book_entry=True), to=EXCHANGE_ID),  # rests: 98,000
            await dora.send(buy(dora, "d4"), to=EXCHANGE_ID),  # rests: 99,000, the room left exactly
            await dora.send(buy(dora, "d5", quantity=1), to=EXCHANGE_ID),  # no room: a cover of its own
        ]
        if one_batch:
            await settle_queued_as_one_batch(settings, exchange, len(sent))
        async with running(exchange):
            answers = [await answer(c) for c in sent]
            held = await drawn(exchange, cover)
            requests = await cover_requests(exchange)
            drift = await standing_drift(exchange)
            async with exchange.pool.acquire() as connection:
                exposure = await order_repo.exposure_drift(connection)
    assert [kind for kind, _ in answers] == ["order.accepted"] * 5, answers
    assert requests == 1  # d5's alone
    assert held == room
    assert drift == [] and exposure == []


@pytest.mark.parametrize("one_batch", [False, True], ids=["one at a time", "one batch"])
async def test_a_users_buys_on_two_issues_draw_on_one_cover_and_one_usage_limit(
    settings: Settings, traders: dict[str, Participant], one_batch: bool
) -> None:
    """Erin's buys on two issues share her account usage limit (300,000, R-001-23) and her cover:
    a partly filled order that rests opens only its rest, a market order cancelled whole opens
    and draws nothing, an IOC order opens nothing. The limit is met exactly, then exceeded."""
    erin, frank = traders["erin"], traders["frank"]
    settings = dataclasses.replace(settings, batch_size=1)
    async with AgentRuntime(AGENTS["exchange"], settings) as exchange, support.agents(settings, "settlement") as rt:
        async with running(exchange):
            await support.list_issue(exchange)
            await support.list_issue(exchange, OTHER, Decimal(500))
            for name in ("erin", "frank"):
                await support.fund(rt["settlement"], name, Decimal(10_000_000))
            cover = await standing_cover(erin, 1_000_000)
            placed = await frank.send(book_entry_sell(frank, "f1", quantity=100), to=EXCHANGE_ID)
            assert (await answer(placed))[0] == "order.accepted"
        other = buy(erin, "e2", quantity=1000, price=Decimal(500)).model_copy(update={"issue_code": OTHER})
        sent = [
            # 100 filled at 990, 100 rest: opens 99,000
            await erin.send(buy(erin, "e1", quantity=200, book_entry=True), to=EXCHANGE_ID),
            await erin.send(
                market(terms(other, quantity=10).model_copy(update={"client_order_id": "e0"})), to=EXCHANGE_ID
            ),
            await erin.send(other, to=EXCHANGE_ID),  # rests on KB2: 500,000 over the limit: refused
            await erin.send(
                other.model_copy(update={"client_order_id": "e3"}).model_copy(
                    update={"terms": other.terms.model_copy(update={"quantity": 402})}
                ),
                to=EXCHANGE_ID,
            ),  # 99,000 + 201,000 = 300,000: the limit exactly
            await erin.send(
                terms(buy(erin, "e4", quantity=1), time_in_force=TimeInForce.IOC), to=EXCHANGE_ID
            ),  # 990 more: over the limit
        ]
        if one_batch:
            await settle_queued_as_one_batch(settings, exchange, len(sent))
        async with running(exchange):
            answers = [await answer(c) for c in sent]
            held = await drawn(exchange, cover)
            drift = await standing_drift(exchange)
            async with exchange.pool.acquire() as connection:
                exposure = await order_repo.exposure_drift(connection)
                open_now = await order_repo.open_buy_exposure(connection, "erin")
    assert [a for a in answers] == [
        ("order.accepted", answers[0][1]),
        ("order.accepted", answers[1][1]),
        ("order.rejected", "account_usage_limit_exceeded"),
        ("order.accepted", answers[3][1]),
        ("order.rejected", "account_usage_limit_exceeded"),
    ], answers
    assert open_now == Decimal(300_000)
    assert held == Decimal(198_000) + Decimal(201_000)
    assert drift == [] and exposure == []
