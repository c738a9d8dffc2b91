"""Other matching engines replaying the same generated stream, for `make bench` to compare with.

Installed by the `bench` extra (`pip install -e '.[bench]'`). Each peer gets the stream of
`bench.matching` as its own API takes it — converted before the clock starts, as Kabuto's
engine gets its `Order` objects — and `race` times every engine over the whole stream in
turns, so that a change of load on a shared machine falls on all of them alike.

Inside each clock, one loop over the prepared events, each engine's answer dropped as it comes
(docs/performance.md, "Matching in process"):

- Kabuto: `OrderBook.submit(order)` or `OrderBook.cancel(oan)`.
- lightmatchingengine: `add_order(instrument, price, quantity, side)`, or for a cancel a look-up
  of the order on its book and `cancel_order` if it is still open — its own cancel asserts on an
  order that has filled. It has no time in force: every order is sent as it comes (IOC and FOK
  remainders rest there), so its book differs from Kabuto's where a time in force would have
  cancelled a remainder; the comparison is of speed on the same events, not of results.
- liquibook (C++ behind SWIG): `add(order, conditions)` with IOC or FOK as conditions and
  market orders as IOC at price 0, or `cancel(order)` (a no-op for an order no longer on its
  book). Its `SimpleOrderBook` wrapper exposes nothing, but the generic `OrderBook` it wraps has
  `add` and `cancel`. It has no self-trade prevention.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal

from bench.matching import CLOCK, Operation
from schemas.trading import OrderType, Side, TimeInForce

Replay = Callable[[], float]  # one pass over the whole stream, prepared beforehand: CPU seconds on the clock
INSTRUMENT = "B"


def race(replays: Mapping[str, Replay], runs: int) -> dict[str, float]:
    """Each engine's best time over ``runs`` rounds; every round runs each engine once, starting
    one later each round, so neither the load of the moment nor the position favours one."""
    names = list(replays)
    best = dict.fromkeys(names, float("inf"))
    for round_ in range(runs):
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            best[name] = min(best[name], replays[name]())
    return best


def lightmatchingengine(operations: Sequence[Operation]) -> Replay | None:
    """A timed replay through lightmatchingengine; None if it is not installed."""
    try:
        from lightmatchingengine import lightmatchingengine as lme  # type: ignore[import-untyped]
    except ImportError:
        return None
    # It numbers orders 1, 2, … as they are added, so a cancel's own id is known beforehand.
    ids: dict[int, int] = {}
    inputs: list[int | tuple[float, float, int]] = []
    for op in operations:
        if isinstance(op, int):
            inputs.append(ids.get(op, 0))  # 0: no such order, like a cancel of an unknown OAN
        else:
            ids[op.oan] = len(ids) + 1  # every submit is added, each OAN once
            side = lme.Side.BUY if op.side is Side.BUY else lme.Side.SELL
            inputs.append((float(op.price or 0), float(op.quantity), side))

    def replay() -> float:
        engine, book = lme.LightMatchingEngine(), lme.OrderBook()
        engine.order_books[INSTRUMENT] = book
        start = CLOCK()
        for op in inputs:
            if isinstance(op, int):
                order = book.order_id_map.get(op)
                if order is not None and order.leaves_qty > 0:
                    engine.cancel_order(op, INSTRUMENT)
            else:
                engine.add_order(INSTRUMENT, op[0], op[1], op[2])
        return CLOCK() - start

    return replay


def liquibook(operations: Sequence[Operation]) -> Replay | None:
    """A timed replay through liquibook's C++ book; None if it is not installed."""
    try:
        import liquibook as lb  # type: ignore[import-untyped]
    except ImportError:
        return None
    conditions = {
        TimeInForce.DAY: lb.oc_no_conditions,
        TimeInForce.GTC: lb.oc_no_conditions,
        TimeInForce.IOC: lb.oc_immediate_or_cancel,
        TimeInForce.FOK: lb.oc_fill_or_kill,
    }

    def prepared() -> list[object]:
        """Fresh orders for each replay (a liquibook order is a C++ object a book holds on to):
        a tuple to add, a bare order to cancel."""
        orders: dict[int, object] = {}
        inputs: list[object] = []
        for op in operations:
            if isinstance(op, int):
                if op in orders:  # always, in a generated stream: a cancel names an earlier submit
                    inputs.append(orders[op])
                continue
            market = op.order_type is OrderType.MARKET
            # Kabuto cancels what a market order leaves: liquibook would rest it, unless IOC.
            condition = lb.oc_immediate_or_cancel if market and op.tif is not TimeInForce.FOK else conditions[op.tif]
            price = 0 if market else int((op.price or Decimal(0)) * 100)  # integer hundredths of a yen
            order = orders[op.oan] = lb.SimpleOrder(op.side is Side.BUY, price, op.quantity, 0, condition)
            inputs.append((order, condition))
        return inputs

    def replay() -> float:
        inputs, book = prepared(), lb.liquibook_book_OrderBook()
        start = CLOCK()
        for op in inputs:
            if type(op) is tuple:
                book.add(op[0], op[1])
            else:
                book.cancel(op)
        return CLOCK() - start

    return replay


PEERS: dict[str, Callable[[Sequence[Operation]], Replay | None]] = {
    "lightmatchingengine": lightmatchingengine,
    "liquibook": liquibook,
}
