"""The order book of one issue: price-time priority, pure and synchronous.

Limit and market orders; DAY, GTC, IOC and FOK; partial fills; cancel and reduce (a
cancel-replace that keeps priority); self-trade prevention by cancelling the incoming
order's remainder ("cancel newest"). Executions happen at the resting order's price.
Nothing here does I/O: the exchange agent loads a book, submits, and saves what changed.
"""

from __future__ import annotations

from bisect import insort
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from uuid import UUID

from schemas.trading import CancelReason, OrderType, Side, TimeInForce


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

    def __post_init__(self) -> None:
        if not self.priority:
            self.priority = self.acceptance_number

    @property
    def filled(self) -> int:
        return self.quantity - self.remaining - self.cancelled


@dataclass(frozen=True, slots=True)
class Execution:
    buy: int  # acceptance numbers
    sell: int
    price: Decimal
    quantity: int
    buyer: str
    seller: str
    aggressor: Side


@dataclass(slots=True)
class Result:
    executions: list[Execution] = field(default_factory=list)
    rested: bool = False
    cancelled_quantity: int = 0
    cancel_reason: CancelReason | None = None
    # Resting orders the submission touched, so the caller can save them.
    touched: list[Order] = field(default_factory=list)


class _Side:
    """One side of the book: price levels of FIFO queues, best price first."""

    def __init__(self, side: Side) -> None:
        self.side = side
        self.levels: dict[Decimal, deque[Order]] = {}
        self.prices: list[Decimal] = []  # ascending

    def best_price(self) -> Decimal | None:
        if not self.prices:
            return None
        return self.prices[-1] if self.side is Side.BUY else self.prices[0]

    def add(self, order: Order) -> None:
        assert order.price is not None
        level = self.levels.get(order.price)
        if level is None:
            level = self.levels[order.price] = deque()
            insort(self.prices, order.price)
        if level and level[-1].priority > order.priority:  # restoring an older order
            items = sorted([*level, order], key=lambda o: o.priority)
            level.clear()
            level.extend(items)
        else:
            level.append(order)

    def remove(self, order: Order) -> None:
        assert order.price is not None
        level = self.levels[order.price]
        level.remove(order)
        if not level:
            self._drop(order.price)

    def pop_front(self, price: Decimal) -> None:
        level = self.levels[price]
        level.popleft()
        if not level:
            self._drop(price)

    def _drop(self, price: Decimal) -> None:
        del self.levels[price]
        self.prices.remove(price)

    def in_priority(self) -> Iterator[Order]:
        prices = reversed(self.prices) if self.side is Side.BUY else iter(self.prices)
        for price in prices:
            yield from self.levels[price]


def _crosses(incoming: Order, resting_price: Decimal) -> bool:
    if incoming.order_type is OrderType.MARKET:
        return True
    assert incoming.price is not None
    return resting_price <= incoming.price if incoming.side is Side.BUY else resting_price >= incoming.price


class OrderBook:
    def __init__(self, issue_code: str) -> None:
        self.issue_code = issue_code
        self._sides = {Side.BUY: _Side(Side.BUY), Side.SELL: _Side(Side.SELL)}
        self.orders: dict[int, Order] = {}

    def best_bid(self) -> Decimal | None:
        return self._sides[Side.BUY].best_price()

    def best_ask(self) -> Decimal | None:
        return self._sides[Side.SELL].best_price()

    def resting(self, side: Side) -> list[Order]:
        return list(self._sides[side].in_priority())

    def depth(self, side: Side) -> list[tuple[Decimal, int]]:
        book = self._sides[side]
        prices = reversed(book.prices) if side is Side.BUY else book.prices
        return [(p, sum(o.remaining for o in book.levels[p])) for p in prices]

    def load(self, order: Order) -> None:
        """Put a resting order back as it was (recovery); no matching."""
        self._rest(order)

    def submit(self, order: Order) -> Result:
        """Match an incoming order, then rest, cancel or keep its remainder by its time in force."""
        result = Result()
        if order.time_in_force is TimeInForce.FOK and self._fillable(order) < order.remaining:
            return self._cancel_remainder(order, result, CancelReason.FOK_NOT_FILLABLE)
        self._match(order, result)
        if order.remaining == 0 or result.cancel_reason is not None:
            return result
        if order.order_type is OrderType.MARKET:
            return self._cancel_remainder(order, result, CancelReason.MARKET_REMAINDER)
        if order.time_in_force in (TimeInForce.IOC, TimeInForce.FOK):
            return self._cancel_remainder(order, result, CancelReason.IOC_REMAINDER)
        self._rest(order)
        result.rested = True
        return result

    def cancel(self, acceptance_number: int) -> Order | None:
        order = self.orders.pop(acceptance_number, None)
        if order is not None:
            self._sides[order.side].remove(order)
        return order

    def reduce(self, acceptance_number: int, quantity: int) -> Order:
        """Lower a resting order's open quantity in place, keeping its priority."""
        order = self.orders[acceptance_number]
        if not 0 < quantity <= order.remaining:
            raise ValueError(f"cannot reduce {order.remaining} open to {quantity}")
        order.quantity -= order.remaining - quantity
        order.remaining = quantity
        return order

    def _rest(self, order: Order) -> None:
        self.orders[order.acceptance_number] = order
        self._sides[order.side].add(order)

    def _match(self, incoming: Order, result: Result) -> None:
        # The hottest loop of the exchange: the best price and the crossing test are inlined.
        buying = incoming.side is Side.BUY
        opposite = self._sides[Side.SELL if buying else Side.BUY]
        levels, prices = opposite.levels, opposite.prices
        limit = None if incoming.order_type is OrderType.MARKET else incoming.price
        executions, touched = result.executions, result.touched
        while incoming.remaining and prices:
            price = prices[0] if buying else prices[-1]
            if limit is not None and (price > limit if buying else price < limit):
                return
            resting = levels[price][0]
            if resting.user_id == incoming.user_id:
                self._cancel_remainder(incoming, result, CancelReason.SELF_TRADE_PREVENTED)
                return
            quantity = min(incoming.remaining, resting.remaining)
            incoming.remaining -= quantity
            resting.remaining -= quantity
            executions.append(_execution(incoming, resting, price, quantity))
            touched.append(resting)
            if resting.remaining == 0:
                opposite.pop_front(price)
                del self.orders[resting.acceptance_number]

    def _fillable(self, incoming: Order) -> int:
        """What would fill now, stopping where self-trade prevention would."""
        opposite = self._sides[Side.SELL if incoming.side is Side.BUY else Side.BUY]
        total = 0
        for resting in opposite.in_priority():
            assert resting.price is not None
            if not _crosses(incoming, resting.price) or resting.user_id == incoming.user_id:
                break
            total += resting.remaining
            if total >= incoming.remaining:
                break
        return total

    @staticmethod
    def _cancel_remainder(order: Order, result: Result, reason: CancelReason) -> Result:
        result.cancelled_quantity = order.remaining
        result.cancel_reason = reason
        order.cancelled += order.remaining
        order.remaining = 0
        return result


def _execution(incoming: Order, resting: Order, price: Decimal, quantity: int) -> Execution:
    buy, sell = (incoming, resting) if incoming.side is Side.BUY else (resting, incoming)
    return Execution(
        buy.acceptance_number,
        sell.acceptance_number,
        price,
        quantity,
        buy.user_id,
        sell.user_id,
        incoming.side,
    )
