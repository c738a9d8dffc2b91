"""The order book of one issue: price-time priority, pure and synchronous.

Limit and market orders; DAY, GTC, IOC and FOK; partial fills; cancel and reduce (a
cancel-replace that keeps priority); self-trade prevention by cancelling the incoming
order's remainder ("cancel newest"). Executions happen at the resting order's price.
Nothing here does I/O: the exchange agent loads a book, submits, and saves what changed.

`submit` is the hottest code of the exchange (docs/performance.md, "Matching in process"), so
it is written for CPython: enumeration members are module constants, a level is consumed
in one inner loop, and an execution is a named tuple. Prices stay `Decimal` throughout:
converting each order's price to integer ticks costs more than the few comparisons it
would make cheaper (measured there).
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import NamedTuple
from uuid import UUID

from schemas.trading import CancelReason, OrderType, Side, TimeInForce

_BUY = Side.BUY
_MARKET = OrderType.MARKET
_IOC, _FOK = TimeInForce.IOC, TimeInForce.FOK
# `Execution(...)` without the named tuple's own `__new__`, a Python function whose call was an
# eighth of the replay's samples; the tuple is built in field order just the same.
_new_tuple = tuple.__new__


@dataclass(slots=True, eq=False)  # an order is itself, not its values: identity equality
class Order:
    acceptance_number: int
    client_order_id: str
    user_id: str
    side: Side
    order_type: OrderType
    price: Decimal | None
    quantity: int
    remaining: int
    time_in_force: TimeInForce = TimeInForce.DAY
    # Time priority: lower first. The acceptance number unless a replace kept an older one.
    priority: int = 0
    cert_id: UUID | None = None
    # What a time-in-force or self-trade prevention cancelled, so it is not counted as filled.
    cancelled: int = 0
    # A market order trades no further than this: the day's price limit on its side (seed 002
    # §9.6), set when it is submitted. A resting order outside today's limits (a GTC order from
    # before the close) must not trade with it, and its cover held no more than the limit.
    bound: Decimal | None = None

    def __post_init__(self) -> None:
        if not self.priority:
            self.priority = self.acceptance_number

    @property
    def filled(self) -> int:
        return self.quantity - self.remaining - self.cancelled


class Execution(NamedTuple):
    """One fill: immutable. A named tuple because one is built per fill inside the matching
    loop, and a frozen dataclass's ``__init__`` (one ``object.__setattr__`` per field) cost
    about six times as much there."""

    buy: int  # acceptance numbers
    sell: int
    price: Decimal
    quantity: int
    buyer: str
    seller: str
    aggressor: Side


@dataclass(slots=True)
class Result:
    # No defaults: default factories made the one `Result` per submit cost about 40 % more.
    executions: list[Execution]
    rested: bool
    cancelled_quantity: int
    cancel_reason: CancelReason | None
    # Resting orders the submission touched, so the caller can save them.
    touched: list[Order]


class _Side:
    """One side of the book: a FIFO queue per price, and the prices ascending.

    The best price is the last one for bids and the first for asks (``best``), so the level
    a match empties is dropped by index, without searching the list.
    """

    __slots__ = ("best", "levels", "prices")

    def __init__(self, side: Side) -> None:
        self.best = -1 if side is _BUY else 0
        self.levels: dict[Decimal, deque[Order]] = {}
        self.prices: list[Decimal] = []

    def best_price(self) -> Decimal | None:
        return self.prices[self.best] if self.prices else None

    def best_first(self) -> Iterator[Decimal]:
        return reversed(self.prices) if self.best else iter(self.prices)

    def add(self, order: Order) -> None:
        price = order.price
        assert price is not None
        level = self.levels.get(price)
        if level is None:
            self.levels[price] = deque((order,))
            insort(self.prices, price)
        elif level[-1].priority > order.priority:  # restoring an older order (recovery, reversal)
            items = sorted([*level, order], key=lambda o: o.priority)
            level.clear()
            level.extend(items)
        else:
            level.append(order)

    def remove(self, order: Order) -> None:
        price = order.price
        assert price is not None
        level = self.levels[price]
        level.remove(order)  # a search of the level: docs/performance.md on why not lazy deletion
        if not level:
            del self.levels[price]
            del self.prices[bisect_left(self.prices, price)]


class OrderBook:
    def __init__(self, issue_code: str) -> None:
        self.issue_code = issue_code
        self._bids = _Side(Side.BUY)
        self._asks = _Side(Side.SELL)
        self.orders: dict[int, Order] = {}

    def best_bid(self) -> Decimal | None:
        return self._bids.best_price()

    def best_ask(self) -> Decimal | None:
        return self._asks.best_price()

    def resting(self, side: Side) -> list[Order]:
        book = self._side(side)
        return [order for price in book.best_first() for order in book.levels[price]]

    def depth(self, side: Side) -> list[tuple[Decimal, int]]:
        book = self._side(side)
        return [(p, sum(o.remaining for o in book.levels[p])) for p in book.best_first()]

    def load(self, order: Order) -> None:
        """Put a resting order back as it was (recovery); no matching."""
        self._rest(order)

    def submit(self, order: Order) -> Result:
        """Match an incoming order, then rest, cancel or keep its remainder by its time in force."""
        result = Result([], False, 0, None, [])
        tif = order.time_in_force
        if tif is _FOK and self._fillable(order) < order.remaining:
            return _cancel_remainder(order, result, CancelReason.FOK_NOT_FILLABLE)
        if self._match(order, result):
            return result
        if order.remaining == 0:
            return result
        if order.order_type is _MARKET:
            return _cancel_remainder(order, result, CancelReason.MARKET_REMAINDER)
        if tif is _IOC or tif is _FOK:
            return _cancel_remainder(order, result, CancelReason.IOC_REMAINDER)
        self._rest(order)
        result.rested = True
        return result

    def cancel(self, acceptance_number: int) -> Order | None:
        order = self.orders.pop(acceptance_number, None)
        if order is not None:
            self._side(order.side).remove(order)
        return order

    def reduce(self, acceptance_number: int, quantity: int) -> Order:
        """Lower a resting order's open quantity in place, keeping its priority."""
        order = self.orders[acceptance_number]
        if not 0 < quantity <= order.remaining:
            raise ValueError(f"cannot reduce {order.remaining} open to {quantity}")
        order.quantity -= order.remaining - quantity
        order.remaining = quantity
        return order

    def _side(self, side: Side) -> _Side:
        return self._bids if side is _BUY else self._asks

    def _rest(self, order: Order) -> None:
        self.orders[order.acceptance_number] = order
        (self._bids if order.side is _BUY else self._asks).add(order)

    def _match(self, incoming: Order, result: Result) -> bool:
        """Trade against the opposite side, best price first; True if self-trade prevention stopped it."""
        buying = incoming.side is _BUY
        opposite = self._asks if buying else self._bids
        prices, best = opposite.prices, opposite.best
        limit = incoming.bound if incoming.order_type is _MARKET else incoming.price
        # Most limit orders cross nothing and rest: they leave before the loop is set up.
        if not prices or (limit is not None and (prices[best] > limit if buying else prices[best] < limit)):
            return False
        levels, orders, executions, touched = opposite.levels, self.orders, result.executions, result.touched
        oan, user, side = incoming.acceptance_number, incoming.user_id, incoming.side
        remaining = incoming.remaining
        while remaining and prices:
            price = prices[best]
            if limit is not None and (price > limit if buying else price < limit):
                break
            level = levels[price]
            while remaining and level:
                resting = level[0]
                if resting.user_id == user:
                    incoming.remaining = remaining
                    _cancel_remainder(incoming, result, CancelReason.SELF_TRADE_PREVENTED)
                    return True
                quantity = resting.remaining
                if quantity > remaining:
                    quantity = remaining
                remaining -= quantity
                resting.remaining -= quantity
                if buying:
                    fill = (oan, resting.acceptance_number, price, quantity, user, resting.user_id, side)
                else:
                    fill = (resting.acceptance_number, oan, price, quantity, resting.user_id, user, side)
                executions.append(_new_tuple(Execution, fill))
                touched.append(resting)
                if not resting.remaining:
                    level.popleft()
                    del orders[resting.acceptance_number]
            if not level:
                del levels[price]
                del prices[best]
        incoming.remaining = remaining
        return False

    def _fillable(self, incoming: Order) -> int:
        """What would fill now, stopping where self-trade prevention would."""
        buying = incoming.side is _BUY
        opposite = self._asks if buying else self._bids
        limit = incoming.bound if incoming.order_type is _MARKET else incoming.price
        total, wanted = 0, incoming.remaining
        for price in opposite.best_first():
            if limit is not None and (price > limit if buying else price < limit):
                break
            for resting in opposite.levels[price]:
                if resting.user_id == incoming.user_id:
                    return total
                total += resting.remaining
                if total >= wanted:
                    return total
        return total


def _cancel_remainder(order: Order, result: Result, reason: CancelReason) -> Result:
    result.cancelled_quantity = order.remaining
    result.cancel_reason = reason
    order.cancelled += order.remaining
    order.remaining = 0
    return result
