"""Acceptance views read ahead for a batch (issue 8; agents/exchange/read_ahead.py).

A batch's orders must be decided exactly as they would be one at a time (R-001-21..25,
S71–S95): the same acceptances and refusals, the same priority, the same trades, the same
cover drawn. The orders below are queued while the exchange is stopped and then settled as
one batch, and each depends on one before it: a standing cover with room for one order
only, a resubmission, a client order id reused for another order, a trade (after which
nothing read ahead is used) and an order after it. The same test runs with one delivery per
transaction, where nothing is read ahead: both must give the outcome written out here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from decimal import Decimal
from uuid import UUID

import aio_pika
import pytest

from agents.exchange import order_repo
from agents.exchange.read_ahead import READ_AHEAD, run, view_key
from agents.registry import AGENTS
from broker import group_commit
from broker.consumer import Outcome
from broker.pki import KeyStore, default_participant
from broker.runtime import AgentRuntime, running
from broker.settings import Settings
from broker.stock_certificates import endorse, sign_certificate
from broker.topology import Names
from kabuto_client import Participant, buy_order, open_standing_cover
from kabuto_client.participant import Conversation
from schemas.certificates import SignedCertificate
from schemas.dvp import StandingCoverOpened
from schemas.identity import EXCHANGE_ID, Role
from schemas.trading import CancelOrder, OrderTerms, OrderType, Side, SubmitOrder
from tests import support
from tests.integration.conftest import delete_queue, enrol
from tests.integration.test_standing_cover import cover_requests, drawn

PRICE = Decimal(990)
BOX = support.box()
LIMITS = {"erin": 300_000}  # her account usage limit: her open buy orders' notional at most


@pytest.fixture
async def traders(settings: Settings, keys: KeyStore) -> AsyncIterator[dict[str, Participant]]:
    names = ("dora", "erin", "frank")
    async with AsyncExitStack() as stack:
        for name in names:
            keys.enrol(default_participant(name, Role.INVESTOR, limit=LIMITS.get(name, 10_000_000)))
            stack.push_async_callback(delete_queue, settings, name)
        yield {
            name: await stack.enter_async_context(
                Participant.enrolled(settings.amqp_url, keys.root, name, namespace=settings.namespace)
            )
            for name in names
        }


def buy(
    me: Participant, coid: str, quantity: int = 100, price: Decimal = PRICE, *, book_entry: bool = False
) -> SubmitOrder:
    order = buy_order(
        me,
        coid,
        support.ISSUE,
        quantity,
        price=price,
        account=f"{me.user_id}-cash",
        holder_name=me.user_id,
        holder_address="Tokyo",
    )
    return order.model_copy(update={"safekeeping_account": f"{me.user_id}-sk"}) if book_entry else order


def book_entry_sell(me: Participant, coid: str, quantity: int = 100) -> SubmitOrder:
    return SubmitOrder(
        client_order_id=coid,
        user_id=me.user_id,
        issue_code=support.ISSUE,
        terms=OrderTerms(side=Side.SELL, order_type=OrderType.LIMIT, price=PRICE, quantity=quantity),
        settlement_account=me.account_box(f"{me.user_id}-cash"),
        safekeeping_account=f"{me.user_id}-sk",
    )


async def standing_cover(me: Participant, amount: int) -> UUID:
    answer = await open_standing_cover(me, f"{me.user_id}-cash", Decimal(amount))
    assert isinstance(answer.message, StandingCoverOpened), answer.message
    return answer.message.cover_id


async def answer(conversation: Conversation) -> tuple[str, object]:
    opened = await conversation.wait_for("order.accepted", "order.rejected")
    message = opened.message
    return opened.envelope.type, getattr(message, "acceptance_number", None) or getattr(message, "reason", None)


async def settle_queued_as_one_batch(settings: Settings, exchange: AgentRuntime, count: int) -> None:
    """Take ``count`` deliveries waiting in the exchange's inbox and settle them as one batch, as
    its consumer does (group commit), so that which orders share a batch is not up to the broker."""
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(Names(settings.namespace).inbox("exchange"), passive=True)
        deliveries = [await queue.get(no_ack=False, timeout=5) for _ in range(count)]
        settled = await group_commit.settle_batch(exchange.consumer, deliveries)
        await group_commit.ack(deliveries)
    assert {s.outcome for s in settled} == {Outcome.PROCESSED}


@pytest.mark.parametrize("one_batch", [False, True], ids=["one at a time", "one batch"])
async def test_a_batch_of_orders_is_decided_as_they_would_be_one_at_a_time(
    settings: Settings, traders: dict[str, Participant], one_batch: bool
) -> None:
    dora, erin, frank = traders["dora"], traders["erin"], traders["frank"]
    settings = dataclasses.replace(settings, batch_size=1)
    runs, read, dropped = READ_AHEAD.runs, READ_AHEAD.read, READ_AHEAD.dropped
    async with AgentRuntime(AGENTS["exchange"], settings) as exchange, support.agents(settings, "settlement") as rt:
        async with running(exchange):
            await support.list_issue(exchange)
            for name in ("dora", "erin"):
                await support.fund(rt["settlement"], name, Decimal(10_000_000))
            cover = await standing_cover(dora, 150_000)  # room for one order of 100 at 990, not two
            await standing_cover(erin, 1_000_000)
        # The exchange is stopped: every order below waits in its queue and is taken in batches.
        sent = [
            await dora.send(buy(dora, "d1"), to=EXCHANGE_ID),  # draws 99,000 on dora's cover
            await erin.send(buy(erin, "e1", book_entry=True), to=EXCHANGE_ID),  # 99,000 of erin's limit
            await dora.send(buy(dora, "d2"), to=EXCHANGE_ID),  # no room left: a cover of its own
            await erin.send(buy(erin, "e2", price=Decimal(985)), to=EXCHANGE_ID),  # 197,500 open
            await dora.send(buy(dora, "d1"), to=EXCHANGE_ID),  # sent again: answered, not booked twice
            await frank.send(book_entry_sell(frank, "f1"), to=EXCHANGE_ID),  # trades with e1, book entry both
            # 198,000 more fits erin's 300,000 only with e1 filled: read before f1, it would not
            await erin.send(buy(erin, "e3", quantity=200), to=EXCHANGE_ID),
            await erin.send(buy(erin, "e2", price=Decimal(980)), to=EXCHANGE_ID),  # e2 names another order
            await dora.send(buy(dora, "d3", quantity=50), to=EXCHANGE_ID),  # 148,500 drawn: room for it
        ]
        if one_batch:
            await settle_queued_as_one_batch(settings, exchange, len(sent))
        async with running(exchange):
            d1, e1, d2, e2, d1_again, f1, e3, e2_other, d3 = [await answer(c) for c in sent]
            matches = await support.rows(exchange, "SELECT buy_order, sell_order, shares, price FROM matches")
            held = await drawn(exchange, cover)
            requests = await cover_requests(exchange)
            async with exchange.pool.acquire() as connection:
                drift = await order_repo.exposure_drift(connection)
    booked = [d1, e1, e2, f1, e3, d3]
    assert all(kind == "order.accepted" for kind, _ in booked), booked
    numbers = [number for _, number in booked]
    assert numbers == sorted(numbers) and len(set(numbers)) == 6  # priority in arrival order
    assert d1_again == d1  # the resubmission is answered with the first acceptance
    assert e2_other == ("order.rejected", "client_order_id_conflict")
    # booked once its own cover was granted (before or after d3: the grant is an answer, taken first)
    assert d2[0] == "order.accepted" and d2[1] not in numbers
    assert requests == 1  # d2's; d3 drew on the standing cover after the trade
    assert matches == [{"buy_order": e1[1], "sell_order": f1[1], "shares": 100, "price": PRICE}]
    assert held == Decimal(99_000) + Decimal(49_500)
    assert drift == []
    ahead = (READ_AHEAD.runs - runs, READ_AHEAD.read - read, READ_AHEAD.dropped - dropped)
    if one_batch:
        # runs [d1 e1] [d2 e2] [d1 f1 e3] — f1 traded: e3's view is dropped — [e3] [e2 d3]
        assert ahead == (5, 10, 1)
    else:  # a delivery alone reads its own view
        assert ahead == (0, 0, 0)


def order(user: str, coid: str, sells: SignedCertificate | None = None, keys: KeyStore | None = None) -> SubmitOrder:
    side = Side.SELL if sells else Side.BUY
    endorsed = None
    if sells is not None and keys is not None:
        endorsed = endorse(keys.load_identity(user), sells, "sell_order", f"order:{user}:{coid}")
    return SubmitOrder(
        client_order_id=coid,
        user_id=user,
        issue_code=support.ISSUE,
        terms=OrderTerms(side=side, order_type=OrderType.LIMIT, price=PRICE, quantity=100),
        settlement_account=BOX,
        holder_name=None if sells else user,
        holder_address=None if sells else "Tokyo",
        certificate=endorsed,
    )


def test_a_run_ends_at_another_message_and_at_a_second_order_of_a_user_or_a_certid(keys: KeyStore) -> None:
    """Pure: which following orders may have their views read together (what each reads is its
    user's rows and its CertID's, read_ahead.py)."""
    orders = [order(user, f"c{i}") for i, user in enumerate(["ada", "bo", "cy", "ada", "dee"])]
    assert run(orders, 0) == ([0, 1, 2], [view_key(m) for m in orders[:3]])  # ada's second order starts the next
    assert run(orders, 3)[0] == [3, 4]
    assert run([*orders[:2], CancelOrder(client_order_id="c0"), orders[2]], 0)[0] == [0, 1]  # another message
    assert run(orders[:1], 0) == ([0], [view_key(orders[0])])

    for user in ("alice", "bob"):
        enrol(keys, user)
    signed = sign_certificate(keys.load_identity("issuer"), support.stock_certificate())
    sells = [order("alice", "s1", signed, keys), order("bob", "s2", signed, keys), order("cy", "b1")]
    assert view_key(sells[0]).cert_id == view_key(sells[1]).cert_id is not None
    assert view_key(sells[0]).booking and not view_key(sells[2]).booking  # a sell's number is drawn with its view
    assert view_key(sells[2]).account_box == BOX and view_key(sells[0]).account_box is None
    assert run(sells, 0)[0] == [0]  # bob names alice's CertID: his order is read after hers is booked
    assert run(sells, 1)[0] == [1, 2]
