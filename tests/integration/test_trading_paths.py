"""The exchange's trading paths through real agents (seed 001 Phase 2, R-001-20..46, E4–E14).

Refusals, cancels, replaces, status inquiries, IOC and FOK, the failed name transfer of S131–S132,
and the book's durability across a restart and a crash between commit and ack. Every test runs
the investor, issuer, exchange and settlement agents on real RabbitMQ and PostgreSQL and reads
each agent's state from its own tables.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any
from uuid import UUID

import aio_pika

from agents.exchange import order_repo
from agents.investor.trading import OrderTicket, ask_order_status, cancel_order, place_order, replace_order
from agents.registry import AGENTS as DEFINITIONS
from broker.consumer import Outcome, Settled
from broker.runtime import AgentRuntime, running
from broker.settings import Settings
from broker.topology import Names
from schemas.trading import Side, TimeInForce
from tests import support

AGENTS = ("investor", "issuer", "exchange", "settlement")
Rt = dict[str, AgentRuntime]


# --- helpers ------------------------------------------------------------------------------


async def market(rt: Rt) -> None:
    """The issue offered and listed at 1,000 JPY (band 700..1,300), and everyone's cash account."""
    await support.open_offering(rt["issuer"])
    await support.list_issue(rt["exchange"])
    for user in ("alice", "bob", "carol"):
        await support.fund(rt["settlement"], user, Decimal("5000000"))


async def issue(rt: Rt, user: str = "alice", shares: int = 1000) -> UUID:
    """A certificate for ``user``, in the wallet and in the exchange's CertID list."""
    request_id = await support.request(rt["investor"], user, shares=shares)
    await rt["investor"].outcomes.reply("certificate.issued", request_id)
    await rt["exchange"].outcomes.reply("certid_list.updated", request_id)
    held = await support.rows(
        rt["investor"],
        "SELECT cert_id FROM wallet WHERE holder_user_id = $1 AND status = 'held' ORDER BY received_at DESC",
        user,
    )
    return UUID(str(held[0]["cert_id"]))


def sell(
    coid: str,
    quantity: int,
    cert_id: UUID,
    price: str | None = "1000",
    tif: TimeInForce = TimeInForce.DAY,
    user: str = "alice",
) -> OrderTicket:
    return OrderTicket(
        coid,
        support.ISSUE,
        Side.SELL,
        quantity,
        f"{user}-cash",
        None if price is None else Decimal(price),
        tif,
        cert_id=cert_id,
    )


def buy(
    coid: str,
    quantity: int,
    price: str | None = "1000",
    tif: TimeInForce = TimeInForce.DAY,
    user: str = "bob",
) -> OrderTicket:
    return OrderTicket(
        coid,
        support.ISSUE,
        Side.BUY,
        quantity,
        f"{user}-cash",
        None if price is None else Decimal(price),
        tif,
        holder_name=user.capitalize(),
        holder_address="2-2 Kabuto-cho, Tokyo",
    )


def answer_to(message_id: UUID, *types: str) -> Callable[[Settled], bool]:
    key = str(message_id)
    return lambda s: s.correlation_id == key and s.type in types and s.outcome is Outcome.PROCESSED


async def place(rt: Rt, user: str, ticket: OrderTicket, expect: str = "order.accepted") -> UUID:
    """Send an order and wait for the exchange's answer (34 or its error notification)."""
    message_id = await rt["investor"].command(user, place_order(ticket))
    answer = await rt["investor"].outcomes.wait(answer_to(message_id, "order.accepted", "order.rejected"))
    assert answer.type == expect, f"{ticket.client_order_id}: {answer.type}"
    return message_id


async def traded(rt: Rt, message_id: UUID, fills: int = 1) -> None:
    """Wait until the buyer of each fill in this conversation holds its new certificate."""
    await rt["investor"].outcomes.wait_count(answer_to(message_id, "certificate.issued"), fills)


async def investor_order(rt: Rt, user: str, coid: str) -> dict[str, Any]:
    found = await support.rows(
        rt["investor"],
        "SELECT status, filled, reason, detail, acceptance_number, request_hash, last_status FROM orders "
        "WHERE user_id = $1 AND client_order_id = $2",
        user,
        coid,
    )
    return found[0]


async def exchange_orders(rt: Rt) -> list[dict[str, Any]]:
    return await support.rows(
        rt["exchange"],
        """SELECT acceptance_number, client_order_id, user_id, side, price, quantity, remaining, priority,
                  status, cancel_reason FROM orders ORDER BY acceptance_number""",
    )


async def exchange_order(rt: Rt, coid: str) -> dict[str, Any]:
    return next(o for o in await exchange_orders(rt) if o["client_order_id"] == coid)


async def sent(runtime: AgentRuntime, type_: str, conversation: UUID) -> list[dict[str, Any]]:
    """The payloads of the ``type_`` messages ``runtime`` emitted in a conversation, oldest first."""
    rows = await support.rows(
        runtime, "SELECT body FROM outbox_messages WHERE message_type = $1 ORDER BY seq, place", type_
    )
    envelopes = [json.loads(r["body"]) for r in rows]
    return [e["payload"] for e in envelopes if e["correlation_id"] == str(conversation)]


async def buy_oans_matched(rt: Rt) -> list[int]:
    matches = await support.rows(rt["exchange"], "SELECT buy_order FROM matches ORDER BY matching_number")
    return [m["buy_order"] for m in matches]


async def resting_oans(runtime: AgentRuntime, side: Side) -> list[int]:
    book = await runtime.query(lambda c: order_repo.load_book(c, support.ISSUE))
    return [o.acceptance_number for o in book.resting(side)]


# --- refusals (R-001-21..25, E4–E8) -------------------------------------------------------


async def assert_refused(rt: Rt, user: str, ticket: OrderTicket, reason: str) -> None:
    """The refusal reaches the investor with its reason and our request's hash; the exchange is unchanged."""
    before = (await exchange_orders(rt), await support.rows(rt["exchange"], "SELECT * FROM certid_list"))
    message_id = await place(rt, user, ticket, expect="order.rejected")
    mine = await investor_order(rt, user, ticket.client_order_id)
    assert (mine["status"], mine["reason"]) == ("rejected", reason)
    [refusal] = await sent(rt["exchange"], "order.rejected", message_id)
    assert refusal["reason"] == reason and refusal["request_hash"] == mine["request_hash"]  # R-001-07
    assert (
        await exchange_orders(rt),
        await support.rows(rt["exchange"], "SELECT * FROM certid_list"),
    ) == before


async def test_refused_orders_reach_the_investor_and_change_nothing_at_the_exchange(
    settings: Settings,
) -> None:
    """R-001-21..25: price limit, account usage limit (R-001-23), CertID not listed (R-001-25, R-001-57)."""
    async with support.agents(settings, *AGENTS) as rt:
        await market(rt)
        cert_id = await issue(rt, "alice", 500)
        await assert_refused(rt, "bob", buy("b1", 100, "1301"), "price_limit_exceeded")
        await assert_refused(rt, "bob", buy("b2", 10_001), "account_usage_limit_exceeded")
        await assert_refused(rt, "bob", buy("b3", 7_700, price=None), "account_usage_limit_exceeded")

        await rt["exchange"].query(lambda c: c.execute("UPDATE certid_list SET status = 'retired'"))
        await assert_refused(rt, "alice", sell("s1", 500, cert_id), "certificate_not_listed")
        wallet = await support.rows(rt["investor"], "SELECT committed_order FROM wallet WHERE cert_id = $1", cert_id)
        assert wallet == [{"committed_order": None}]  # the refused order no longer holds the certificate


# --- cancel -------------------------------------------------------------------------------


async def test_a_cancelled_sell_order_frees_its_certificate_for_a_new_order(settings: Settings) -> None:
    """R-001-26: cancel by client order id takes the order off the unexecuted-order queue; both sides
    agree, and the certificate sells again (R-001-20)."""
    async with support.agents(settings, *AGENTS) as rt:
        await market(rt)
        cert_id = await issue(rt, "alice", 500)
        await place(rt, "alice", sell("s1", 500, cert_id))

        cancel = await rt["investor"].command("alice", cancel_order("s1"))
        await rt["investor"].outcomes.wait(answer_to(cancel, "order.cancelled"))
        assert (await investor_order(rt, "alice", "s1"))["status"] == "cancelled"
        cancelled = await exchange_order(rt, "s1")
        assert (cancelled["status"], cancelled["cancel_reason"]) == ("cancelled", "requested")
        assert await resting_oans(rt["exchange"], Side.SELL) == []

        await place(rt, "alice", sell("s2", 500, cert_id, "1010"))
        assert (await exchange_order(rt, "s2"))["status"] == "open"


async def test_cancelling_an_unknown_or_filled_order_is_refused(settings: Settings) -> None:
    """Refusals come back as order.rejected (R-001-21's error notification): unknown_order for an
    order the exchange never accepted, order_not_open for a filled one, which stays filled."""
    async with support.agents(settings, *AGENTS) as rt:
        await market(rt)
        cert_id = await issue(rt, "alice", 500)
        await place(rt, "bob", buy("never", 100, "1301"), expect="order.rejected")  # the exchange never had it
        await place(rt, "alice", sell("s1", 500, cert_id))
        await traded(rt, await place(rt, "bob", buy("b1", 500)))

        for coid, reason in (("never", "unknown_order"), ("b1", "order_not_open")):
            cancel = await rt["investor"].command("bob", cancel_order(coid))
            await rt["investor"].outcomes.wait(answer_to(cancel, "order.rejected"))
            [refusal] = await sent(rt["exchange"], "order.rejected", cancel)
            assert refusal["reason"] == reason
        assert (await exchange_order(rt, "b1"))["status"] == "filled"


async def test_a_refused_cancel_leaves_the_investors_filled_order_filled(settings: Settings) -> None:
    """R-001-40: the client's record of a completed trade is not undone by a refused cancel."""
    async with support.agents(settings, *AGENTS) as rt:
        await market(rt)
        cert_id = await issue(rt, "alice", 500)
        await place(rt, "alice", sell("s1", 500, cert_id))
        await traded(rt, await place(rt, "bob", buy("b1", 500)))
        cancel = await rt["investor"].command("bob", cancel_order("b1"))
        await rt["investor"].outcomes.wait(answer_to(cancel, "order.rejected"))
        assert (await investor_order(rt, "bob", "b1"))["status"] == "filled"


# --- replace ------------------------------------------------------------------------------


async def replace(rt: Rt, user: str, old: str, new: str, quantity: int, price: str) -> UUID:
    message_id = await rt["investor"].command(user, replace_order(old, new, quantity, Decimal(price)))
    await rt["investor"].outcomes.wait(answer_to(message_id, "order.accepted"))
    return message_id


async def test_lowering_only_the_quantity_keeps_the_acceptance_number_and_priority(
    settings: Settings,
) -> None:
    """R-001-26, R-001-28: a reduce keeps its acceptance number and place — carol's later order at the
    same price still fills after bob's."""
    async with support.agents(settings, *AGENTS) as rt:
        await market(rt)
        cert_id = await issue(rt, "alice", 500)
        await place(rt, "bob", buy("b1", 300))
        await place(rt, "carol", buy("c1", 300, user="carol"))
        first = (await investor_order(rt, "bob", "b1"))["acceptance_number"]

        await replace(rt, "bob", "b1", "b1r", 200, "1000")
        assert (await investor_order(rt, "bob", "b1r"))["acceptance_number"] == first
        reduced = await exchange_order(rt, "b1r")
        assert (reduced["acceptance_number"], reduced["priority"]) == (first, first)

        await traded(rt, await place(rt, "alice", sell("s1", 200, cert_id)))
        assert await buy_oans_matched(rt) == [first]
        assert (await investor_order(rt, "bob", "b1r"))["status"] == "filled"
        assert (await exchange_order(rt, "c1"))["remaining"] == 300


async def test_a_replacement_that_crosses_fills_the_resting_order_at_once(settings: Settings) -> None:
    """R-001-26: alice reprices her resting sell onto bob's resting buy; it trades at once, and the
    exchange's rows say both filled (bob's written with the replacement, one statement: stop 31)."""
    async with support.agents(settings, *AGENTS) as rt:
        await market(rt)
        cert_id = await issue(rt, "alice", 300)
        await place(rt, "bob", buy("b1", 300, "1000"))
        await place(rt, "alice", sell("s1", 300, cert_id, price="1100"))
        await traded(rt, await replace(rt, "alice", "s1", "s1r", 300, "1000"), 1)
        bob, alice = await exchange_order(rt, "b1"), await exchange_order(rt, "s1r")
        assert (bob["status"], bob["remaining"]) == ("filled", 0)
        assert (alice["status"], alice["remaining"]) == ("filled", 0)


async def test_a_reduce_lowers_the_open_quantity_at_the_exchange(settings: Settings) -> None:
    """R-001-26: bob lowers 300 to 200; the exchange's queue must say 200."""
    async with support.agents(settings, *AGENTS) as rt:
        await market(rt)
        await place(rt, "bob", buy("b1", 300))
        await replace(rt, "bob", "b1", "b1r", 200, "1000")
        assert (await exchange_order(rt, "b1r"))["remaining"] == 200


async def test_after_a_reduce_the_investor_has_one_live_order(settings: Settings) -> None:
    """R-001-27: the client's view of its orders matches the exchange's: one live order, the new id."""
    async with support.agents(settings, *AGENTS) as rt:
        await market(rt)
        await place(rt, "bob", buy("b1", 300))
        await replace(rt, "bob", "b1", "b1r", 200, "1000")
        live = await support.rows(rt["investor"], "SELECT client_order_id FROM orders WHERE status = 'accepted'")
        assert live == [{"client_order_id": "b1r"}]


async def test_changing_the_price_gives_a_new_acceptance_number(settings: Settings) -> None:
    """R-001-26: a repriced order is a new order — new acceptance number, new time priority.
    (Issue 11: a buy order's replacement may lower its price, never raise its cover.)"""
    async with support.agents(settings, *AGENTS) as rt:
        await market(rt)
        await place(rt, "bob", buy("b1", 300))
        old = (await investor_order(rt, "bob", "b1"))["acceptance_number"]

        await replace(rt, "bob", "b1", "b1r", 300, "990")
        new = (await investor_order(rt, "bob", "b1r"))["acceptance_number"]
        assert new > old
        replaced = await exchange_order(rt, "b1")
        assert (replaced["status"], replaced["cancel_reason"]) == ("cancelled", "replaced")
        live = await exchange_order(rt, "b1r")
        assert (live["acceptance_number"], live["price"], live["status"], live["priority"]) == (
            new,
            Decimal("990"),
            "open",
            new,
        )
        assert (await investor_order(rt, "bob", "b1"))["status"] == "replaced"


async def test_cancelling_a_replaced_sell_order_frees_its_certificate(settings: Settings) -> None:
    """R-001-20: after s1 → s1r and a cancel of s1r, the certificate backs no order and sells again."""
    async with support.agents(settings, *AGENTS) as rt:
        await market(rt)
        cert_id = await issue(rt, "alice", 500)
        await place(rt, "alice", sell("s1", 500, cert_id))
        await replace(rt, "alice", "s1", "s1r", 300, "1000")
        cancel = await rt["investor"].command("alice", cancel_order("s1r"))
        await rt["investor"].outcomes.wait(answer_to(cancel, "order.cancelled"))
        await place(rt, "alice", sell("s2", 500, cert_id))


async def test_a_partly_filled_sell_order_cannot_be_repriced_and_its_remainder_still_sells(
    settings: Settings,
) -> None:
    """R-001-58: 400 of 1,000 sold; the certificate is in name transfer for this order, so a price change
    is refused (replace_not_allowed) and the 600 left keep selling."""
    async with support.agents(settings, *AGENTS) as rt:
        await market(rt)
        cert_id = await issue(rt, "alice", 1000)
        await place(rt, "alice", sell("s1", 1000, cert_id))
        first = await place(rt, "bob", buy("b1", 400))
        await traded(rt, first)
        await rt["investor"].outcomes.wait(answer_to(first, "certificate.remainder"))

        repriced = await rt["investor"].command("alice", replace_order("s1", "s1r", 600, Decimal("1010")))
        await rt["investor"].outcomes.wait(answer_to(repriced, "order.rejected"))
        assert (await investor_order(rt, "alice", "s1r"))["reason"] == "replace_not_allowed"
        assert (await exchange_order(rt, "s1"))["remaining"] == 600

        await traded(rt, await place(rt, "carol", buy("c1", 600, user="carol")))
        assert (await exchange_order(rt, "s1"))["status"] == "filled"


# --- status inquiry (R-001-27) ------------------------------------------------------------


async def test_the_status_of_an_order_is_told_to_its_owner_only(settings: Settings) -> None:
    """R-001-27: by acceptance number, state, filled and fills to alice; found=False to bob."""
    async with support.agents(settings, *AGENTS) as rt:
        await market(rt)
        cert_id = await issue(rt, "alice", 500)
        await place(rt, "alice", sell("s1", 500, cert_id))
        await traded(rt, await place(rt, "bob", buy("b1", 200)))
        oan = (await investor_order(rt, "alice", "s1"))["acceptance_number"]

        asked = await rt["investor"].command("alice", ask_order_status(oan))
        await rt["investor"].outcomes.wait(answer_to(asked, "order.status"))
        status = json.loads((await investor_order(rt, "alice", "s1"))["last_status"])
        assert (status["found"], status["state"], status["quantity"]) == (True, "open", 500)
        assert (status["filled_quantity"], status["remaining_quantity"]) == (200, 300)
        assert [(f["quantity"], Decimal(f["price"]), f["status"]) for f in status["fills"]] == [
            (200, Decimal(1000), "completed")
        ]

        prying = await rt["investor"].command("bob", ask_order_status(oan))
        await rt["investor"].outcomes.wait(answer_to(prying, "order.status"))
        [answer] = await sent(rt["exchange"], "order.status", prying)
        assert answer["found"] is False and answer["client_order_id"] is None and answer["fills"] == []


# --- IOC and FOK --------------------------------------------------------------------------


async def test_an_ioc_order_fills_what_it_can_and_cancels_the_rest(settings: Settings) -> None:
    """R-001-28: 300 of 500 execute and transfer; the 200 left are cancelled, nothing rests."""
    async with support.agents(settings, *AGENTS) as rt:
        await market(rt)
        cert_id = await issue(rt, "alice", 300)
        await place(rt, "alice", sell("s1", 300, cert_id))
        order = await place(rt, "bob", buy("b1", 500, tif=TimeInForce.IOC))
        await rt["investor"].outcomes.wait(answer_to(order, "order.cancelled"))
        await traded(rt, order)

        ioc = await exchange_order(rt, "b1")
        assert (ioc["status"], ioc["cancel_reason"], ioc["remaining"]) == ("cancelled", "ioc_remainder", 0)
        [cancelled] = await sent(rt["exchange"], "order.cancelled", order)
        assert cancelled["cancelled_quantity"] == 200
        mine = await investor_order(rt, "bob", "b1")
        assert (mine["status"], mine["filled"]) == ("cancelled", 300)
        assert await resting_oans(rt["exchange"], Side.BUY) == []


async def test_a_fok_order_that_cannot_fill_leaves_the_book_untouched(settings: Settings) -> None:
    """R-001-28: 301 against 300 offered is cancelled whole; 300 against 300 fills."""
    async with support.agents(settings, *AGENTS) as rt:
        await market(rt)
        cert_id = await issue(rt, "alice", 300)
        await place(rt, "alice", sell("s1", 300, cert_id))
        before = await exchange_order(rt, "s1")

        order = await place(rt, "bob", buy("b1", 301, tif=TimeInForce.FOK))
        await rt["investor"].outcomes.wait(answer_to(order, "order.cancelled"))
        fok = await exchange_order(rt, "b1")
        assert (fok["status"], fok["cancel_reason"]) == ("cancelled", "fok_not_fillable")
        assert await exchange_order(rt, "s1") == before and await buy_oans_matched(rt) == []
        assert (await investor_order(rt, "bob", "b1"))["status"] == "cancelled"

        await traded(rt, await place(rt, "bob", buy("b2", 300, tif=TimeInForce.FOK)))
        assert (await exchange_order(rt, "b2"))["status"] == "filled"


# --- failed name transfer (S131–S132, E14, R-001-39) --------------------------------------


async def test_a_refused_name_transfer_returns_the_buy_order_and_cancels_the_sale(settings: Settings) -> None:
    """R-001-39: the issuer's register no longer has alice's CertID when bob's buy executes."""
    async with support.agents(settings, *AGENTS) as rt:
        investor, exchange = rt["investor"], rt["exchange"]
        await market(rt)
        cert_id = await issue(rt, "alice", 500)
        await place(rt, "alice", sell("s1", 500, cert_id))
        await rt["issuer"].query(
            lambda c: c.execute("UPDATE register SET status = 'retired' WHERE cert_id = $1", cert_id)
        )

        order = await place(rt, "bob", buy("b1", 500))
        # both fills are undone: bob's shares come back, alice's sale is cancelled
        await investor.outcomes.wait_count(answer_to(order, "order.execution_reversed"), 2)
        await investor.outcomes.wait(answer_to(order, "order.cancelled"))

        bob = await exchange_order(rt, "b1")
        assert (bob["status"], bob["remaining"]) == ("open", 500)
        assert await resting_oans(exchange, Side.BUY) == [bob["acceptance_number"]]
        alice = await exchange_order(rt, "s1")
        assert (alice["status"], alice["cancel_reason"]) == ("cancelled", "certificate_invalid")
        [notice] = await sent(exchange, "order.cancelled", order)
        assert notice["reason"] == "certificate_invalid" and "not_registered" in notice["detail"]
        told_alice = await investor_order(rt, "alice", "s1")
        assert told_alice["reason"] == "certificate_invalid" and "not_registered" in told_alice["detail"]
        # Issue 11: the securities leg failed at the reservation; the cash leg never happened.
        assert await support.rows(exchange, "SELECT status, failure FROM matches") == [
            {"status": "failed", "failure": "lack_of_securities"}
        ]
        listed = await support.rows(exchange, "SELECT status FROM certid_list WHERE cert_id = $1", cert_id)
        assert listed == [{"status": "retired"}]

        assert (await investor_order(rt, "bob", "b1"))["filled"] == 0
        instructions = await support.rows(rt["settlement"], "SELECT settlement, reason, detail FROM dvp_instructions")
        assert [(i["settlement"], i["reason"]) for i in instructions] == [("failed", "lack_of_securities")]
        assert "not_registered" in instructions[0]["detail"]
        assert await support.rows(rt["settlement"], "SELECT * FROM entries WHERE kind = 'trade'") == []
        assert await support.rows(investor, "SELECT * FROM wallet WHERE holder_user_id = 'bob'") == []
        assert await support.rows(rt["issuer"], "SELECT * FROM register WHERE holder_user_id = 'bob'") == []

        # bob's order is really back in the queue: a good certificate fills it
        carol = await issue(rt, "carol", 500)
        await traded(rt, await place(rt, "carol", sell("c1", 500, carol, user="carol")), 1)
        assert (await exchange_order(rt, "b1"))["status"] == "filled"


async def test_a_buy_order_returned_by_a_refused_transfer_fills_against_the_next_sell_at_once(
    settings: Settings,
) -> None:
    """R-001-39 (S131): bob's buy comes back to the queue and matches carol's resting sell there and
    then; the exchange's rows say both filled (carol's written with bob's, one statement: stop 31)."""
    async with support.agents(settings, *AGENTS) as rt:
        await market(rt)
        bad, good = await issue(rt, "alice", 500), await issue(rt, "carol", 500)
        await place(rt, "alice", sell("s1", 500, bad))
        await place(rt, "carol", sell("c1", 500, good, user="carol"))
        await rt["issuer"].query(lambda c: c.execute("UPDATE register SET status = 'retired' WHERE cert_id = $1", bad))

        await traded(rt, await place(rt, "bob", buy("b1", 500)), 1)
        bob, carol = await exchange_order(rt, "b1"), await exchange_order(rt, "c1")
        assert (bob["status"], bob["remaining"]) == ("filled", 0)
        assert (carol["status"], carol["remaining"]) == ("filled", 0)


async def test_the_seller_whose_transfer_failed_sees_the_order_cancelled_not_filled(
    settings: Settings,
) -> None:
    """R-001-39 (S132): alice is told her certificate is invalid; her client must not show the sale as done."""
    async with support.agents(settings, *AGENTS) as rt:
        await market(rt)
        cert_id = await issue(rt, "alice", 500)
        await place(rt, "alice", sell("s1", 500, cert_id))
        await rt["issuer"].query(
            lambda c: c.execute("UPDATE register SET status = 'retired' WHERE cert_id = $1", cert_id)
        )
        order = await place(rt, "bob", buy("b1", 500))
        await rt["investor"].outcomes.wait(answer_to(order, "order.cancelled"))
        alice = await investor_order(rt, "alice", "s1")
        assert (alice["status"], alice["reason"], alice["filled"]) == ("cancelled", "certificate_invalid", 0)


# --- durability ---------------------------------------------------------------------------


async def test_the_book_survives_a_restart_in_price_time_order(settings: Settings) -> None:
    """R-001-26, R-001-28: the unexecuted-order queue is what was committed, whenever the exchange stops."""
    async with support.agents(settings, *AGENTS) as rt:
        await market(rt)
        cert_id = await issue(rt, "alice", 1000)
        for user, coid, price in (
            ("bob", "b1", "1000"),
            ("carol", "c1", "1010"),
            ("bob", "b2", "1000"),
            ("carol", "c2", "990"),
            ("bob", "b3", "980"),
        ):
            await place(rt, user, buy(coid, 100, price, user=user))
        before = await exchange_orders(rt)
        priority = await resting_oans(rt["exchange"], Side.BUY)

    async with support.agents(settings, *AGENTS) as rt:
        assert await exchange_orders(rt) == before
        assert await resting_oans(rt["exchange"], Side.BUY) == priority
        await traded(rt, await place(rt, "alice", sell("s1", 500, cert_id, "980")), 5)
        assert await buy_oans_matched(rt) == priority
        assert [o["status"] for o in await exchange_orders(rt)] == ["filled"] * 6


async def crash_after_commit(settings: Settings, runtime: AgentRuntime) -> Settled:
    """Take the next delivery off the agent's queue and settle it (commit), but never ack it."""
    connection = await aio_pika.connect(settings.amqp_url)
    try:
        channel = await connection.channel()
        queue = await channel.get_queue(Names(settings.namespace).inbox(runtime.id))
        async with asyncio.timeout(10), queue.iterator() as deliveries:
            async for delivery in deliveries:
                return await runtime.consumer.settle(delivery)
        raise AssertionError("unreachable")
    finally:
        await connection.close()  # unacked: the broker delivers it again


async def test_an_order_redelivered_after_a_crash_is_accepted_and_matched_once(settings: Settings) -> None:
    """R-001-26, R-001-28: bob's buy is committed (accepted, matched, transfer requested) but not
    acked; its redelivery is absorbed — one acceptance, one match, one transfer, one certificate."""
    async with support.agents(settings, *AGENTS) as rt:
        await market(rt)
        cert_id = await issue(rt, "alice", 500)
        await place(rt, "alice", sell("s1", 500, cert_id))

    others = ("investor", "issuer", "settlement")
    async with (
        support.agents(settings, *others) as rt,
        AgentRuntime(DEFINITIONS["exchange"], settings) as exchange,
    ):
        rt["exchange"] = exchange
        order = await rt["investor"].command("bob", place_order(buy("b1", 500)))
        assert (await crash_after_commit(settings, exchange)).outcome is Outcome.PROCESSED

        async with running(exchange):
            assert (await exchange.outcomes.wait_for(order)).outcome is Outcome.DUPLICATE
            await traded(rt, order)
        assert [(o["client_order_id"], o["status"]) for o in await exchange_orders(rt)] == [
            ("s1", "filled"),
            ("b1", "filled"),
        ]
        assert len(await sent(exchange, "order.accepted", order)) == 1
        assert len(await sent(exchange, "settlement.instruction", order)) == 1
        assert await buy_oans_matched(rt) == [(await exchange_order(rt, "b1"))["acceptance_number"]]
        assert len(await support.rows(rt["investor"], "SELECT * FROM wallet WHERE holder_user_id = 'bob'")) == 1
