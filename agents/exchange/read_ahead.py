"""Acceptance views read ahead for a batch's orders: one statement for a run of orders.

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
* no two orders of a run share a user or a CertID. What an order's booking changes is its
  own user's rows (its client order id, its open buy exposure, its standing cover's room, a
  pending order) and its own CertID's (committed to the order), and nothing another order's
  view reads. An order of the same user or CertID starts the next run, read when it asks;
* an order that did more than rest whole or wait for its cover — it traded, touched resting
  orders, or was cancelled (an IOC rest, a market order) — may have changed other users'
  exposure and standing covers, a CertID's listing and the instrument's last price: every view
  read ahead is then dropped (``changed_others``), and the next order reads a new run.

The acceptance numbers a run draws are handed out in the run's order, so orders keep their
arrival priority; a view dropped leaves its number unused, a gap, as a refused order does.
Outside a batch run all at once (a delivery alone, a batch run again a savepoint each) no
view is read ahead: each order reads its own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

import asyncpg

from agents.exchange import acceptance, order_repo
from agents.exchange.order_repo import AcceptanceView, ViewKey
from schemas.catalogue import Message
from schemas.trading import Side, SubmitOrder


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
    views: dict[int, AcceptanceView] = field(default_factory=dict)  # by place, read ahead, not yet taken


class ReadAhead:
    def __init__(self) -> None:
        self._batch: ContextVar[_Batch | None] = ContextVar("acceptance_views_ahead", default=None)
        self.runs = 0  # statements that read a run's views, for the tests and the benchmark
        self.read = 0  # views read in them
        self.dropped = 0  # views read ahead and dropped unused

    @asynccontextmanager
    async def batch(self, _: asyncpg.Connection, messages: Sequence[Message]) -> AsyncIterator[None]:
        """A broker.group_commit.BatchScope: the views of this batch's orders are read by runs."""
        reset = self._batch.set(_Batch(messages, {id(m): i for i, m in enumerate(messages)}))
        try:
            yield
        finally:
            self._batch.reset(reset)

    async def view(self, connection: asyncpg.Connection, request: SubmitOrder) -> AcceptanceView:
        """The order's acceptance view: read ahead with its run, or alone outside a batch."""
        batch = self._batch.get()
        place = batch.index.get(id(request)) if batch is not None else None
        if batch is None or place is None:  # not one of the batch's messages (an order rebuilt from a row)
            return await order_repo.acceptance_view(connection, view_key(request))
        if place not in batch.views:
            self.dropped += len(batch.views)
            batch.views = await self._read_run(connection, batch.messages, place)
        return batch.views.pop(place)

    def changed_others(self) -> None:
        """The handler running changed what other orders' views read: drop every view read ahead."""
        batch = self._batch.get()
        if batch is not None:
            self.dropped += len(batch.views)
            batch.views.clear()

    async def _read_run(
        self, connection: asyncpg.Connection, messages: Sequence[Message], first: int
    ) -> dict[int, AcceptanceView]:
        places, keys = run(messages, first)
        views = await order_repo.acceptance_views(connection, keys)
        self.runs += 1
        self.read += len(views)
        return dict(zip(places, views, strict=True))


def run(messages: Sequence[Message], first: int) -> tuple[list[int], list[ViewKey]]:
    """The run of orders starting at ``first`` whose views may be read together: following
    ``SubmitOrder`` messages, no two of the same user or CertID. Pure."""
    places: list[int] = []
    keys: list[ViewKey] = []
    users: set[str] = set()
    certs: set[object] = set()
    for place in range(first, len(messages)):
        message = messages[place]
        if type(message) is not SubmitOrder:
            break
        key = view_key(message)
        if key.user_id in users or (key.cert_id is not None and key.cert_id in certs):
            break
        users.add(key.user_id)
        if key.cert_id is not None:
            certs.add(key.cert_id)
        places.append(place)
        keys.append(key)
    return places, keys


READ_AHEAD = ReadAhead()
