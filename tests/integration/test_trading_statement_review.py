"""Review of stop 36 (an order that trades is one statement): the cases the statement's reads
depend on that test_trading_statement.py does not take — a buy order drawing on a standing cover
(its execution's draw is counted by a trigger that reads the order the same statement inserts),
book-entry orders (no CertID), rows and transfer requests held in a batch (read_ahead.py), and
self-trade prevention cancelling the rest after a fill. In each, what the statement returns must
be what the separate reads return after it, and the running totals must not drift.
"""

from __future__ import annotations

from decimal import Decimal
from uuid import UUID

import asyncpg
import pytest

from agents.exchange import order_repo, standing_repo
from agents.exchange.book import Order, OrderBook, Result
from schemas.trading import CancelReason, OrderType, Side, SubmitOrder, TimeInForce
from tests import support
from tests.integration.test_read_ahead import PRICE, order
from tests.integration.test_trading_statement import (
    CERT_A,
    CERT_B,
    ROWS_WRITTEN,
    as_read_after,
    inserted,
    listed,
    resting,
    row,
    selling,
)

COVER = UUID(int=0xC0)
UNIT = Decimal(1000)


@pytest.fixture
def connection(listed_exchange: asyncpg.Connection) -> asyncpg.Connection:
    return listed_exchange


def book_entry(request: SubmitOrder) -> SubmitOrder:
    return request.model_copy(update={"safekeeping_account": support.box()})


async def submitted(
    connection: asyncpg.Connection,
    book: OrderBook,
    incoming: Order,
    request: SubmitOrder,
    *,
    cover_id: UUID | None = None,
    cover_unit: Decimal | None = None,
) -> tuple[Result, order_repo.Matched]:
    """``incoming`` submitted to ``book`` and written as trading.book writes it."""
    result = book.submit(incoming)
    return result, await inserted(connection, incoming, request, result, cover_id=cover_id, cover_unit=cover_unit)


async def test_a_buy_order_on_a_standing_cover_that_trades_draws_what_two_statements_drew(
    connection: asyncpg.Connection,
) -> None:
    """Migration 0070: an execution draws shares × the buy order's cover_unit on its standing
    cover, through a trigger on ``matches`` that reads the buy order's row — here inserted by the
    same statement. It must see it: the order's open rest (150) and its execution (100) both draw,
    and the kept totals (cover drawn, open buy exposure) match the rows."""
    async with connection.transaction():
        sell = await resting(connection, "ada", "sc-sell", Side.SELL, 100, CERT_A)
        book = OrderBook(support.ISSUE)
        book.load(sell)
        number = await order_repo.next_acceptance_number(connection)
        incoming = Order(number, "sc-buy", "dan", Side.BUY, OrderType.LIMIT, PRICE, 250, 250)
        _, matched = await submitted(
            connection, book, incoming, order("dan", "sc-buy"), cover_id=COVER, cover_unit=UNIT
        )
        assert len(matched.matching_numbers) == 1
        drawn = await connection.fetchval(f"SELECT {standing_repo.STANDING_COVER_DRAWN.of('$1')}", COVER)
        assert drawn == 250 * UNIT
        assert await standing_repo.drawn_drift(connection) == []
        assert await order_repo.exposure_drift(connection) == []
        assert await order_repo.open_buy_exposure(connection, "dan") == 150 * PRICE


async def test_a_book_entry_sell_taking_two_buy_orders_takes_no_certid_off_the_list(
    connection: asyncpg.Connection,
) -> None:
    """Book-entry orders (no CertID, a safekeeping account): the statement enters both executions,
    takes nothing off the CertID list, and the sell order's view — its own row as the statement
    inserted it (safekeeping account and all, which S95 instructs by) and both buy orders as
    it left them — is what is read after it."""
    async with connection.transaction():
        await connection.execute(
            """INSERT INTO certid_list (cert_id, issue_code, user_id, shares, status, version)
               VALUES ($1, $2, 'cy', 500, 'valid', 1)""",
            CERT_B,
            support.ISSUE,
        )
        buys = []
        for user in ("ada", "bea"):
            number = await order_repo.next_acceptance_number(connection)
            buy = Order(number, f"be-{user}", user, Side.BUY, OrderType.LIMIT, PRICE, 100, 100)
            await order_repo.insert_order(connection, buy, book_entry(order(user, f"be-{user}")), "h", "d")
            buys.append(buy)
        book = OrderBook(support.ISSUE)
        for buy in buys:
            book.load(buy)
        number = await order_repo.next_acceptance_number(connection)
        incoming = Order(number, "be-sell", "cy", Side.SELL, OrderType.LIMIT, PRICE, 150, 150)
        result, matched = await submitted(connection, book, incoming, book_entry(selling(order("cy", "be-sell"))))
        assert [(e.buy, e.quantity) for e in result.executions] == [
            (buys[0].acceptance_number, 100),
            (buys[1].acceptance_number, 50),
        ]
        (view,) = matched.views.values()
        assert view.orders[number].safekeeping_account is not None and view.orders[number].order.cert_id is None
        assert view.orders[number].status == "filled"
        assert [m.matching_number for m in view.unfinished] == matched.matching_numbers
        assert (view.orders[buys[0].acceptance_number].status, view.orders[buys[1].acceptance_number].status) == (
            "filled",
            "open",
        )
        await as_read_after(connection, matched)
        assert await listed(connection) == {CERT_B: "valid"}


async def test_held_rows_and_a_held_transfer_request_are_read_as_they_will_be_written(
    connection: asyncpg.Connection,
) -> None:
    """In a batch (``holding_rows``): bea's sell order rested whole and its row is held; ada's sell
    order has an execution whose transfer request is held. A buy order taking both is held with
    bea's row, which is written once, as the buy left it (stop 40), and ada's view shows the held
    request as made, so S95 waits for it rather than instructing ada's new execution alongside."""
    async with connection.transaction():
        with order_repo.holding_rows():
            old_buy = await resting(connection, "cy", "hb-old", Side.BUY, 100)
            ada = await resting(connection, "ada", "hb-ada", Side.SELL, 200, CERT_A)
            book = OrderBook(support.ISSUE)
            book.load(ada)
            earlier = book.submit(
                Order(old_buy.acceptance_number, "hb-old", "cy", Side.BUY, OrderType.LIMIT, PRICE, 100, 100)
            )
            await order_repo.save(connection, support.ISSUE, ada)
            (old,) = (
                await order_repo.insert_matches(connection, support.ISSUE, earlier.executions, [CERT_A])
            ).matching_numbers
            await order_repo.transfer_requested(connection, old, CERT_A, "digest-old")  # held
            await connection.execute("UPDATE certid_list SET status = 'valid'")
            number = await order_repo.next_acceptance_number(connection)
            bea = Order(number, "hb-bea", "bea", Side.SELL, OrderType.LIMIT, PRICE, 100, 100, cert_id=CERT_B)
            await order_repo.insert_order(connection, bea, selling(order("bea", "hb-bea")), "h", "d")
            assert await row(connection, number) == ()  # held
            book.load(bea)
            number = await order_repo.next_acceptance_number(connection)
            incoming = Order(number, "hb-buy", "dan", Side.BUY, OrderType.LIMIT, PRICE, 200, 200)
            before = await connection.fetchval(ROWS_WRITTEN)
            result, matched = await submitted(connection, book, incoming, order("dan", "hb-buy"))
            assert [e.sell for e in result.executions] == [ada.acceptance_number, bea.acceptance_number]
            assert await connection.fetchval(ROWS_WRITTEN) - before == 3  # bea's row and dan's inserted, ada's updated
            assert await row(connection, bea.acceptance_number) == ("filled", 0, 100, None)
            ada_view = matched.views[ada.acceptance_number]
            assert [(m.matching_number, m.status, m.transfer_request_hash) for m in ada_view.unfinished] == [
                (old, "transfer_requested", "digest-old"),
                (matched.matching_numbers[0], "pending_transfer", None),
            ]
            assert order_repo.next_transfer(ada_view.unfinished) is None
            assert old_buy.acceptance_number in ada_view.orders  # the earlier execution's buy order, from the table
            await as_read_after(connection, matched)
            await order_repo.write_held_transfers(connection)


async def test_self_trade_prevention_after_a_fill_writes_the_fill_and_the_cancelled_rest(
    connection: asyncpg.Connection,
) -> None:
    """bea's buy of 300 takes ada's 100, then meets her own resting sell: the rest (200) is
    cancelled. One statement: her row cancelled with its reason, ada's filled, bea's own sell
    untouched, one execution, ada's CertID off the list; ada's view as read after."""
    async with connection.transaction():
        ada = await resting(connection, "ada", "stp-ada", Side.SELL, 100, CERT_A)
        own = await resting(connection, "bea", "stp-own", Side.SELL, 100, CERT_B)
        book = OrderBook(support.ISSUE)
        book.load(ada)
        book.load(own)
        number = await order_repo.next_acceptance_number(connection)
        incoming = Order(number, "stp-buy", "bea", Side.BUY, OrderType.LIMIT, PRICE, 300, 300, TimeInForce.DAY)
        before = await connection.fetchval(ROWS_WRITTEN)
        result, matched = await submitted(connection, book, incoming, order("bea", "stp-buy"))
        assert result.cancel_reason is CancelReason.SELF_TRADE_PREVENTED and result.cancelled_quantity == 200
        assert await connection.fetchval(ROWS_WRITTEN) - before == 2
        assert await row(connection, number) == ("cancelled", 0, 300, CancelReason.SELF_TRADE_PREVENTED.value)
        assert await row(connection, ada.acceptance_number) == ("filled", 0, 100, None)
        assert await row(connection, own.acceptance_number) == ("open", 100, 100, None)
        assert set(matched.views) == {ada.acceptance_number}
        assert matched.views[ada.acceptance_number].orders[number].status == "cancelled"
        await as_read_after(connection, matched)
        assert await listed(connection) == {CERT_A: "in_transfer", CERT_B: "valid"}
        assert await order_repo.exposure_drift(connection) == []
