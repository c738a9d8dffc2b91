"""Settled trades are completed in one statement (stop 39): their executions completed in the
order matching list, with what the trades' ends read after it — the orders of both parties and
each sell order's executions still unfinished (S121–S130). Before, that was three round trips:
``transfers_completed``, ``orders``, ``unfinished_matches_of``.

What the statement returns must be what those reads return after the update, and the update
must be the same.
"""

from __future__ import annotations

from uuid import UUID

import asyncpg
import pytest

from agents.exchange import order_repo, repo
from agents.exchange.book import Execution
from schemas.trading import Side
from tests import support
from tests.integration.test_read_ahead import PRICE, values
from tests.integration.test_trading_statement import CERT_A, CERT_B, resting

NEW_CERT = UUID(int=0xC)


@pytest.fixture
def connection(listed_exchange: asyncpg.Connection) -> asyncpg.Connection:
    return listed_exchange


async def matches(connection: asyncpg.Connection) -> list[tuple[object, ...]]:
    rows = await connection.fetch(
        """SELECT matching_number, status, name_transfer_number, new_cert_id, settled, completed_at IS NOT NULL
           FROM matches ORDER BY matching_number"""
    )
    return [tuple(r) for r in rows]


async def test_completing_reads_in_one_statement_what_the_three_reads_after_the_update_read(
    connection: asyncpg.Connection,
) -> None:
    """R-001-37, R-001-38 (S121–S130): ada's sell of 300 has three executions, to cy, dan and
    eve; bea's sell of 100 one, to cy. Ada's first and bea's settle together: the statement
    leaves out the one it completes from ada's unfinished (its snapshot still shows it
    unfinished), keeps her next two in order, and returns the parties' orders."""
    async with connection.transaction():
        ada = await resting(connection, "ada", "c-ada", Side.SELL, 300, CERT_A)
        bea = await resting(connection, "bea", "c-bea", Side.SELL, 100, CERT_B)
        cy = await resting(connection, "cy", "c-cy", Side.BUY, 200)
        dan = await resting(connection, "dan", "c-dan", Side.BUY, 100)
        eve = await resting(connection, "eve", "c-eve", Side.BUY, 100)
        trades = [
            Execution(cy.acceptance_number, ada.acceptance_number, PRICE, 100, "cy", "ada", Side.BUY),
            Execution(dan.acceptance_number, ada.acceptance_number, PRICE, 100, "dan", "ada", Side.BUY),
            Execution(eve.acceptance_number, ada.acceptance_number, PRICE, 100, "eve", "ada", Side.BUY),
            Execution(cy.acceptance_number, bea.acceptance_number, PRICE, 100, "cy", "bea", Side.BUY),
        ]
        ada_1, ada_2, ada_3, bea_1 = (
            await order_repo.insert_matches(connection, support.ISSUE, trades, [CERT_A, CERT_B])
        ).matching_numbers
        await order_repo.transfer_requested(connection, ada_1, CERT_A, "digest-ada")
        await order_repo.transfer_requested(connection, bea_1, CERT_B, "digest-bea")
        completed = [(ada_1, 41, NEW_CERT), (bea_1, 42, None)]
        parties = [cy.acceptance_number, ada.acceptance_number, cy.acceptance_number, bea.acceptance_number]
        sells = [ada.acceptance_number, bea.acceptance_number]

        before = connection.transaction()  # the three statements of before, then rolled back
        await before.start()
        await order_repo.transfers_completed(connection, completed)
        rows_before = await matches(connection)
        orders_before = await order_repo.orders(connection, parties)
        unfinished_before = await order_repo.unfinished_matches_of(connection, sells)
        await before.rollback()
        assert [status for _, status, *_ in await matches(connection)] == [  # as it was
            "transfer_requested",
            "pending_transfer",
            "pending_transfer",
            "transfer_requested",
        ]

        done = await order_repo.complete(connection, completed, parties, sells)

        assert await matches(connection) == rows_before
        assert [(number, status, ntn, cert) for number, status, ntn, cert, *_ in rows_before] == [
            (ada_1, "completed", 41, NEW_CERT),
            (ada_2, "pending_transfer", None, None),
            (ada_3, "pending_transfer", None, None),
            (bea_1, "completed", 42, None),
        ]
        assert done.unfinished == unfinished_before
        assert [m.matching_number for m in done.unfinished[ada.acceptance_number]] == [ada_2, ada_3]
        assert done.unfinished[bea.acceptance_number] == []
        assert values({n: done.orders[n] for n in orders_before}) == values(orders_before)
        assert set(orders_before) == {ada.acceptance_number, bea.acceptance_number, cy.acceptance_number}
        assert (
            order_repo.next_transfer(done.unfinished[ada.acceptance_number])
            == done.unfinished[ada.acceptance_number][0]
        )


async def test_completing_nothing_unfinished_and_no_such_execution_changes_nothing_and_reads_the_orders(
    connection: asyncpg.Connection,
) -> None:
    """A sell order whose one execution settles has nothing left unfinished; an execution the list
    does not hold is not completed (as the update alone never did)."""
    async with connection.transaction():
        ada = await resting(connection, "ada", "c-ada", Side.SELL, 100, CERT_A)
        cy = await resting(connection, "cy", "c-cy", Side.BUY, 100)
        trade = Execution(cy.acceptance_number, ada.acceptance_number, PRICE, 100, "cy", "ada", Side.BUY)
        (number,) = (await order_repo.insert_matches(connection, support.ISSUE, [trade], [CERT_A])).matching_numbers

        done = await order_repo.complete(
            connection,
            [(number, 7, None), (number + 1000, 8, None)],
            [cy.acceptance_number, ada.acceptance_number],
            [ada.acceptance_number],
        )

        assert done.unfinished == {ada.acceptance_number: []}
        assert set(done.orders) == {cy.acceptance_number, ada.acceptance_number}
        assert [(n, status) for n, status, *_ in await matches(connection)] == [(number, "completed")]


async def certid_list(connection: asyncpg.Connection) -> list[tuple[object, ...]]:
    rows = await connection.fetch("SELECT cert_id, user_id, shares, status, version FROM certid_list ORDER BY cert_id")
    return [tuple(r) for r in rows]


async def test_the_certid_lists_writes_ride_in_the_completing_statement(connection: asyncpg.Connection) -> None:
    """S127 (issue 8): the CertID list's writes for the trades completed — the old CertID retired,
    the new ones listed valid — are made by the completing statement (``repo.listing``), where
    ``repo.transferred_all`` was a round trip of its own after it. The list, the executions and
    what is read are as the two statements leave them."""
    remainder = UUID(int=0xD)
    transfers = [repo.Transferred(support.ISSUE, CERT_A, 7, [(NEW_CERT, "cy", 100), (remainder, "ada", 200)])]
    async with connection.transaction():
        ada = await resting(connection, "ada", "c-ada", Side.SELL, 300, CERT_A)
        cy = await resting(connection, "cy", "c-cy", Side.BUY, 100)
        trade = Execution(cy.acceptance_number, ada.acceptance_number, PRICE, 100, "cy", "ada", Side.BUY)
        (number,) = (await order_repo.insert_matches(connection, support.ISSUE, [trade], [CERT_A])).matching_numbers
        completing = ([(number, 41, NEW_CERT)], [cy.acceptance_number, ada.acceptance_number], [ada.acceptance_number])

        before = connection.transaction()  # the two statements of before, then rolled back
        await before.start()
        done_before = await order_repo.complete(connection, *completing)
        await repo.transferred_all(connection, transfers)
        listed_before, matches_before = await certid_list(connection), await matches(connection)
        await before.rollback()

        statements: list[str] = []
        connection.add_query_logger(lambda record: statements.append(record.query))
        done = await order_repo.complete(connection, *completing, riding=repo.listing(transfers))
        await support.eventually(lambda: statements, every=0)  # the logger is called a loop turn later

        assert len(statements) == 1 and "INSERT INTO certid_list" in statements[0]
        assert (
            await certid_list(connection)
            == listed_before
            == [
                (CERT_A, "ada", 300, "retired", 7),
                (NEW_CERT, "cy", 100, "valid", 7),
                (remainder, "ada", 200, "valid", 7),
            ]
        )
        assert await matches(connection) == matches_before
        assert done.unfinished == done_before.unfinished
        assert values(done.orders) == values(done_before.orders)
