"""Other matching engines replaying the same generated stream, for `make bench` to compare with.

Installed by the `bench` extra (`pip install -e '.[bench]'`). Each peer gets the stream of
`bench.matching` as its own API takes it — converted before the clock starts, as Kabuto's
engine gets its `Order` objects — and is timed best of `runs` over the whole stream.

lightmatchingengine has limit and market orders and cancels but no time in force: every
order is sent as it comes (IOC and FOK remainders rest there), and a cancel of an order no
longer on its book is skipped (its own cancel asserts on a filled order). Its books differ
from Kabuto's where time in force would have cancelled a remainder, so the comparison is of
speed on the same events, not of results. liquibook's Python wrapper installs, but its SWIG
layer exposes no `add` on `SimpleOrderBook` in the version on the registry, so it is reported
as not comparable rather than guessed at.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from bench.matching import Operation


def lightmatchingengine(operations: Sequence[Operation], runs: int = 3) -> float | None:
    """Events per second of lightmatchingengine on ``operations``; None if it is not installed."""
    try:
        from lightmatchingengine.lightmatchingengine import LightMatchingEngine, Side  # type: ignore[import-untyped]
    except ImportError:
        return None
    inputs = [
        op
        if isinstance(op, int)
        else (op.oan, float(op.price or 0), float(op.quantity), Side.BUY if op.side.value == "buy" else Side.SELL)
        for op in operations
    ]
    best = float("inf")
    for _ in range(runs):
        engine, ids = LightMatchingEngine(), dict[int, int]()
        start = time.perf_counter()
        for op in inputs:
            if isinstance(op, int):
                order_id = ids.pop(op, None)
                book = engine.order_books.get("B")
                order = book.order_id_map.get(order_id) if book is not None and order_id is not None else None
                if order is not None and order.leaves_qty > 0:
                    engine.cancel_order(order_id, "B")
            else:
                order, _ = engine.add_order("B", op[1], op[2], op[3])
                ids[op[0]] = order.order_id
        best = min(best, time.perf_counter() - start)
    return len(inputs) / best


def liquibook_note() -> str:
    try:
        import liquibook  # type: ignore[import-untyped]
    except ImportError:
        return "liquibook: not installed"
    if not hasattr(liquibook.SimpleOrderBook, "add"):
        return "liquibook: installed, but its wrapper has no SimpleOrderBook.add — not comparable"
    return "liquibook: installed, comparison not implemented for this wrapper version"
