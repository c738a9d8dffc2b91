"""Review of two exchange folds (commits e228ff8 and 8da0092).

* e228ff8: the resting orders a submission touched are written by the statement that writes the
  incoming order (a ``touched`` CTE in ``order_repo.insert_order`` and ``order_repo.save``), and
  the warm books count what that statement returns.
* 8da0092: in a batch run all at once, S95's "transfer requested" UPDATE is held
  (``order_repo._TRANSFERS``) and written at the batch's end, or before any handler whose
  messages are not all ``SubmitOrder``.

read_ahead.py's invariant: a batch decides exactly what its deliveries would decide one at a time.
"""

from __future__ import annotations

import dataclasses
from decimal import Decimal

import asyncpg
import pytest

from agents.exchange import order_repo
from agents.exchange.book import Order, OrderBook
from agents.registry import AGENTS
from broker import group_commit
from broker.consumer import Outcome
from broker.runtime import AgentRuntime, running
from broker.settings import Settings
from kabuto_client import Participant
from schemas.identity import EXCHANGE_ID
from schemas.trading import CancelOrder, OrderType, Side, SubmitOrder, TimeInForce
from tests import support
from tests.integration.test_read_ahead import (
    PRICE,
    answer,
    book_entry_sell,
    buy,
    covered,
    order,
    queued,
)
from tests.integration.test_trading_statement import inserted


@pytest.fixture
def connection(listed_exchange: asyncpg.Connection) -> asyncpg.Connection:
    return listed_exchange


ROWS_WRITTEN = "SELECT coalesce(nullif(current_setting('kabuto.order_rows_written', true), ''), '0')::bigint"


async def resting_buy(connection: asyncpg.Connection, user: str, coid: str, quantity: int) -> Order:
    number = await order_repo.next_acceptance_number(connection)
    resting = Order(number, coid, user, Side.BUY, OrderType.LIMIT, PRICE, quantity, quantity)
    await order_repo.insert_order(connection, resting, order(user, coid), "hash", "digest")
    return resting


async def row(connection: asyncpg.Connection, number: int) -> tuple[object, ...]:
    r = await connection.fetchrow(
        "SELECT status, remaining, quantity, cancel_reason, client_order_id FROM orders WHERE acceptance_number = $1",
        number,
    )
    return tuple(r)


# --- e228ff8: the touched CTE --------------------------------------------------------------


async def test_an_ioc_sell_writes_the_resting_orders_it_touched_as_a_save_each_did(
    connection: asyncpg.Connection,
) -> None:
    """An IOC sell fills both resting buys and is cancelled for the rest: the incoming row says
    cancelled (ioc remainder), each touched row filled with no cancel reason (a resting order is
    never cancelled by a submission: self-trade prevention and time in force cancel the incoming
    order's remainder). The database counts three order rows written (migration 0066)."""
    async with connection.transaction():
        first = await resting_buy(connection, "ada", "t-b1", 100)
        second = await resting_buy(connection, "bea", "t-b2", 300)
        book = OrderBook(support.ISSUE)
        book.load(first)
        book.load(second)
        number = await order_repo.next_acceptance_number(connection)
        incoming = Order(
            number, "t-s1", "cy", Side.SELL, OrderType.LIMIT, PRICE, 500, 500, time_in_force=TimeInForce.IOC
        )
        request = order("cy", "t-s1")
        request = request.model_copy(update={"terms": request.terms.model_copy(update={"side": Side.SELL})})
        result = book.submit(incoming)
        assert [o.acceptance_number for o in result.touched] == [first.acceptance_number, second.acceptance_number]
        before = await connection.fetchval(ROWS_WRITTEN)
        await inserted(connection, incoming, request, result)
        assert await connection.fetchval(ROWS_WRITTEN) - before == 3
        with pytest.raises(ValueError, match="touched resting orders without an execution"):  # a defect, refused
            await order_repo.insert_order(connection, incoming, request, "hash", "digest", touched=result.touched)
        assert await row(connection, first.acceptance_number) == ("filled", 0, 100, None, "t-b1")
        assert await row(connection, second.acceptance_number) == ("filled", 0, 300, None, "t-b2")
        assert await row(connection, number) == ("cancelled", 0, 500, "ioc_remainder", "t-s1")


async def test_a_touched_order_equal_to_the_order_saved_is_refused(connection: asyncpg.Connection) -> None:
    """``save`` must not write one row twice in one statement (PostgreSQL would keep one of the two
    updates, unsaid): the guard holds, also under ``python -O``. A touched order that is not in
    the table fails the statement rather than being lost."""
    async with connection.transaction():
        resting = await resting_buy(connection, "ada", "t-same", 100)
        with pytest.raises(ValueError, match="saved and touched"):
            await order_repo.save(connection, support.ISSUE, resting, None, [resting])
        other = await resting_buy(connection, "bea", "t-other", 100)
        ghost = dataclasses.replace(other, acceptance_number=10**9)
        with pytest.raises(RuntimeError, match=r"touched, 0 of them written"):
            await order_repo.save(connection, support.ISSUE, resting, None, [ghost])


# --- 8da0092 and e228ff8 through a real batch --------------------------------------------


async def settle(settings: Settings, exchange: AgentRuntime, count: int, one_batch: bool) -> None:
    """The ``count`` deliveries waiting in the exchange's inbox: one batch, or one at a time."""
    async with queued(settings, count) as deliveries:
        if one_batch:
            settled = await group_commit.settle_batch(exchange.consumer, deliveries)
        else:
            settled = [(await group_commit.settle_batch(exchange.consumer, [d]))[0] for d in deliveries]
    assert {s.outcome for s in settled} == {Outcome.PROCESSED}


@pytest.mark.parametrize("one_batch", [False, True], ids=["one at a time", "one batch"])
async def test_trades_a_held_row_and_a_cancel_in_one_batch_decide_as_one_at_a_time(
    settings: Settings,
    traders: dict[str, Participant],
    one_batch: bool,
) -> None:
    """erin's buy trades with frank's resting sell (its request held); dora's buy rests whole (its
    row held); frank's second sell fills dora's held row (touched: written after the held rows);
    frank cancels his first sell (a handler that is not an order: the held request is written
    first); dora's second buy finds no ask left. Same rows, same instructions either way."""
    dora, erin, frank = traders["dora"], traders["erin"], traders["frank"]
    settings = dataclasses.replace(settings, batch_size=1)
    async with AgentRuntime(AGENTS["exchange"], settings) as exchange, support.agents(settings, "settlement") as rt:
        async with running(exchange):
            await covered(exchange, rt["settlement"], traders, {"dora": 1_000_000, "erin": 1_000_000})
            first = await answer(await frank.send(book_entry_sell(frank, "f1", quantity=300), to=EXCHANGE_ID))
            assert first[0] == "order.accepted"
        sent = [
            await erin.send(buy(erin, "e1", book_entry=True), to=EXCHANGE_ID),
            await dora.send(buy(dora, "d1", price=Decimal(980), book_entry=True), to=EXCHANGE_ID),
            await frank.send(book_entry_sell(frank, "f2", price=Decimal(980)), to=EXCHANGE_ID),
            await frank.send(CancelOrder(client_order_id="f1"), to=EXCHANGE_ID),
            await dora.send(buy(dora, "d2", book_entry=True), to=EXCHANGE_ID),
        ]
        await settle(settings, exchange, len(sent), one_batch)
        orders = await support.rows(
            exchange, "SELECT client_order_id, status, remaining, cancel_reason FROM orders ORDER BY acceptance_number"
        )
        matches = await support.rows(
            exchange,
            """SELECT b.client_order_id AS buy, s.client_order_id AS sell, m.status,
                      m.transfer_request_hash IS NOT NULL AS hashed
               FROM matches m JOIN orders b ON b.acceptance_number = m.buy_order
               JOIN orders s ON s.acceptance_number = m.sell_order ORDER BY m.matching_number""",
        )
        instructed = await support.rows(
            exchange, "SELECT count(*) AS n FROM outbox_messages WHERE message_type = 'settlement.instruction'"
        )
    assert orders == [
        {"client_order_id": "f1", "status": "cancelled", "remaining": 0, "cancel_reason": "requested"},
        {"client_order_id": "e1", "status": "filled", "remaining": 0, "cancel_reason": None},
        {"client_order_id": "d1", "status": "filled", "remaining": 0, "cancel_reason": None},
        {"client_order_id": "f2", "status": "filled", "remaining": 0, "cancel_reason": None},
        {"client_order_id": "d2", "status": "open", "remaining": 100, "cancel_reason": None},
    ]
    assert matches == [
        {"buy": "e1", "sell": "f1", "status": "transfer_requested", "hashed": True},
        {"buy": "d1", "sell": "f2", "status": "transfer_requested", "hashed": True},
    ]
    assert instructed == [{"n": 2}]


@pytest.mark.parametrize("one_batch", [False, True], ids=["one at a time", "one batch"])
async def test_an_ioc_sell_over_two_buys_in_a_batch_instructs_its_first_execution_once(
    settings: Settings,
    traders: dict[str, Participant],
    one_batch: bool,
) -> None:
    """frank's IOC sell fills erin's and dora's resting buys (touched, one statement) and is
    cancelled for the rest; its instruction view is read again after the cancel (``_apply``):
    the first execution is instructed, once, and a second IOC sell of his in the same batch
    trades with nothing."""
    dora, erin, frank = traders["dora"], traders["erin"], traders["frank"]
    settings = dataclasses.replace(settings, batch_size=1)
    async with AgentRuntime(AGENTS["exchange"], settings) as exchange, support.agents(settings, "settlement") as rt:
        async with running(exchange):
            await covered(exchange, rt["settlement"], traders, {"dora": 1_000_000, "erin": 1_000_000})
        ioc = book_entry_sell(frank, "f1", quantity=300)
        ioc = ioc.model_copy(update={"terms": ioc.terms.model_copy(update={"time_in_force": TimeInForce.IOC})})
        ioc_2 = ioc.model_copy(update={"client_order_id": "f2"})
        sent = [
            await erin.send(buy(erin, "e1", book_entry=True), to=EXCHANGE_ID),
            await dora.send(buy(dora, "d1", book_entry=True), to=EXCHANGE_ID),
            await frank.send(ioc, to=EXCHANGE_ID),
            await frank.send(ioc_2, to=EXCHANGE_ID),
        ]
        await settle(settings, exchange, len(sent), one_batch)
        orders = await support.rows(
            exchange, "SELECT client_order_id, status, remaining, cancel_reason FROM orders ORDER BY acceptance_number"
        )
        matches = await support.rows(exchange, "SELECT status FROM matches ORDER BY matching_number")
        instructed = await support.rows(
            exchange, "SELECT count(*) AS n FROM outbox_messages WHERE message_type = 'settlement.instruction'"
        )
    assert orders == [
        {"client_order_id": "e1", "status": "filled", "remaining": 0, "cancel_reason": None},
        {"client_order_id": "d1", "status": "filled", "remaining": 0, "cancel_reason": None},
        {"client_order_id": "f1", "status": "cancelled", "remaining": 0, "cancel_reason": "ioc_remainder"},
        {"client_order_id": "f2", "status": "cancelled", "remaining": 0, "cancel_reason": "ioc_remainder"},
    ]
    assert [m["status"] for m in matches] == ["transfer_requested", "pending_transfer"]
    assert instructed == [{"n": 1}]


def _unused(_: SubmitOrder) -> None:  # keep the import for readers of the module's types
    return None
