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

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from uuid import UUID

import aio_pika
import asyncpg
import pytest
from aio_pika.abc import AbstractIncomingMessage

from agents.exchange import order_repo, prices
from agents.exchange.book import Execution, Order
from agents.exchange.read_ahead import READ_AHEAD, Booked, ReadAhead, run, view_key
from agents.exchange.trading import end_of_day
from agents.exchange.warm_book import WarmBooks
from agents.registry import AGENTS
from broker import group_commit
from broker.consumer import Outcome, Settled
from broker.context import Context
from broker.pki import KeyStore
from broker.runtime import AgentRuntime, running
from broker.settings import Settings
from broker.stock_certificates import endorse, sign_certificate
from broker.topology import Names
from kabuto_client import Participant, buy_order, open_standing_cover
from kabuto_client.participant import Conversation
from schemas.certificates import SignedCertificate
from schemas.dvp import StandingCoverOpened
from schemas.identity import EXCHANGE_ID
from schemas.trading import CancelOrder, OrderCancelled, OrderTerms, OrderType, Side, SubmitOrder, TimeInForce
from tests import support
from tests.integration.conftest import enrol
from tests.integration.test_standing_cover import cover_requests, drawn

PRICE = Decimal(990)
BOX = support.box()


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


def book_entry_sell(me: Participant, coid: str, quantity: int = 100, price: Decimal = PRICE) -> SubmitOrder:
    return SubmitOrder(
        client_order_id=coid,
        user_id=me.user_id,
        issue_code=support.ISSUE,
        terms=OrderTerms(side=Side.SELL, order_type=OrderType.LIMIT, price=price, quantity=quantity),
        settlement_account=me.account_box(f"{me.user_id}-cash"),
        safekeeping_account=f"{me.user_id}-sk",
    )


async def standing_cover(me: Participant, amount: int) -> UUID:
    answer = await open_standing_cover(me, f"{me.user_id}-cash", Decimal(amount))
    assert isinstance(answer.message, StandingCoverOpened), answer.message
    return answer.message.cover_id


async def covered(
    exchange: AgentRuntime,
    settlement: AgentRuntime,
    traders: dict[str, Participant],
    covers: dict[str, int],
    funded: tuple[str, ...] = ("dora", "erin"),
) -> dict[str, UUID]:
    """The issue listed, ``funded`` traders' cash accounts funded, and a standing cover of each
    amount in ``covers`` opened: the covers, by trader."""
    await support.list_issue(exchange)
    for name in funded:
        await support.fund(settlement, name, Decimal(10_000_000))
    return {name: await standing_cover(traders[name], amount) for name, amount in covers.items()}


async def answer(conversation: Conversation) -> tuple[str, object]:
    opened = await conversation.wait_for("order.accepted", "order.rejected")
    message = opened.message
    return opened.envelope.type, getattr(message, "acceptance_number", None) or getattr(message, "reason", None)


async def settle_queued_as_one_batch(settings: Settings, exchange: AgentRuntime, count: int) -> None:
    """Take ``count`` deliveries waiting in the exchange's inbox and settle them as one batch, as
    its consumer does (group commit), so that which orders share a batch is not up to the broker."""
    async with queued(settings, count) as deliveries:
        settled = await group_commit.settle_batch(exchange.consumer, deliveries)
    assert {s.outcome for s in settled} == {Outcome.PROCESSED}


@asynccontextmanager
async def queued(settings: Settings, count: int) -> AsyncIterator[list[AbstractIncomingMessage]]:
    """``count`` deliveries taken from the exchange's inbox, acked when the block ends."""
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(Names(settings.namespace).inbox("exchange"), passive=True)
        deliveries = [await queue.get(no_ack=False, timeout=5) for _ in range(count)]
        yield deliveries
        await group_commit.ack(deliveries)


@pytest.mark.parametrize("one_batch", [False, True], ids=["one at a time", "one batch"])
async def test_a_batch_of_orders_is_decided_as_they_would_be_one_at_a_time(
    settings: Settings, traders: dict[str, Participant], one_batch: bool
) -> None:
    dora, erin, frank = traders["dora"], traders["erin"], traders["frank"]
    settings = dataclasses.replace(settings, batch_size=1)
    runs, read, dropped = READ_AHEAD.runs, READ_AHEAD.read, READ_AHEAD.dropped
    async with AgentRuntime(AGENTS["exchange"], settings) as exchange, support.agents(settings, "settlement") as rt:
        async with running(exchange):
            # dora's cover has room for one order of 100 at 990, not two
            cover = (await covered(exchange, rt["settlement"], traders, {"dora": 150_000, "erin": 1_000_000}))["dora"]
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
        # d3's row may wait to be written with its run's: a cancel after it in the batch must find it
        cancelled = await dora.send(CancelOrder(client_order_id="d3"), to=EXCHANGE_ID)
        if one_batch:
            await settle_queued_as_one_batch(settings, exchange, len(sent) + 1)
        async with running(exchange):
            d1, e1, d2, e2, d1_again, f1, e3, e2_other, d3 = [await answer(c) for c in sent]
            gone = (await cancelled.wait_for("order.cancelled", "order.rejected")).message
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
    assert isinstance(gone, OrderCancelled) and (gone.acceptance_number, gone.cancelled_quantity) == (d3[1], 50)
    assert held == Decimal(99_000)  # d3's 49,500 was drawn, and given back by its cancel
    assert drift == []
    ahead = (READ_AHEAD.runs - runs, READ_AHEAD.read - read, READ_AHEAD.dropped - dropped)
    if one_batch:
        # runs [d1 e1 d2 e2] — a user's buy orders share a run, d2 told what d1 drew (stop 31) —
        # [d1 f1 e3 e2 d3] — f1, a sell, traded with erin's e1: the three views after it are
        # dropped — [e3 e2 d3]
        assert ahead == (3, 12, 3)
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
    user's rows and its CertID's, read_ahead.py): a user's buy orders share a run (stop 31), not
    an id used twice, nor a sell order with another order of its user."""
    orders = [order(user, f"c{i}") for i, user in enumerate(["ada", "bo", "cy", "ada", "dee"])]
    assert run(orders, 0) == ([0, 1, 2, 3, 4], [view_key(m) for m in orders])  # ada's two buy orders
    again = [order("ada", "c0"), order("bo", "c1"), order("ada", "c0")]
    assert run(again, 0)[0] == [0, 1]  # ada's c0 twice: the second reads the first's row
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
    mixed = [order("cy", "b2"), sells[1], order("bob", "b3"), order("cy", "b4")]
    assert run(mixed, 0)[0] == [0, 1]  # bob's buy after his sell starts the next run
    assert run(mixed, 2)[0] == [2, 3]
    assert run([order("bob", "b5"), sells[1]], 0)[0] == [0]  # and his sell after his buy


@pytest.fixture
def connection(listed_exchange: asyncpg.Connection) -> asyncpg.Connection:
    return listed_exchange


async def test_order_rows_held_are_written_before_a_book_is_read_from_rows(connection: asyncpg.Connection) -> None:
    """A row held for its run (``holding_rows``) is in the table before the warm book reads the
    issue's token or rebuilds a book from its rows; nothing else of the run may read it."""
    request = order("ada", "held-1")
    number = await order_repo.next_acceptance_number(connection)
    resting = Order(number, "held-1", "ada", Side.BUY, OrderType.LIMIT, PRICE, 100, 100)
    rows = "SELECT count(*) FROM orders WHERE client_order_id = 'held-1'"
    with order_repo.holding_rows():
        async with connection.transaction():
            await order_repo.insert_order(connection, resting, request, "hash", "digest")
            assert await connection.fetchval(rows) == 0  # held
            book = await WarmBooks().load(connection, support.ISSUE)
            assert [o.acceptance_number for o in book.resting(Side.BUY)] == [number]
            assert await connection.fetchval(rows) == 1


async def waiting_for_a_lock(exchange: AgentRuntime) -> None:
    async def waiting() -> bool:
        count = await exchange.query(
            lambda c: c.fetchval(
                """SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
                   WHERE NOT l.granted AND a.datname = current_database()"""
            )
        )
        return bool(count)

    await support.eventually(waiting)


@pytest.mark.parametrize("one_batch", [False, True], ids=["one at a time", "one batch"])
@pytest.mark.parametrize("first", [False, True], ids=["after another order", "first"])
@pytest.mark.parametrize("command", ["end_of_day", "new_reference"])
async def test_an_order_is_decided_on_what_a_command_holding_its_book_committed(
    settings: Settings, traders: dict[str, Participant], one_batch: bool, first: bool, command: str
) -> None:
    """Found by review: a run's views were read before its orders waited for their book's lock,
    so an order decided after a command that held the lock (the end of the day expiring a buyer's
    DAY order, a new reference price) was decided on what it read before the command committed.
    One order alone had the same flaw (its view was read before its book was locked). The views
    are now read after the run's instrument rows are locked."""
    erin, frank = traders["erin"], traders["frank"]  # erin's account usage limit: 300,000
    settings = dataclasses.replace(settings, batch_size=1)
    async with AgentRuntime(AGENTS["exchange"], settings) as exchange, support.agents(settings, "settlement") as rt:
        async with running(exchange):
            await support.list_issue(exchange)  # reference 1000: limits 700–1300
            await support.fund(rt["settlement"], "erin", Decimal(10_000_000))
            await standing_cover(erin, 1_000_000)
            if command == "end_of_day":  # a DAY buy of 297,000: e2's 99,000 fits only once it expired
                e1 = await erin.send(buy(erin, "e1", quantity=300), to=EXCHANGE_ID)
                assert (await answer(e1))[0] == "order.accepted"
        # 800 is inside the limits at a reference of 1000, outside them at 1500 (1100–1900)
        e2_order = buy(erin, "e2", price=PRICE if command == "end_of_day" else Decimal(800))
        f1_order = book_entry_sell(frank, "f1", price=Decimal(1200))  # inside both days' limits
        if first:
            e2 = await erin.send(e2_order, to=EXCHANGE_ID)
        f1 = await frank.send(f1_order, to=EXCHANGE_ID)
        if not first:
            e2 = await erin.send(e2_order, to=EXCHANGE_ID)
        held, release = asyncio.Event(), asyncio.Event()

        async def the_command(ctx: Context) -> None:
            if command == "end_of_day":
                assert await end_of_day(ctx) == 1
            else:
                await prices.listed(support.ISSUE, "common", Decimal(1500))(ctx)
            held.set()
            await release.wait()  # its transaction stays open, the instrument row locked

        async with queued(settings, 2) as deliveries:
            done = asyncio.create_task(exchange.command("exchange", the_command))
            await held.wait()

            async def settle() -> list[Settled]:
                if one_batch:
                    return await group_commit.settle_batch(exchange.consumer, deliveries)
                return [await exchange.consumer.settle(d) for d in deliveries]

            settling = asyncio.create_task(settle())
            await waiting_for_a_lock(exchange)  # the first order waits for the command's commit
            release.set()
            await done
            settled = await settling
        assert {s.outcome for s in settled} == {Outcome.PROCESSED}
        async with running(exchange):
            f1_answer, e2_answer = await answer(f1), await answer(e2)
    assert f1_answer[0] == "order.accepted"
    if command == "end_of_day":  # e1 expired before e2 was decided: only e2 is open
        assert e2_answer[0] == "order.accepted", e2_answer
    else:  # the limits were 1100–1900 when e2 was decided
        assert e2_answer == ("order.rejected", "price_limit_exceeded"), e2_answer


async def test_a_batch_whose_held_rows_fail_to_be_written_runs_again_and_books_each_order_once(
    settings: Settings, traders: dict[str, Participant], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The held rows' statement fails at the batch's end (as a unique violation would): the
    batch runs again a savepoint each, where nothing is held, and every order is booked once."""
    dora, erin = traders["dora"], traders["erin"]
    settings = dataclasses.replace(settings, batch_size=1)
    real, failed = order_repo.write_held, []

    async def failing_once(connection: asyncpg.Connection) -> None:
        held = order_repo._HELD.get()
        if held and not failed:
            failed.append(len(held.rows))
            raise RuntimeError("the held rows' INSERT failed")
        await real(connection)

    async with AgentRuntime(AGENTS["exchange"], settings) as exchange, support.agents(settings, "settlement") as rt:
        async with running(exchange):
            await covered(exchange, rt["settlement"], traders, {"dora": 1_000_000, "erin": 1_000_000})
        sent = [await dora.send(buy(dora, "d1"), to=EXCHANGE_ID), await erin.send(buy(erin, "e1"), to=EXCHANGE_ID)]
        monkeypatch.setattr(order_repo, "write_held", failing_once)
        async with queued(settings, 2) as deliveries:
            settled = await group_commit.settle_batch(exchange.consumer, deliveries)
        monkeypatch.setattr(order_repo, "write_held", real)
        assert failed == [2] and {s.outcome for s in settled} == {Outcome.PROCESSED}
        async with running(exchange):
            answers = [await answer(c) for c in sent]
            rows = await support.rows(exchange, "SELECT user_id, client_order_id, status FROM orders ORDER BY 1")
            async with exchange.pool.acquire() as connection:
                drift = await order_repo.exposure_drift(connection)
    assert [kind for kind, _ in answers] == ["order.accepted"] * 2
    assert rows == [
        {"user_id": "dora", "client_order_id": "d1", "status": "open"},
        {"user_id": "erin", "client_order_id": "e1", "status": "open"},
    ]
    assert drift == []


async def test_an_execution_takes_the_sold_certid_off_the_list_in_its_own_statement(
    connection: asyncpg.Connection,
) -> None:
    """S94 folded into S92–S93 (stop 28): the match is inserted and the seller's CertID marked
    in transfer together; another CertID stays valid; a book-entry execution (no CertID)
    touches no CertID."""
    sold, other = UUID(int=1), UUID(int=2)
    for cert_id in (sold, other):
        await connection.execute(
            """INSERT INTO certid_list (cert_id, issue_code, user_id, shares, status, version)
               VALUES ($1, $2, 'ada', 100, 'valid', 1)""",
            cert_id,
            support.ISSUE,
        )
    numbers = []
    for coid in ("m-buy", "m-sell-1", "m-sell-2"):  # rows the matches refer to (their side does not matter here)
        number = await order_repo.next_acceptance_number(connection)
        resting = Order(number, coid, "ada", Side.BUY, OrderType.LIMIT, PRICE, 100, 100)
        await order_repo.insert_order(connection, resting, order("ada", coid), "hash", "digest")
        numbers.append(number)
    buy, sell, sell_later = numbers
    execution = Execution(buy, sell, PRICE, 100, buyer="bo", seller="ada", aggressor=Side.BUY)
    first = (await insert_match(connection, execution, sold)).matching_number
    second = (await insert_match(connection, execution._replace(sell=sell_later))).matching_number
    assert second > first
    listed = {r["cert_id"]: r["status"] for r in await connection.fetch("SELECT cert_id, status FROM certid_list")}
    assert listed == {sold: "in_transfer", other: "valid"}
    matches = await connection.fetch("SELECT matching_number, sell_order, status FROM matches ORDER BY 1")
    assert [(m["matching_number"], m["sell_order"], m["status"]) for m in matches] == [
        (first, sell, "pending_transfer"),
        (second, sell_later, "pending_transfer"),
    ]


async def test_what_instructing_a_sell_orders_next_execution_reads_is_one_round_trip(
    connection: asyncpg.Connection,
) -> None:
    """S95's reads folded (stop 28): the sell order's unfinished executions oldest first — not a
    completed one, not another sell order's — with the sell order and each buy order they name,
    as ``unfinished_matches`` and ``orders`` read them apart."""
    numbers = []
    for coid in ("v-sell", "v-buy-1", "v-buy-2", "v-other-sell"):
        number = await order_repo.next_acceptance_number(connection)
        resting = Order(number, coid, "ada", Side.BUY, OrderType.LIMIT, PRICE, 300, 300)
        await order_repo.insert_order(connection, resting, order("ada", coid), "hash", "digest")
        numbers.append(number)
    sell, buy_1, buy_2, other_sell = numbers
    view = await order_repo.instruction_view(connection, sell)
    assert view.unfinished == [] and values(view.orders) == values(await order_repo.orders(connection, [sell]))

    def execution(buy: int, seller_order: int = sell) -> Execution:
        return Execution(buy, seller_order, PRICE, 100, buyer="bo", seller="ada", aggressor=Side.BUY)

    async def insert(buy: int, seller_order: int = sell) -> Inserted:
        inserted = await insert_match(connection, execution(buy, seller_order))
        # stop 30: the view the insert returns is the one read after it
        after = await order_repo.instruction_view(connection, seller_order)
        assert inserted.view.unfinished == after.unfinished
        assert values(inserted.view.orders) == values(after.orders)
        assert inserted.matching_number == after.unfinished[-1].matching_number
        return inserted

    done = (await insert(buy_1)).matching_number
    await connection.execute("UPDATE matches SET status = 'completed' WHERE matching_number = $1", done)
    first = (await insert(buy_2)).matching_number
    await connection.execute("UPDATE matches SET status = 'transfer_requested' WHERE matching_number = $1", first)
    second = (await insert(buy_1)).matching_number
    await insert(buy_2, other_sell)
    view = await order_repo.instruction_view(connection, sell)
    assert [m.matching_number for m in view.unfinished] == [first, second]
    assert view.unfinished == await order_repo.unfinished_matches(connection, sell)
    assert values(view.orders) == values(await order_repo.orders(connection, [sell, buy_1, buy_2]))


@dataclasses.dataclass(frozen=True)
class Inserted:
    matching_number: int
    view: order_repo.InstructionView  # of the execution's sell order, as the insert left it


async def insert_match(connection: asyncpg.Connection, execution: Execution, sold: UUID | None = None) -> Inserted:
    """One execution entered alone (``order_repo.insert_matches``)."""
    matched = await order_repo.insert_matches(connection, support.ISSUE, [execution], [sold])
    (matching_number,) = matched.matching_numbers
    return Inserted(matching_number, matched.views[execution.sell])


def values(records: dict[int, order_repo.OrderRecord]) -> dict[int, tuple[object, ...]]:
    """Records compared by value (an ``Order`` is compared by identity)."""
    return {number: dataclasses.astuple(record) for number, record in records.items()}


async def test_a_transfer_request_held_in_a_batch_is_read_as_written_and_written_once_at_its_end(
    connection: asyncpg.Connection,
) -> None:
    """S95 held (stop 31): in a batch an execution's transfer request waits to be written with the
    others, and the sell order's next execution, read meanwhile, sees it requested — so it waits
    its turn and the first is not instructed twice. At the batch's end one statement writes them;
    an execution that is not in the list fails the batch rather than being skipped."""
    numbers = []
    for coid in ("h-sell", "h-buy-1", "h-buy-2"):
        number = await order_repo.next_acceptance_number(connection)
        resting = Order(number, coid, "ada", Side.BUY, OrderType.LIMIT, PRICE, 300, 300)
        await order_repo.insert_order(connection, resting, order("ada", coid), "hash", "digest")
        numbers.append(number)
    sell, buy_1, buy_2 = numbers
    cert = UUID(int=9)

    def execution(buy: int) -> Execution:
        return Execution(buy, sell, PRICE, 100, buyer="bo", seller="ada", aggressor=Side.BUY)

    async def statuses() -> list[tuple[str, UUID | None, str | None]]:
        rows = await connection.fetch(
            "SELECT status, cert_id, transfer_request_hash FROM matches ORDER BY matching_number"
        )
        return [(r["status"], r["cert_id"], r["transfer_request_hash"]) for r in rows]

    async with connection.transaction():
        with order_repo.holding_rows():
            first = await insert_match(connection, execution(buy_1))
            assert order_repo.next_transfer(first.view.unfinished) == first.view.unfinished[0]
            await order_repo.transfer_requested(connection, first.matching_number, cert, "digest-1")
            assert await statuses() == [("pending_transfer", None, None)]  # held, not written
            second = await insert_match(connection, execution(buy_2))
            requested, waiting = second.view.unfinished
            assert (requested.status, requested.cert_id, requested.transfer_request_hash) == (
                "transfer_requested",
                cert,
                "digest-1",
            )
            assert waiting.status == "pending_transfer"
            assert order_repo.next_transfer(second.view.unfinished) is None  # S95: one at a time
            assert (await order_repo.instruction_view(connection, sell)).unfinished == second.view.unfinished
            await order_repo.write_held_transfers(connection)
            await order_repo.write_held_transfers(connection)  # nothing left: no statement, no error
        assert await statuses() == [("transfer_requested", cert, "digest-1"), ("pending_transfer", None, None)]

    with order_repo.holding_rows():
        await order_repo.transfer_requested(connection, 10**9, None, "no such execution")
        with pytest.raises(RuntimeError, match=r"transfer requests for \[1000000000\]: not written as checked"):
            await order_repo.write_held_transfers(connection)
    await order_repo.transfer_requested(connection, second.matching_number, None, "digest-2")  # alone: at once
    assert (await statuses())[-1] == ("transfer_requested", None, "digest-2")


async def test_two_executions_of_one_sell_order_in_a_batch_are_instructed_one_at_a_time(
    settings: Settings, traders: dict[str, Participant]
) -> None:
    """S95 in a batch (stop 31): erin's and dora's buys both trade with frank's resting sell in one
    batch. Only the first execution is instructed; the second waits for it, as it would had they
    come one at a time — the first's transfer request, held to the batch's end, is read as made."""
    dora, erin, frank = traders["dora"], traders["erin"], traders["frank"]
    async with AgentRuntime(AGENTS["exchange"], settings) as exchange, support.agents(settings, "settlement") as rt:
        async with running(exchange):
            await covered(exchange, rt["settlement"], traders, {"dora": 1_000_000, "erin": 1_000_000})
            assert (await answer(await frank.send(book_entry_sell(frank, "f1", quantity=300), to=EXCHANGE_ID)))[0] == (
                "order.accepted"
            )
        sent = [
            await erin.send(buy(erin, "e1", book_entry=True), to=EXCHANGE_ID),
            await dora.send(buy(dora, "d1", book_entry=True), to=EXCHANGE_ID),
        ]
        await settle_queued_as_one_batch(settings, exchange, len(sent))
        matches = await support.rows(exchange, "SELECT matching_number, status FROM matches ORDER BY matching_number")
        instructed = await support.rows(
            exchange, "SELECT count(*) AS n FROM outbox_messages WHERE message_type = 'settlement.instruction'"
        )
    assert [m["status"] for m in matches] == ["transfer_requested", "pending_transfer"]
    assert instructed == [{"n": 1}]


@pytest.mark.parametrize("one_batch", [False, True], ids=["one at a time", "one batch"])
async def test_a_users_buy_orders_in_one_run_each_see_what_the_earlier_ones_drew_and_opened(
    settings: Settings, traders: dict[str, Participant], one_batch: bool
) -> None:
    """Stop 31: a user's buy orders share a run of views, each told what the run's earlier ones
    booked — the standing cover they drew on (a filled order draws as much as a resting one, an
    IOC order cancelled whole draws nothing) and the exposure they opened (R-001-23) — so the
    batch decides what one order at a time decides."""
    dora, erin, frank = traders["dora"], traders["erin"], traders["frank"]
    settings = dataclasses.replace(settings, batch_size=1)
    async with AgentRuntime(AGENTS["exchange"], settings) as exchange, support.agents(settings, "settlement") as rt:
        async with running(exchange):
            # dora's cover has room for three orders of 100 at 990; erin's usage limit is 300,000;
            # frank's cash: d1's trade waits at custody, not failed
            covers = {"dora": 300_000, "erin": 1_000_000}
            cover = (await covered(exchange, rt["settlement"], traders, covers, ("dora", "erin", "frank")))["dora"]
            assert (await answer(await frank.send(book_entry_sell(frank, "f1"), to=EXCHANGE_ID)))[0] == "order.accepted"
        ioc = buy(dora, "d3")
        ioc = ioc.model_copy(update={"terms": ioc.terms.model_copy(update={"time_in_force": TimeInForce.IOC})})
        sent = [
            await dora.send(buy(dora, "d1", book_entry=True), to=EXCHANGE_ID),  # fills against f1: draws 99,000
            await dora.send(buy(dora, "d2"), to=EXCHANGE_ID),  # rests: 99,000 more
            await dora.send(ioc, to=EXCHANGE_ID),  # nothing to fill: cancelled whole, draws nothing
            await dora.send(buy(dora, "d4"), to=EXCHANGE_ID),  # 102,000 of room left: drawn
            await dora.send(buy(dora, "d5"), to=EXCHANGE_ID),  # 3,000 left: a cover of its own
            await erin.send(buy(erin, "e1", quantity=200), to=EXCHANGE_ID),  # 198,000 open
            await erin.send(buy(erin, "e2"), to=EXCHANGE_ID),  # 297,000 open: within 300,000
            await erin.send(buy(erin, "e3", quantity=10), to=EXCHANGE_ID),  # 306,900: over the limit
        ]
        if one_batch:
            await settle_queued_as_one_batch(settings, exchange, len(sent))
        async with running(exchange):
            answers = [await answer(c) for c in sent]
            await sent[2].wait_for("order.cancelled")
            held = await drawn(exchange, cover)
            requests = await cover_requests(exchange)
            async with exchange.pool.acquire() as connection:
                drift = await order_repo.exposure_drift(connection)
    kinds = [kind for kind, _ in answers]
    assert kinds == ["order.accepted"] * 7 + ["order.rejected"], answers
    assert answers[-1][1] == "account_usage_limit_exceeded"
    assert requests == 1  # d5's alone
    assert held == Decimal(297_000)  # d1's execution, d2 and d4 resting
    assert drift == []


async def test_a_buy_that_traded_with_sells_keeps_the_views_read_ahead_but_those_of_the_certids_it_bought(
    connection: asyncpg.Connection, keys: KeyStore
) -> None:
    """Stop 31: what a buy order trading with sell orders changed, of what other views read, is
    the listing and the commitment of the CertIDs it bought: only the views naming one of them are
    read again. A sell order that traded may have changed its buyers' exposure and covers: every
    view is read again."""
    enrol(keys, "ada")
    signed = sign_certificate(keys.load_identity("issuer"), support.stock_certificate())
    messages = [order("cy", "b1"), order("ada", "s1", signed, keys), order("bo", "b2")]
    sold = view_key(messages[1]).cert_id
    assert sold is not None
    incoming = Order(1, "b1", "cy", Side.BUY, OrderType.LIMIT, PRICE, 100, 0)
    resting = Order(2, "s0", "ada", Side.SELL, OrderType.LIMIT, PRICE, 100, 0, cert_id=sold)
    ahead = ReadAhead()
    async with connection.transaction(), ahead.batch(connection, messages):
        await ahead.view(connection, messages[0])
        assert [ahead.read_ahead(m) for m in messages] == [False, True, True]
        ahead.traded(incoming, [resting])
        assert [ahead.read_ahead(m) for m in messages] == [False, False, True]
        ahead.traded(dataclasses.replace(resting, acceptance_number=3), [incoming])
        assert [ahead.read_ahead(m) for m in messages] == [False, False, False]


@pytest.mark.parametrize(
    ("kind", "price", "quantity", "remaining", "cancelled", "cover_unit"),
    [
        ("resting limit buy", PRICE, 100, 100, 0, PRICE),
        ("partly filled, resting", PRICE, 300, 120, 0, Decimal(1000)),
        ("filled", PRICE, 100, 0, 0, PRICE),
        ("IOC, part cancelled", PRICE, 300, 0, 200, PRICE),
        ("IOC, cancelled whole", PRICE, 100, 0, 100, PRICE),
        ("market order, resting", None, 100, 40, 0, Decimal(1300)),
        ("on no standing cover", PRICE, 100, 100, 0, None),
    ],
)
async def test_what_a_booked_buy_order_opened_and_drew_is_what_the_running_totals_count(
    connection: asyncpg.Connection,
    kind: str,
    price: Decimal | None,
    quantity: int,
    remaining: int,
    cancelled: int,
    cover_unit: Decimal | None,
) -> None:
    """``Booked`` repeats two rules of the database's (migrations 0068 and 0070) for the views of
    a run: it must say what the triggers' own functions say for the order as the book left it,
    its executions awaiting transfer. (Stop 21 kept one definition; stop 31 keeps this test.)"""
    order = Order(1, kind, "dora", Side.BUY, OrderType.LIMIT if price else OrderType.MARKET, price, quantity, remaining)
    cover = UUID(int=5) if cover_unit is not None else None
    booked = Booked(order, cancelled, cover, cover_unit)
    status = "open" if remaining else ("cancelled" if cancelled else "filled")
    executed = quantity - remaining - cancelled
    counted = await connection.fetchrow(
        """SELECT order_exposure('buy', $1, $2, $3) AS opened,
                  order_draw('buy', $1, $2, $4) + coalesce(execution_draw('pending_transfer', $5, $6, $4), 0)
                      AS drawn""",
        status,
        remaining,
        price,
        cover_unit,
        executed,
        price or Decimal(1300),
    )
    assert booked.opened() == counted["opened"]
    assert booked.drawn() == (counted["drawn"] or 0)
