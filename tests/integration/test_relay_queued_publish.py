"""A window's publications are queued without waiting for each one's write (broker.relay_window,
stop 37): what a row's fate waits for is still the broker's confirm of that very row, and a
connection lost while the window waits for room in the client's write queue ends the window.

Events are published one row each, so a window of events is a window of publications — the case
the queued publish changes most. The broker's answers come from real queues: one bound to the
events exchange to read what arrived, and one that refuses what it cannot hold
(``x-overflow: reject-publish``), which makes the broker nack a publication.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import aio_pika
import aiormq
import pytest
from aio_pika.abc import AbstractQueue

from agents.investor.app import AGENT as AGENT_INVESTOR
from broker import relay_window
from broker.context import Context
from broker.relay_window import MARK_AND_READ, publish_window
from broker.runtime import AgentRuntime
from broker.settings import Settings
from broker.supervision import is_infrastructure
from broker.topology import Names
from schemas.prices import LastPrice
from tests import support

EVENT = "market.last_price"


def _price(n: int) -> LastPrice:
    return LastPrice(issue_code=support.ISSUE, price=Decimal(1000 + n), traded_at=datetime.now(UTC))


async def _emit_events(investor: AgentRuntime, count: int) -> list[str]:
    """``count`` events stored in one command, as one window would hold them: their ids in order."""

    async def emitting(ctx: Context) -> list[str]:
        return [str(ctx.emit(_price(n)).envelope.message_id) for n in range(count)]

    ids: list[str] = await investor.command("alice", emitting)
    return ids


@asynccontextmanager
async def _bound_queue(settings: Settings, **arguments: Any) -> AsyncIterator[AbstractQueue]:
    """A queue of the test's own, bound to the events exchange for ``EVENT``."""
    connection = await aio_pika.connect(settings.amqp_url)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(exclusive=True, arguments=arguments or None)
        await queue.bind(Names(settings.namespace).events, routing_key=EVENT)
        yield queue
    finally:
        await connection.close()


async def _received(queue: AbstractQueue, count: int) -> list[str]:
    ids: list[str] = []
    for _ in range(count):
        message = await queue.get(timeout=10)
        await message.ack()
        assert message.message_id is not None
        ids.append(message.message_id)
    assert await queue.get(fail=False) is None, "a row was published more than once"
    return ids


async def test_a_window_of_events_arrives_once_each_in_outbox_order_and_is_marked(settings: Settings) -> None:
    async with AgentRuntime(AGENT_INVESTOR, settings) as investor, _bound_queue(settings) as queue:
        emitted = await _emit_events(investor, 60)
        assert await investor.relay.publish_pending() == 60  # one window: every row at once
        assert await investor.relay.publish_pending() == 0
        assert await _received(queue, 60) == emitted
        rows = await support.rows(investor, "SELECT published_at, failed_at FROM outbox ORDER BY seq")
        assert len(rows) == 60
        assert all(r["published_at"] is not None and r["failed_at"] is None for r in rows)


async def test_a_nacked_publication_stays_pending_and_the_confirmed_ones_before_it_are_marked(
    settings: Settings,
) -> None:
    """The broker takes the first event and nacks the two after it (its queue is full): each
    row's fate is its own confirm's, though all three were queued before any was confirmed."""
    async with AgentRuntime(AGENT_INVESTOR, settings) as investor:
        async with _bound_queue(settings, **{"x-max-length": 1, "x-overflow": "reject-publish"}) as full:
            emitted = await _emit_events(investor, 3)
            with pytest.raises(aiormq.exceptions.DeliveryError):
                await investor.relay.publish_pending()
            rows = await support.rows(
                investor, "SELECT message_id::text AS id, published_at, failed_at FROM outbox ORDER BY seq"
            )
            assert [r["id"] for r in rows] == emitted
            assert rows[0]["published_at"] is not None
            assert [r["published_at"] for r in rows[1:]] == [None, None]  # pending: published again
            assert all(r["failed_at"] is None for r in rows)  # a nack is not a parked row
            assert await _received(full, 1) == emitted[:1]
        # The full queue is gone: the next pass publishes the two rows left, and only them.
        async with _bound_queue(settings) as queue:
            assert await investor.relay.publish_pending() == 2
            assert await _received(queue, 2) == emitted[1:]
        rows = await support.rows(investor, "SELECT published_at FROM outbox")
        assert all(r["published_at"] is not None for r in rows)


async def test_returned_rows_in_a_queued_window_are_parked_and_the_rest_arrive_in_order(settings: Settings) -> None:
    """Every third row is for a queue no one declared: the broker returns it, and only it."""
    async with AgentRuntime(AGENT_INVESTOR, settings) as investor, _bound_queue(settings) as queue:

        async def mixed(ctx: Context) -> list[str]:
            return [
                str(
                    (
                        ctx.emit(support.issuance_request("alice"), to="nobody") if n % 3 == 1 else ctx.emit(_price(n))
                    ).envelope.message_id
                )
                for n in range(30)
            ]

        emitted: list[str] = await investor.command("alice", mixed)
        assert await investor.relay.publish_pending() == 30
        rows = await support.rows(
            investor, "SELECT message_id::text AS id, published_at, failed_at FROM outbox ORDER BY seq"
        )
        assert [r["id"] for r in rows] == emitted
        for n, row in enumerate(rows):
            parked = n % 3 == 1
            assert (row["published_at"] is None, row["failed_at"] is not None) == (parked, parked), n
        assert await _received(queue, 20) == [id_ for n, id_ in enumerate(emitted) if n % 3 != 1]


async def test_a_connection_lost_while_the_window_waits_for_room_ends_the_window_and_keeps_its_rows(
    settings: Settings,
) -> None:
    """40 publications queued at once fill aiormq's write queue (ten frames); the connection is
    cut then, as a broker closing it or an EOF would. The sends waiting for room are woken by
    nothing once the writer is gone: the window must still end, with the channel's loss, and
    every row it did not see confirmed must stay pending (found by review: it waited for ever)."""
    async with AgentRuntime(AGENT_INVESTOR, settings) as investor:
        await _emit_events(investor, 40)
        relay = investor.relay
        rows = await relay.pool.fetch(MARK_AND_READ, [], relay.batch)
        assert len(rows) == 40
        session = await investor.link.current()
        amqp = session.connection.transport.connection  # the aiormq connection under the session

        async def cut_when_full() -> None:
            # Looked at every turn of the loop: the writer empties a full queue within a few
            # turns, and nothing signals the moment it is full.
            await support.eventually(amqp.write_queue.full, timeout=10, every=0)
            await amqp.close(ConnectionError("cut"))

        cut = asyncio.ensure_future(cut_when_full())
        window = asyncio.ensure_future(
            publish_window(relay.agent, relay.pool, relay.exchanges, rows, relay.bundling, relay.sealers, None)
        )
        async with asyncio.timeout(10):
            await cut
            with pytest.raises(Exception) as raised:
                await window
        assert is_infrastructure(raised.value), repr(raised.value)
        counts = await support.rows(
            investor,
            """SELECT count(*) FILTER (WHERE published_at IS NULL AND failed_at IS NULL) AS pending,
                      count(*) FILTER (WHERE failed_at IS NOT NULL) AS parked FROM outbox""",
        )
        assert counts[0]["parked"] == 0
        assert counts[0]["pending"] >= 30  # at most the ten frames queued before the cut were confirmed


async def test_a_window_cancelled_while_it_publishes_cancels_its_sends(settings: Settings) -> None:
    """The relay stopping cancels the window it is in; its sends stop with it rather than go on
    publishing unowned (an awaited gather cancelled its children; a wait does not)."""
    async with AgentRuntime(AGENT_INVESTOR, settings) as investor:
        await _emit_events(investor, 40)
        relay = investor.relay
        rows = await relay.pool.fetch(MARK_AND_READ, [], relay.batch)
        window = asyncio.ensure_future(
            publish_window(relay.agent, relay.pool, relay.exchanges, rows, relay.bundling, relay.sealers, None)
        )
        sends: list[asyncio.Task[object]] = []

        def started() -> bool:
            sends[:] = [task for task in asyncio.all_tasks() if _is_send(task)]
            return bool(sends)

        await support.eventually(started, timeout=10, every=0)  # the first turn the window's sends exist
        window.cancel()  # before any confirm can have come back: no send has finished
        with pytest.raises(asyncio.CancelledError):
            await window
        await asyncio.wait(sends, timeout=5)
        assert all(send.cancelled() for send in sends), [send for send in sends if not send.cancelled()]
        marked = await support.rows(investor, "SELECT count(*) AS n FROM outbox WHERE published_at IS NOT NULL")
        assert marked[0]["n"] == 0  # nothing is marked by a window that did not finish


def _is_send(task: asyncio.Task[object]) -> bool:
    return not task.done() and getattr(task.get_coro(), "__qualname__", "") == "_send"


async def test_a_window_cancelled_while_it_waits_leaves_no_unretrieved_exception(settings: Settings) -> None:
    """A relay stopped in the middle of a window (`make bench` between its stages) cancels the
    window's sends; their gathered future ended holding a CancelledError nobody retrieved, and
    asyncio reported "_GatheringFuture exception was never retrieved" when it was collected."""
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    handler = loop.get_exception_handler()
    gc.collect()  # what earlier tests left is collected (and reported) before this test listens
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    connection = await aio_pika.connect(settings.amqp_url)
    try:
        channel = await (await connection.channel(publisher_confirms=True)).get_underlay_channel()
        assert isinstance(channel, aiormq.Channel)
        sending = asyncio.Event()

        async def never_confirmed() -> None:
            sending.set()
            await loop.create_future()

        send = asyncio.create_task(never_confirmed())
        window = asyncio.create_task(relay_window._outcomes(channel, [send]))
        await sending.wait()  # the window, scheduled before this wakes, waits on its send
        window.cancel()
        with pytest.raises(asyncio.CancelledError):
            await window
        # Done callbacks run in the order they were added: the gather's (and what it schedules)
        # before this wait's, so the gathered future has ended when this returns.
        await asyncio.wait({send})
        assert send.cancelled()
        del window, send
        gc.collect()
    finally:
        loop.set_exception_handler(handler)
        await connection.close()
    ours = [c for c in reported if _of_the_window(c.get("future"))]
    assert ours == [], ours


def _of_the_window(future: object) -> bool:
    """The futures this test made: the window, its send, and the gather between them (CI once
    caught a task another test had left, collected by this test's gc.collect())."""
    if type(future).__name__ == "_GatheringFuture":
        return True
    coro = future.get_coro() if isinstance(future, asyncio.Task) else None
    return getattr(coro, "__qualname__", "").split(".")[-1] in {"never_confirmed", "_outcomes"}
