"""An order that trades is written in one statement (stop 36): its row, the resting orders it
touched, its executions entered in the order matching list with their CertIDs out of the list
(S92–S94), and each sell order's instruction view as the statement left it (S95 instructs from
it). Before, the order's row and the touched rows were one round trip and each execution another.

What the statement returns must be what the separate reads return after it, and a resting order
it failed to write must fail it whole.
"""

from __future__ import annotations

import dataclasses
from typing import Any
from uuid import UUID

import asyncpg
import pytest

from agents.exchange import order_repo
from agents.exchange.book import Execution, Order, OrderBook, Result
from schemas.trading import CancelReason, OrderType, Side, SubmitOrder, TimeInForce
from tests import support
from tests.integration.test_read_ahead import PRICE, order, values

ROWS_WRITTEN = "SELECT coalesce(nullif(current_setting('kabuto.order_rows_written', true), ''), '0')::bigint"
CERT_A, CERT_B = UUID(int=0xA), UUID(int=0xB)


@pytest.fixture
def connection(listed_exchange: asyncpg.Connection) -> asyncpg.Connection:
    return listed_exchange


def selling(request: SubmitOrder) -> SubmitOrder:
    return request.model_copy(update={"terms": request.terms.model_copy(update={"side": Side.SELL})})


async def resting(
    connection: asyncpg.Connection, user: str, coid: str, side: Side, quantity: int, cert_id: UUID | None = None
) -> Order:
    """A resting limit order at PRICE, written alone; a sell order's CertID listed to its user."""
    number = await order_repo.next_acceptance_number(connection)
    rest = Order(number, coid, user, side, OrderType.LIMIT, PRICE, quantity, quantity, cert_id=cert_id)
    request = order(user, coid)
    await order_repo.insert_order(connection, rest, selling(request) if side is Side.SELL else request, "h", "d")
    if cert_id is not None:
        await connection.execute(
            """INSERT INTO certid_list (cert_id, issue_code, user_id, shares, status, version)
               VALUES ($1, $2, $3, $4, 'valid', 1)""",
            cert_id,
            support.ISSUE,
            user,
            quantity,
        )
    return rest


async def inserted(
    connection: asyncpg.Connection, incoming: Order, request: SubmitOrder, result: Result, **kwargs: Any
) -> order_repo.Matched:
    """``incoming`` written as trading.book writes it, with what its submission did (``result``);
    in a batch, with what is held (``order_repo.write_held``). What its handler is told."""
    told: list[order_repo.Matched] = []

    async def then(matched: order_repo.Matched) -> None:
        told.append(matched)

    await order_repo.insert_order(
        connection,
        incoming,
        request,
        "hash",
        "digest",
        cancel_reason=result.cancel_reason,
        touched=result.touched,
        executions=result.executions,
        then=then,
        **kwargs,
    )
    await order_repo.write_held(connection)
    (matched,) = told
    return matched


async def row(connection: asyncpg.Connection, number: int) -> tuple[object, ...]:
    r = await connection.fetchrow(
        "SELECT status, remaining, quantity, cancel_reason FROM orders WHERE acceptance_number = $1", number
    )
    return tuple(r) if r else ()


async def listed(connection: asyncpg.Connection) -> dict[UUID, str]:
    return {r["cert_id"]: r["status"] for r in await connection.fetch("SELECT cert_id, status FROM certid_list")}


async def as_read_after(connection: asyncpg.Connection, matched: order_repo.Matched) -> None:
    """Each view the statement returned is the one ``instruction_view`` reads after it."""
    for sell, view in matched.views.items():
        after = await order_repo.instruction_view(connection, sell)
        assert view.unfinished == after.unfinished
        assert values(view.orders) == values(after.orders)


async def test_a_buy_order_sweeping_two_sell_orders_is_one_statement_that_reads_as_the_reads_after_it(
    connection: asyncpg.Connection,
) -> None:
    """R-001-28, R-001-29, R-001-30 (S92–S95): a buy of 250 takes all 200 left of ada's sell (which has an execution of
    100 already with the issuer) and 50 of bea's. One statement: three order rows, two executions
    numbered in the book's order, both CertIDs out of the list; each sell order's view is the one
    ``instruction_view`` reads afterwards — ada's with her earlier execution first."""
    async with connection.transaction():
        old_buy = await resting(connection, "cy", "s-old-buy", Side.BUY, 100)
        ada = await resting(connection, "ada", "s-ada", Side.SELL, 300, CERT_A)
        bea = await resting(connection, "bea", "s-bea", Side.SELL, 100, CERT_B)
        earlier = Execution(old_buy.acceptance_number, ada.acceptance_number, PRICE, 100, "cy", "ada", Side.BUY)
        (old,) = (await order_repo.insert_matches(connection, support.ISSUE, [earlier], [CERT_A])).matching_numbers
        await order_repo.transfer_requested(connection, old, CERT_A, "digest-old")
        await connection.execute("UPDATE certid_list SET status = 'valid'")  # as the issuer's new CertIDs would be
        ada.remaining = 200
        await order_repo.save(connection, support.ISSUE, ada)
        book = OrderBook(support.ISSUE)
        book.load(ada)
        book.load(bea)
        number = await order_repo.next_acceptance_number(connection)
        incoming = Order(number, "s-buy", "dan", Side.BUY, OrderType.LIMIT, PRICE, 250, 250)
        result = book.submit(incoming)
        assert [(e.sell, e.quantity) for e in result.executions] == [
            (ada.acceptance_number, 200),
            (bea.acceptance_number, 50),
        ]
        before = await connection.fetchval(ROWS_WRITTEN)

        matched = await inserted(connection, incoming, order("dan", "s-buy"), result)

        assert await connection.fetchval(ROWS_WRITTEN) - before == 3
        first, second = matched.matching_numbers
        assert old < first < second
        assert await row(connection, number) == ("filled", 0, 250, None)
        assert await row(connection, ada.acceptance_number) == ("filled", 0, 300, None)
        assert await row(connection, bea.acceptance_number) == ("open", 50, 100, None)
        assert await listed(connection) == {CERT_A: "in_transfer", CERT_B: "in_transfer"}
        entered = await connection.fetch(
            "SELECT matching_number, buy_order, sell_order, shares, status FROM matches WHERE matching_number > $1"
            " ORDER BY 1",
            old,
        )
        assert [tuple(r) for r in entered] == [
            (first, number, ada.acceptance_number, 200, "pending_transfer"),
            (second, number, bea.acceptance_number, 50, "pending_transfer"),
        ]
        assert set(matched.views) == {ada.acceptance_number, bea.acceptance_number}
        await as_read_after(connection, matched)
        assert [(m.matching_number, m.status) for m in matched.views[ada.acceptance_number].unfinished] == [
            (old, "transfer_requested"),
            (first, "pending_transfer"),
        ]
        assert order_repo.next_transfer(matched.views[ada.acceptance_number].unfinished) is None  # S95: one at a time


async def test_an_ioc_sell_order_taking_two_buy_orders_is_one_view_with_both_executions(
    connection: asyncpg.Connection,
) -> None:
    """The order that sells is the one inserted: its view reads its own row as the statement wrote
    it (cancelled for the rest of an IOC), with both executions and both buy orders as they were
    left (filled, each without a cancel reason)."""
    async with connection.transaction():
        buys = [await resting(connection, user, f"i-{user}", Side.BUY, 100) for user in ("ada", "bea")]
        book = OrderBook(support.ISSUE)
        for buy in buys:
            book.load(buy)
        number = await order_repo.next_acceptance_number(connection)
        incoming = Order(
            number, "i-sell", "cy", Side.SELL, OrderType.LIMIT, PRICE, 500, 500, TimeInForce.IOC, cert_id=CERT_A
        )
        result = book.submit(incoming)
        matched = await inserted(connection, incoming, selling(order("cy", "i-sell")), result)
        (view,) = matched.views.values()
        assert [m.buy_order for m in view.unfinished] == [b.acceptance_number for b in buys]
        assert [m.matching_number for m in view.unfinished] == matched.matching_numbers
        assert view.orders[number].status == "cancelled" and view.orders[number].order.remaining == 0
        assert all(view.orders[b.acceptance_number].status == "filled" for b in buys)
        await as_read_after(connection, matched)
        assert await row(connection, number) == ("cancelled", 0, 500, CancelReason.IOC_REMAINDER.value)


async def test_a_touched_order_missing_from_the_table_fails_the_statement_whole(
    connection: asyncpg.Connection,
) -> None:
    """A resting order the book traded with but the table does not hold is a defect: the statement
    fails — its execution's foreign key refuses it — (the batch then runs again a delivery at a
    time) and leaves nothing: not the order's row, not an execution, not a CertID out of the list."""
    async with connection.transaction():
        sell = await resting(connection, "ada", "g-sell", Side.SELL, 100, CERT_A)
        ghost = dataclasses.replace(sell, acceptance_number=10**9)
        book = OrderBook(support.ISSUE)
        book.load(ghost)
        number = await order_repo.next_acceptance_number(connection)
        incoming = Order(number, "g-buy", "bea", Side.BUY, OrderType.LIMIT, PRICE, 100, 100)
        result = book.submit(incoming)
        with pytest.raises(asyncpg.ForeignKeyViolationError, match="matches_sell_order_fkey"):
            async with connection.transaction():
                await order_repo.insert_order(
                    connection,
                    incoming,
                    order("bea", "g-buy"),
                    "hash",
                    "digest",
                    touched=result.touched,
                    executions=result.executions,
                )
        assert await row(connection, number) == ()
        assert await connection.fetchval("SELECT count(*) FROM matches") == 0
        assert await listed(connection) == {CERT_A: "valid"}


def test_executions_numbered_out_of_the_books_order_are_refused() -> None:
    """The matching numbers are drawn as ``unnest`` yields the executions; should PostgreSQL ever
    draw them in another order, the earlier execution would be instructed later (S95): refused."""
    first = Execution(1, 10, PRICE, 100, "b", "s", Side.BUY)
    second = Execution(1, 11, PRICE, 100, "b", "s", Side.BUY)
    rows = [
        {"entered": True, "m_matching_number": 7, "m_buy_order": 1, "m_sell_order": 11},
        {"entered": True, "m_matching_number": 8, "m_buy_order": 1, "m_sell_order": 10},
    ]
    with pytest.raises(RuntimeError, match="entered as"):
        order_repo._matched(rows, [first, second])  # type: ignore[arg-type]
