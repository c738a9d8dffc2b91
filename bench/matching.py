"""Matching-engine throughput: a reproducible order stream replayed through `OrderBook`.

`python -m bench.matching` writes a seeded stream of limit and market buys and sells (DAY, GTC,
IOC, FOK) and cancels from a few hundred users, on valid ticks inside the daily price limit around
a wandering mid price, as JSON Lines (docs/order-stream.md); then replays it through the engine,
best of three runs, and prints orders per CPU second with a checksum of the executions, so another
engine replaying the same file can show it matched identically. `--replay PATH` replays a file
without generating one. A benchmark, not a test: nothing here asserts the engine is right.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from agents.exchange.book import Execution, Order, OrderBook
from schemas.market_rules import on_tick, price_band, tick_size
from schemas.trading import OrderType, Side, TimeInForce

REFERENCE = Decimal(3_000)  # yesterday's close: ticks are 1 yen below it and 5 yen from it up
BAND = price_band(REFERENCE)
USERS = 300
LOT = 100
CANCEL_SHARE = 0.15
MARKET_SHARE = 0.08
LIMIT_TIFS = (("day", 60), ("gtc", 15), ("ioc", 15), ("fok", 10))
MARKET_TIFS = (("day", 30), ("ioc", 50), ("fok", 20))
RUNS = 3

Line = dict[str, object]


# Generating a stream


def generate(orders: int, seed: int) -> Iterator[Line]:
    """`orders` lines; a cancel names an earlier order that may by then have traded away."""
    rng = random.Random(seed)
    mid, oan = REFERENCE, 0
    cancellable: list[int] = []
    for _ in range(orders):
        if cancellable and rng.random() < CANCEL_SHARE:
            yield {"op": "cancel", "oan": _take_random(rng, cancellable)}
            continue
        oan += 1
        mid = _wander(rng, mid)
        line = _submit(rng, oan, mid)
        if line["type"] == "limit" and line["tif"] in ("day", "gtc"):
            cancellable.append(oan)
        yield line


def _take_random(rng: random.Random, items: list[int]) -> int:
    index = rng.randrange(len(items))
    items[index], items[-1] = items[-1], items[index]
    return items.pop()


def _wander(rng: random.Random, mid: Decimal) -> Decimal:
    if rng.random() < 0.05:
        mid += tick_size(mid) * rng.choice((-1, 1))
    return min(max(mid, BAND.lower + 50), BAND.upper - 50)


def _submit(rng: random.Random, oan: int, mid: Decimal) -> Line:
    side = rng.choice(("buy", "sell"))
    market = rng.random() < MARKET_SHARE
    tifs = MARKET_TIFS if market else LIMIT_TIFS
    tif = rng.choices([t for t, _ in tifs], weights=[w for _, w in tifs])[0]
    return {
        "op": "submit",
        "oan": oan,
        "user": f"u{rng.randrange(USERS):03d}",
        "side": side,
        "type": "market" if market else "limit",
        "price": None if market else str(_limit_price(rng, side, mid)),
        "qty": LOT * rng.randint(1, 10),
        "tif": tif,
    }


def _limit_price(rng: random.Random, side: str, mid: Decimal) -> Decimal:
    """Mostly a few ticks away from the mid on the passive side; now and then crossing it."""
    ticks = int(rng.expovariate(1 / 6)) - 2
    away = tick_size(mid) * ticks
    price = mid - away if side == "buy" else mid + away
    price = min(max(price, BAND.lower), BAND.upper)
    price -= price % tick_size(price)
    assert on_tick(price) and BAND.contains(price), price
    return price


def write_stream(lines: Iterable[Line], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        for line in lines:
            out.write(json.dumps(line, separators=(",", ":")) + "\n")


# Replaying a stream


@dataclass(frozen=True, slots=True)
class Submission:
    oan: int
    client_order_id: str
    user: str
    side: Side
    order_type: OrderType
    price: Decimal | None
    quantity: int
    tif: TimeInForce

    def order(self) -> Order:
        return Order(
            self.oan,
            self.client_order_id,
            self.user,
            self.side,
            self.order_type,
            self.price,
            self.quantity,
            self.quantity,
            self.tif,
        )


Operation = Submission | int  # an int is the OAN to cancel


def read_stream(path: Path) -> list[Operation]:
    """Parsed before the clock starts: the benchmark measures matching, not JSON."""
    with path.open(encoding="utf-8") as lines:
        return [_operation(json.loads(line)) for line in lines if line.strip()]


def _operation(line: dict[str, object]) -> Operation:
    oan = int(str(line["oan"]))
    if line["op"] == "cancel":
        return oan
    price = line["price"]
    return Submission(
        oan,
        str(oan),
        str(line["user"]),
        Side(str(line["side"])),
        OrderType(str(line["type"])),
        None if price is None else Decimal(str(price)),
        int(str(line["qty"])),
        TimeInForce(str(line["tif"])),
    )


# CPU time of this process, not wall time: on a shared machine the wall clock mostly measures
# how often other processes ran. Every engine compared (bench/peers.py) is timed with it.
CLOCK = time.process_time


@dataclass(frozen=True)
class Run:
    seconds: float
    resting: tuple[tuple[int, int], ...]  # (OAN, open quantity) of each order left on the book


def replay(operations: Sequence[Operation]) -> Run:
    """One timed pass. Like the peers' replays, it keeps nothing the engine returns: holding on to
    every execution is the harness's work, not the engine's (the checksum comes from `executions`)."""
    book = OrderBook("BENCH")
    # The engine's input is an Order: built before the clock starts, as each peer's own inputs are.
    inputs = [op if isinstance(op, int) else op.order() for op in operations]
    start = CLOCK()
    for operation in inputs:
        if isinstance(operation, int):
            book.cancel(operation)
        else:
            book.submit(operation)
    seconds = CLOCK() - start
    return Run(seconds, tuple((oan, order.remaining) for oan, order in sorted(book.orders.items())))


def executions(operations: Sequence[Operation]) -> list[Execution]:
    """Every execution of the stream, in order, untimed: what the checksum is taken of."""
    book = OrderBook("BENCH")
    done: list[Execution] = []
    for op in operations:
        if isinstance(op, int):
            book.cancel(op)
        else:
            done.extend(book.submit(op.order()).executions)
    return done


def checksum(executions: Iterable[Execution]) -> str:
    """SHA-256 of one `buy,sell,price,quantity,buyer,seller,aggressor` line per execution, in order."""
    digest = hashlib.sha256()
    for e in executions:
        digest.update(f"{e.buy},{e.sell},{e.price},{e.quantity},{e.buyer},{e.seller},{e.aggressor}\n".encode())
    return digest.hexdigest()


def fastest(runs: Sequence[Run]) -> Run:
    """The fastest run, once every run has left the same book; exits if two did not."""
    if len({run.resting for run in runs}) != 1:
        raise SystemExit(f"the engine is not deterministic: {len(runs)} runs left different books")
    return min(runs, key=lambda run: run.seconds)


# Command line


def report(path: Path, operations: Sequence[Operation], run: Run, done: Sequence[Execution], runs: int) -> None:
    cancels = sum(isinstance(op, int) for op in operations)
    submits = len(operations) - cancels
    print(f"stream      {path}: {len(operations):,} orders ({submits:,} submits, {cancels:,} cancels)")
    print(f"throughput  {len(operations) / run.seconds:,.0f} orders/s (best of {runs}: {run.seconds:.3f} s CPU)")
    print(f"executions  {len(done):,}")
    print(f"executed    {sum(e.quantity for e in done):,} shares")
    print(f"resting     {len(run.resting):,} orders left on the book")
    print(f"checksum    sha256:{checksum(done)}")


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.matching", description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--out", type=Path, default=Path("var/bench/orders.jsonl"), help="where to write the stream")
    source.add_argument("--replay", type=Path, help="replay this stream instead of generating one")
    parser.add_argument("--orders", type=int, default=200_000, help="lines to generate, submits and cancels")
    parser.add_argument("--seed", type=int, default=1, help="seed of the generator")
    parser.add_argument("--runs", type=int, default=RUNS, help="replays; the fastest is reported")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse(argv)
    path: Path = args.replay or args.out
    if args.replay is None:
        write_stream(generate(args.orders, args.seed), path)
    operations = read_stream(path)
    run = fastest([replay(operations) for _ in range(args.runs)])
    report(path, operations, run, executions(operations), args.runs)


if __name__ == "__main__":
    main()
