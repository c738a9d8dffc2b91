"""A batch's trading orders written in one statement (issue 8, docs/performance.md stop 40;
agents/exchange/order_repo.py ``write_held``).

In a batch run all at once, what each order writes — its row, the resting orders it touched,
its executions — is held and written with the batch's other orders in one statement, and the
handler's tail (the executions told, S95's instruction, a cancelled rest) runs once it is. The
batch must still write and send exactly what its orders would one at a time (R-001-21..25,
S91–S95): here a resting sell order is traded by three orders of the batch (its row touched
three times, written once), a sell order booked in the batch is traded by a later one (its row
inserted as that order left it), and an IOC order's rest is cancelled after its fills.
"""

from __future__ import annotations

import dataclasses
import io
import json

import pytest

from agents.registry import AGENTS
from broker.runtime import AgentRuntime, running
from broker.settings import Settings
from broker.topology import ANSWERS_SUFFIX
from kabuto_client import Participant
from schemas.identity import EXCHANGE_ID, SETTLEMENT_ID
from schemas.trading import TimeInForce
from tests import support
from tests.integration.test_read_ahead import answer, book_entry_sell, buy, covered, settle_queued_as_one_batch

TRADING_STATEMENT = "WITH touched AS ("


def trading_statements(starting: str = TRADING_STATEMENT) -> float:
    """The exchange's statements that wrote traded orders (or that begin with ``starting``), as
    the census counts them by text."""
    return support.census("exchange", starting)


# A statement of its own that writes transfer requests (S95), not riding with a batch's claim.
TRANSFERS_ALONE = "WITH transferred AS (UPDATE matches SET status = 'transfer_requested'"


@pytest.mark.parametrize("one_batch", [False, True], ids=["one at a time", "one batch"])
async def test_a_batchs_trading_orders_are_one_statement_that_writes_and_sends_what_each_alone_would(
    settings: Settings, traders: dict[str, Participant], one_batch: bool, log_lines: io.StringIO
) -> None:
    dora, erin, frank = traders["dora"], traders["erin"], traders["frank"]
    settings = dataclasses.replace(settings, batch_size=1).with_(statement_census=True)
    async with AgentRuntime(AGENTS["exchange"], settings) as exchange, support.agents(settings, "settlement") as rt:
        async with running(exchange):
            await covered(exchange, rt["settlement"], traders, {"dora": 1_000_000, "erin": 1_000_000})
            f1 = await answer(await frank.send(book_entry_sell(frank, "f1", quantity=300), to=EXCHANGE_ID))
        assert f1[0] == "order.accepted"
        # The exchange is stopped: the orders below wait in its queue.
        ioc = buy(erin, "e2", quantity=300, book_entry=True)
        ioc = ioc.model_copy(update={"terms": ioc.terms.model_copy(update={"time_in_force": TimeInForce.IOC})})
        sent = [
            await erin.send(buy(erin, "e1", book_entry=True), to=EXCHANGE_ID),  # 100 of f1
            await dora.send(buy(dora, "d1", book_entry=True), to=EXCHANGE_ID),  # 100 more of f1
            await frank.send(book_entry_sell(frank, "f2"), to=EXCHANGE_ID),  # rests behind f1
            await erin.send(ioc, to=EXCHANGE_ID),  # f1's last 100, f2's 100; its last 100 cancelled
        ]
        before, transfers_before = trading_statements(), trading_statements(TRANSFERS_ALONE)
        last = (await support.rows(exchange, "SELECT coalesce(max(seq), 0) AS seq FROM outbox"))[0]["seq"]
        if one_batch:
            await settle_queued_as_one_batch(settings, exchange, len(sent))
        else:
            for _ in sent:
                await settle_queued_as_one_batch(settings, exchange, 1)
        statements = trading_statements() - before
        transfers_alone = trading_statements(TRANSFERS_ALONE) - transfers_before
        orders = await support.rows(
            exchange,
            "SELECT client_order_id, status, quantity, remaining FROM orders ORDER BY acceptance_number",
        )
        matches = await support.rows(
            exchange,
            """SELECT m.matching_number AS number, b.client_order_id AS buy, s.client_order_id AS sell,
                      m.shares, m.status, m.transfer_request_hash IS NOT NULL AS requested
               FROM matches m JOIN orders b ON b.acceptance_number = m.buy_order
               JOIN orders s ON s.acceptance_number = m.sell_order ORDER BY m.matching_number""",
        )
        told = await support.rows(
            exchange,  # a batch's messages to one agent's queue are packed: outbox_messages lists each
            "SELECT routing_key, message_type, body FROM outbox_messages WHERE seq > $1 ORDER BY seq, place",
            last,
        )
    assert statements == (1 if one_batch else 3)  # f2 rests: its row alone is no trading statement
    # Alone, each instructing order writes its transfer request; in a batch they ride in its claim.
    assert transfers_alone == (0 if one_batch else 2)
    assert [(o["client_order_id"], o["status"], o["quantity"], o["remaining"]) for o in orders] == [
        ("f1", "filled", 300, 0),
        ("e1", "filled", 100, 0),
        ("d1", "filled", 100, 0),
        ("f2", "filled", 100, 0),
        ("e2", "cancelled", 300, 0),
    ]
    # Numbered in the order they were made (S95 instructs a sell order's oldest first); each sell
    # order's first execution instructed, once; the later ones wait for it.
    assert [(m["buy"], m["sell"], m["shares"], m["status"], m["requested"]) for m in matches] == [
        ("e1", "f1", 100, "transfer_requested", True),
        ("d1", "f1", 100, "pending_transfer", False),
        ("e2", "f1", 100, "pending_transfer", False),
        ("e2", "f2", 100, "transfer_requested", True),
    ]
    # What each trader and settlement were told, queue by queue, in the order it was stored for
    # the relay (each queue receives its messages in that order; a batch packs what it sends one
    # agent's queue, so only the order within a queue is kept): one instruction a sell order.
    to: dict[str, list[str]] = {}
    for t in told:
        to.setdefault(t["routing_key"].removesuffix(ANSWERS_SUFFIX), []).append(t["message_type"])
    accepted, executed = "order.accepted", "order.executed"
    assert {name: to.get(name) for name in (*traders, SETTLEMENT_ID)} == {
        "dora": [accepted, executed],
        "erin": [accepted, executed, accepted, executed, executed, "order.cancelled"],
        "frank": [executed, executed, accepted, executed, executed],
        SETTLEMENT_ID: ["settlement.instruction"] * 2,  # f1's first execution, then f2's
    }
    # Each execution told with what its orders had left after the submission that made it, though
    # in a batch it is told once later orders have traded them too (found by review).
    executed = [json.loads(t["body"])["payload"] for t in told if t["message_type"] == executed]
    assert [(e["client_order_id"], e["quantity"], e["remaining_quantity"]) for e in executed] == [
        ("e1", 100, 0),
        ("f1", 100, 200),
        ("d1", 100, 0),
        ("f1", 100, 100),
        ("e2", 100, 0),  # as its submission left it: filled 200, the rest cancelled
        ("f1", 100, 0),
        ("e2", 100, 0),
        ("f2", 100, 0),
    ]
    # Each execution's log line names the order whose submission made it, though in a batch it
    # is written when the held statement runs, under a later delivery or at the batch's end.
    lines = [json.loads(line) for line in log_lines.getvalue().splitlines()]
    matched = {line["matching_number"]: line["correlation_id"] for line in lines if line["event"] == "order_matched"}
    conversation = {name: str(c.correlation_id) for name, c in zip(("e1", "d1", "f2", "e2"), sent, strict=True)}
    assert [matched[m["number"]] for m in matches] == [conversation[m["buy"]] for m in matches]
