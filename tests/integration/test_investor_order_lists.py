"""Several orders placed in one command (``trading.place_orders``; issue 8, docs/performance.md,
stop 31): each its own signed ``order.submit`` (seed 001 message 33), in the list's order, all
recorded in one transaction or none.

A list the investor agent will not send is refused whole with a specific reason, and nothing is
recorded, committed or sent: not the orders before the one at fault, nor those after it
(docs/bad-input.md, B85–B88; the file's own faults, B89, in tests/unit/test_order_file.py).
"""

from __future__ import annotations

import dataclasses
from typing import Any
from uuid import UUID

import pytest

from agents.investor.trading import MOST_ORDERS_IN_A_LIST, OrderError, OrderTicket, place_order, place_orders
from broker.runtime import AgentRuntime
from broker.settings import Settings
from tests import support
from tests.integration.test_investor_standing_cover import mine, opened
from tests.integration.test_trading_paths import AGENTS, answer_to, buy, issue, market, sell

Rt = dict[str, AgentRuntime]


async def sent(rt: Rt) -> list[dict[str, Any]]:
    """What the investor agent has put in its outbox for the exchange, oldest first."""
    return await support.rows(
        rt["investor"],
        "SELECT message_id, message_type FROM outbox_messages WHERE routing_key = 'exchange' ORDER BY seq, place",
    )


async def recorded(rt: Rt) -> list[str]:
    rows = await support.rows(rt["investor"], "SELECT client_order_id FROM orders ORDER BY client_order_id")
    return [row["client_order_id"] for row in rows]


async def committed(rt: Rt, cert_id: UUID) -> str | None:
    [row] = await support.rows(rt["investor"], "SELECT committed_order FROM wallet WHERE cert_id = $1", cert_id)
    committed_order: str | None = row["committed_order"]
    return committed_order


async def accepted(rt: Rt, message_ids: list[UUID]) -> None:
    for message_id in message_ids:
        answer = await rt["investor"].outcomes.wait(answer_to(message_id, "order.accepted", "order.rejected"))
        assert answer.type == "order.accepted"


async def test_a_list_sends_each_order_signed_alone_in_the_lists_order(settings: Settings) -> None:
    """R-001-20: each order of the list is its own order.submit, accepted under its own number in
    the list's order (priority as if placed one after another); the sell orders' certificates are
    committed to their orders, and the buys trade against them."""
    async with support.agents(settings, *AGENTS) as rt:
        await market(rt)
        certs = [await issue(rt, "alice", 100) for _ in range(2)]
        sells = [sell(f"s{i}", 100, cert) for i, cert in enumerate(certs)]
        message_ids = await rt["investor"].command("alice", place_orders(sells))
        assert [row["message_id"] for row in await sent(rt)] == message_ids
        assert [await committed(rt, cert) for cert in certs] == ["s0", "s1"]
        await accepted(rt, message_ids)

        buys = [buy(f"b{i}", 100) for i in range(3)]
        buy_ids = await rt["investor"].command("bob", place_orders(buys))
        assert len(set(buy_ids)) == 3
        await accepted(rt, buy_ids)

        numbers = await support.rows(
            rt["exchange"],
            "SELECT client_order_id FROM orders ORDER BY acceptance_number",
        )
        assert [row["client_order_id"] for row in numbers] == ["s0", "s1", "b0", "b1", "b2"]
        # two trades, the first two buys against the sells in time priority; the third rests
        assert await _statuses(rt) == {"s0": "filled", "s1": "filled", "b0": "filled", "b1": "filled", "b2": "open"}


async def _statuses(rt: Rt) -> dict[str, str]:
    rows = await support.rows(rt["exchange"], "SELECT client_order_id, status FROM orders")
    return {row["client_order_id"]: row["status"] for row in rows}


async def test_buy_orders_of_a_list_carry_their_accounts_standing_cover_box(settings: Settings) -> None:
    """R-001-06, R-001-23: in one list, the buy orders on the covered account carry the cover's box
    (booked drawn on it); an order on another account carries a box sealed for it."""
    async with support.agents(settings, *AGENTS) as rt:
        await market(rt)
        cover = await opened(rt, "300000")
        box = (await mine(rt, cover))["box"]
        other = dataclasses.replace(buy("b-other", 100, "990"), settlement_account="bob-savings")
        message_ids = await rt["investor"].command("bob", place_orders([buy("b1", 100, "990"), other]))
        await rt["investor"].outcomes.wait(answer_to(message_ids[0], "order.accepted"))
        [booked] = await support.rows(
            rt["exchange"], "SELECT settlement_account, cover_id FROM orders WHERE client_order_id = 'b1'"
        )
        assert booked == {"settlement_account": box, "cover_id": cover}
        await rt["investor"].outcomes.wait(answer_to(message_ids[1], "order.accepted", "order.rejected"))
        asked = await support.rows(
            rt["exchange"], "SELECT count(*) AS n FROM outbox_messages WHERE message_type = 'settlement.cover.request'"
        )
        assert asked == [{"n": 1}]  # only the order on the uncovered account asks for a cover of its own


@pytest.mark.parametrize(
    ("tickets", "reason"),
    [
        ([], "at least one order"),
        ([buy(f"b{i}", 1) for i in range(MOST_ORDERS_IN_A_LIST + 1)], f"at most {MOST_ORDERS_IN_A_LIST} orders"),
        ([buy("b1", 100), buy("b2", 100), buy("b1", 50)], "client order id b1 is in the list more than once"),
    ],
    ids=["empty", "too long", "an id twice"],
)
def test_a_list_the_agent_will_not_send_is_refused_before_anything_is_read(
    tickets: list[OrderTicket], reason: str
) -> None:
    with pytest.raises(OrderError, match=reason):
        place_orders(tickets)


async def test_a_list_with_one_order_at_fault_is_refused_whole_and_changes_nothing(settings: Settings) -> None:
    """Whatever is wrong with one order of the list (an id used before, a certificate sold twice or
    not the seller's to commit), nothing of the list is recorded, committed or sent."""
    async with support.agents(settings, *AGENTS) as rt:
        await market(rt)
        cert, other = await issue(rt, "alice", 100), await issue(rt, "alice", 100)
        for placed in ("b0", "b9"):
            await rt["investor"].command("bob", place_order(buy(placed, 100, "900")))
        before = (await sent(rt), await recorded(rt))

        with pytest.raises(OrderError, match="client order id b0 was used before"):
            await rt["investor"].command("bob", place_orders([buy("b1", 100), buy("b0", 100), buy("b2", 100)]))
        with pytest.raises(OrderError, match=r"client order id b0 was used before \(and 1 more of the list\)"):
            await rt["investor"].command("bob", place_orders([buy("b0", 100), buy("b1", 100), buy("b9", 100)]))
        with pytest.raises(OrderError, match=f"certificate {cert} backs more than one order of the list"):
            place_orders([sell("s1", 100, cert), sell("s2", 100, other), sell("s3", 100, cert)])
        with pytest.raises(OrderError, match=f"certificate {cert} is not in the wallet"):
            await rt["investor"].command("bob", place_orders([buy("b3", 100), sell("s4", 100, cert, user="bob")]))
        with pytest.raises(OrderError, match=f"certificate {UUID(int=1)} is not in the wallet"):
            await rt["investor"].command("alice", place_orders([sell("s5", 100, cert), sell("s6", 100, UUID(int=1))]))

        assert (await sent(rt), await recorded(rt)) == before
        assert [await committed(rt, c) for c in (cert, other)] == [None, None]


async def test_an_order_placed_again_is_refused_as_used_before(settings: Settings) -> None:
    """A client order id names one order: placing it again is refused before it is sent, for a buy
    and for a sell (whose certificate its first placing already committed)."""
    async with support.agents(settings, *AGENTS) as rt:
        await market(rt)
        cert = await issue(rt, "alice", 100)
        await rt["investor"].command("bob", place_order(buy("b1", 100, "900")))
        await rt["investor"].command("alice", place_order(sell("s1", 100, cert, price="1100")))
        before = await sent(rt)
        with pytest.raises(OrderError, match="client order id b1 was used before"):
            await rt["investor"].command("bob", place_order(buy("b1", 100, "900")))
        with pytest.raises(OrderError, match="client order id s1 was used before"):
            await rt["investor"].command("alice", place_order(sell("s1", 100, cert, price="1100")))
        assert await sent(rt) == before
        assert await committed(rt, cert) == "s1"
