"""Acceptance views read ahead for a batch's orders: one statement for a run of orders,
and one for the rows of those it books.

Every submitted order needs its acceptance view (``order_repo.acceptance_view``: the issue,
the client order id's history, the sender's open exposure and standing cover, the CertID's
listing and commitment) before the checks can decide. Read one order at a time, that is a
round trip per order on the exchange's hottest path (issue 8, docs/performance.md). In a
batch run all at once (broker.group_commit) the views of a **run** of orders are read together,
in one statement, when the run's first order asks for its own.

A view read ahead must be exactly what the order would have read alone, after every handler
before it in the batch has run. So a run is cut where that could differ:

* a run holds only ``SubmitOrder`` messages that follow one another; any other message (a
  cover granted, a cancel, a CertID list) ends it, since its handler may change anything;
* no two orders of a run share a CertID or a client order id. What an order's booking changes
  is its own user's rows (its client order id, its open buy exposure, its standing cover's
  room, a pending order) and its own CertID's (committed to the order), and nothing another
  user's view reads. An order of the same CertID or id starts the next run, read when it asks;
* a user's orders share a run only if they are all buy orders, and then each is told what the
  run's earlier ones of its user booked (``Booked``, stop 31): the exposure they opened and what
  they drew on each standing cover, as the database's running totals count them (an open buy
  order opens remaining × price; an order on a standing cover draws its unit for every share
  not cancelled). A user's sell order starts the next run if another order of theirs is in it;
* an order that did more than rest whole or wait for its cover — it traded, touched resting
  orders, or was cancelled (an IOC rest, a market order) — may have changed other users'
  exposure and standing covers and a CertID's listing (``traded``). A buy order that touched
  only sell orders changed, of what other views read, only the listing and commitment of the
  CertIDs it bought (sell orders hold no exposure and draw on no cover): the views naming them
  are dropped. Anything else drops every view read ahead, and the next order reads a new run.
  (The instrument's last price a view carries decides nothing at acceptance: the price band
  is the reference price's.)

A view is read only once the instrument rows of its run's issues are locked
(``WarmBooks.lock_issues``, once per issue in a batch): a command holding one (closing the day,
setting a new reference price) has then committed, and every order is decided on what it
committed, as it would be if the command had come first — which it did.

The acceptance numbers a run draws are handed out in the run's order, so orders keep their
arrival priority; a view dropped leaves its number unused, a gap, as a refused order does.

What a batch's orders write is written together too (``order_repo``'s held rows, one
statement): an order's row, the resting orders it touched and its executions may wait while the
orders after it in its run are decided, since none of them reads them (that is what cuts the
run), and what its handler does with the executions waits with them (``order_repo.write_held``,
stop 40). Held rows are written before anything that could read them:

* before any handler runs whose message is not an order read ahead with the run under way
  (``writing_held``), so a cancel, a cover granted or the next run's first order sees them
  (after a trade that dropped the views read ahead, the next order is such a first order);
* before the warm book reads an issue's token or rebuilds a book from rows (warm_book.py);
* before any other path enters executions (``order_repo.insert_matches``);
* at the batch's end, before the warm books count the rows written and seal.

The transfer requests of S95 (an execution instructed to settlement) are held the same way
and written together at the batch's end (``order_repo.transfer_requested``), or before any
handler whose message is not an order: an order's handler reads executions only through the
sell order's instruction view, which shows a held request as made.

Outside a batch run all at once (a delivery alone, a batch run again a savepoint each) no
view is read ahead and no row is held: each order reads its own and writes its own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from uuid import UUID

import asyncpg

from agents.exchange import acceptance, order_repo
from agents.exchange.book import Order
from agents.exchange.order_repo import AcceptanceView, ViewKey
from agents.exchange.warm_book import BOOKS
from broker import set_based
from broker.context import Context
from schemas.catalogue import Message
from schemas.trading import Side, SubmitOrder

Handler = Callable[[Any, Context], Awaitable[None]]


def view_key(request: SubmitOrder) -> ViewKey:
    """What a submitted order's view is read for: a sell order is booked if it passes (its
    number drawn with the view), a buy order looks for the standing cover it may draw on."""
    buy = request.terms.side is Side.BUY
    return ViewKey(
        request.user_id,
        request.client_order_id,
        request.issue_code,
        acceptance.cert_id_of(request),
        booking=not buy,
        account_box=request.settlement_account if buy else None,
    )


@dataclass(slots=True)
class _Batch:
    messages: Sequence[Message]
    index: dict[int, int]  # id(message) → its place in the batch
    # by place, read ahead, not yet taken: each view with what it was read for
    views: dict[int, tuple[ViewKey, AcceptanceView]] = field(default_factory=dict)
    # What the run's orders booked since its views were read, for the views of the same user's
    # later buy orders in the run (``Booked``): drawn on each standing cover, opened by each user.
    drawn: dict[UUID, Decimal] = field(default_factory=dict)
    opened: dict[str, Decimal] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Booked:
    """What booking a buy order changed in what its user's later orders' views read: the standing
    cover it drew on (``cover_id``, ``cover_unit`` a share), and the order as the book left it.

    The database's running totals say the same (migrations 0068 and 0070): an open buy order
    opens ``remaining × price`` of its user's exposure; an order drawn on a standing cover draws
    ``cover_unit`` for every share still open or executed, which is every share not cancelled."""

    order: Order
    cancelled: int
    cover_id: UUID | None
    cover_unit: Decimal | None

    def opened(self) -> Decimal:
        order = self.order
        if order.side is not Side.BUY or order.remaining == 0 or order.price is None:
            return Decimal(0)  # not open, or a market order: no notional (coalesce(remaining * price, 0))
        return order.remaining * order.price

    def drawn(self) -> Decimal:
        if self.cover_id is None or self.cover_unit is None:
            return Decimal(0)
        return self.cover_unit * (self.order.quantity - self.cancelled)


class ReadAhead:
    def __init__(self) -> None:
        self._batch: ContextVar[_Batch | None] = ContextVar("acceptance_views_ahead", default=None)
        self.runs = 0  # statements that read a run's views, for the tests and the benchmark
        self.read = 0  # views read in them
        self.dropped = 0  # views read ahead and dropped unused

    @asynccontextmanager
    async def batch(self, connection: asyncpg.Connection, messages: Sequence[Message]) -> AsyncIterator[None]:
        """A broker.group_commit.BatchScope: the views of this batch's orders are read by runs,
        and the rows of the orders a run books are written together (``order_repo.holding_rows``)."""
        reset = self._batch.set(_Batch(messages, {id(m): i for i, m in enumerate(messages)}))
        try:
            with order_repo.holding_rows():
                yield
                await order_repo.write_held(connection)
                await order_repo.ride_held_transfers(connection)  # with the batch's claim
        finally:
            self._batch.reset(reset)

    def read_ahead(self, message: Message) -> bool:
        """Whether this message's view was read ahead with the run under way."""
        batch = self._batch.get()
        return batch is not None and batch.index.get(id(message)) in batch.views

    async def view(self, connection: asyncpg.Connection, request: SubmitOrder) -> AcceptanceView:
        """The order's acceptance view: read ahead with its run, or alone outside a batch."""
        batch = self._batch.get()
        place = batch.index.get(id(request)) if batch is not None else None
        if batch is not None and place in batch.views:
            return _as_booked(batch, *batch.views.pop(place))
        if batch is None or place is None:  # not one of the batch's messages (an order rebuilt from a row)
            return await view_alone(connection, view_key(request))
        self.dropped += len(batch.views)
        batch.views = await self._read_run(connection, batch.messages, place)
        batch.drawn.clear()
        batch.opened.clear()
        return batch.views.pop(place)[1]

    def booked(self, booked: Booked) -> None:
        """A buy order was booked: what it drew and opened counts in the views of its user's later
        orders of the run, read before it was (``run`` lets a run hold a user's buy orders only)."""
        batch = self._batch.get()
        if batch is None or booked.order.side is not Side.BUY:
            return
        if drawn := booked.drawn():
            assert booked.cover_id is not None
            batch.drawn[booked.cover_id] = batch.drawn.get(booked.cover_id, Decimal(0)) + drawn
        if opened := booked.opened():
            user = booked.order.user_id
            batch.opened[user] = batch.opened.get(user, Decimal(0)) + opened

    def traded(self, incoming: Order, touched: Sequence[Order]) -> None:
        """``incoming`` did more than rest whole: it traded with ``touched``, or its rest was
        cancelled. A buy order that touched only sell orders changed, of what other orders' views
        read, only the listing and the commitment of the CertIDs it bought (sell orders hold no
        exposure and draw on no cover; the instrument's last price decides nothing at
        acceptance): the views naming those CertIDs are dropped, the others stay. Anything else
        may have changed other users' exposure and covers: every view is dropped. (What the
        order writes is held with the run's other rows, order_repo.write_held: the next order,
        reading a new run, finds it written, since its handler's wrapper writes what is held.)"""
        if incoming.side is not Side.BUY or any(order.side is not Side.SELL for order in touched):
            self._drop(lambda _: True)
            return
        certs = {order.cert_id for order in touched if order.cert_id is not None}
        self._drop(lambda key: key.cert_id in certs)

    def _drop(self, stale: Callable[[ViewKey], bool]) -> None:
        """Every view read ahead whose key is ``stale`` is dropped: its order reads a new run."""
        batch = self._batch.get()
        if batch is not None:
            for place in [place for place, (key, _) in batch.views.items() if stale(key)]:
                del batch.views[place]
                self.dropped += 1

    def writing_held(self, handler: Handler) -> Handler:
        """``handler``, writing the order rows held before it runs unless its message is an order
        whose view was read ahead with the run under way: only such a handler's statements are
        known not to read another order of the run (this module's docstring). A set-based
        handler writes them before its set unless every message of the set is such an order."""

        async def writing(call: Callable[[], Awaitable[None]], messages: Sequence[Message], ctx: Context) -> None:
            if not all(self.read_ahead(message) for message in messages):
                await order_repo.write_held(ctx.connection)
            if not all(type(message) is SubmitOrder for message in messages):  # order_repo._TRANSFERS
                await order_repo.write_held_transfers(ctx.connection)
            await call()

        return set_based.around(handler, writing)

    def writing_held_all(self, handlers: Mapping[type[Message], Handler]) -> dict[type[Message], Handler]:
        return {kind: self.writing_held(handler) for kind, handler in handlers.items()}

    async def _read_run(
        self, connection: asyncpg.Connection, messages: Sequence[Message], first: int
    ) -> dict[int, tuple[ViewKey, AcceptanceView]]:
        places, keys = run(messages, first)  # its handler's wrapper wrote the rows held (writing_held)
        await BOOKS.lock_issues(connection, (key.issue_code for key in keys))
        views = await order_repo.acceptance_views(connection, keys)
        self.runs += 1
        self.read += len(views)
        return dict(zip(places, zip(keys, views, strict=True), strict=True))


async def view_alone(connection: asyncpg.Connection, key: ViewKey) -> AcceptanceView:
    """One order's view, read once its issue's row is locked (no row is held: its handler is not
    an order read ahead, so ``writing_held`` wrote them)."""
    await BOOKS.lock_issues(connection, (key.issue_code,))
    return await order_repo.acceptance_view(connection, key)


def run(messages: Sequence[Message], first: int) -> tuple[list[int], list[ViewKey]]:
    """The run of orders starting at ``first`` whose views may be read together: following
    ``SubmitOrder`` messages, no two of the same CertID or client order id, and no two of the same
    user unless both are buy orders (what one buy order books in its user's rows, the next one's
    view is told: ``Booked``). Pure."""
    places: list[int] = []
    keys: list[ViewKey] = []
    selling: dict[str, bool] = {}  # each user of the run: whether an order of theirs in it sells
    ids: set[tuple[str, str]] = set()
    certs: set[object] = set()
    for place in range(first, len(messages)):
        message = messages[place]
        if type(message) is not SubmitOrder:
            break
        key = view_key(message)
        sells = message.terms.side is Side.SELL
        if key.user_id in selling and (sells or selling[key.user_id]):
            break
        if (key.user_id, key.client_order_id) in ids or (key.cert_id is not None and key.cert_id in certs):
            break
        selling[key.user_id] = sells
        ids.add((key.user_id, key.client_order_id))
        if key.cert_id is not None:
            certs.add(key.cert_id)
        places.append(place)
        keys.append(key)
    return places, keys


def _as_booked(batch: _Batch, key: ViewKey, view: AcceptanceView) -> AcceptanceView:
    """``view``, read with its run, as it reads after the run's earlier orders of its user booked."""
    opened = batch.opened.get(key.user_id)
    drawn = batch.drawn.get(view.standing.cover_id) if view.standing is not None else None
    if not opened and not drawn:
        return view
    books = view.books
    if opened:
        books = dataclasses.replace(books, open_buy_exposure=books.open_buy_exposure + opened)
    standing = view.standing
    if standing is not None and drawn:
        standing = dataclasses.replace(standing, room=standing.room - drawn)
    return dataclasses.replace(view, books=books, standing=standing)


READ_AHEAD = ReadAhead()
