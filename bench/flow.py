"""Trades end to end through the seven agents, each its own OS process: a burst for the rate, and
an open-loop load (buys sent at a fixed rate) for the latency. A benchmark, not a test.

The seller is issued one certificate per trade and rests one sell order per certificate; the
buyer sets its cash aside as a standing cover; then crossing buy orders are placed through the
investor agent (a signed order.submit each, drawn on the cover at the exchange; in the burst
placed in lists, at the open loop's rate one by one) and every
trade goes accepted → matched → name transfer at the issuer → settlement, every hop signed,
verified and committed. Latency is read from the agents' own records: the buy order's
acceptance time at the exchange to the settlement instruction's time at settlement. The open
loop starts once the burst's aftermath is over (``Stage.quiet``: the trades' completions and the
buyers' new certificates), so that it is measured on its own.

    python -m bench.flow --trades 1000 --rate 100 --seconds 5
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from agents.exchange import order_repo
from agents.investor.app import IssuanceOrder, request_certificates
from agents.investor.domain import Dividend
from agents.investor.standing import open_standing_cover
from agents.investor.trading import OrderTicket, place_order, place_orders
from agents.issuer import repo as issuer_repo
from agents.issuer.domain import Offering
from agents.settlement import app as settlement
from bench.stage import Stage, stage
from broker import event_loop, logs, settings
from schemas.certificates import ShareClass
from schemas.issuance import DividendMethod
from schemas.trading import Side

SELLER, BUYER, ISSUE, LOT, PRICE = "bench-seller", "bench-buyer", "BENCH", 100, Decimal(1000)
# Orders placed at once go in lists of this many, one transaction each (trading.place_orders).
LIST = 50
# Issue 11: a trade is settled when both legs are (docs/dvp.md).
SETTLED = "SELECT count(*) FROM dvp_instructions WHERE settlement = 'settled'"


@dataclass(frozen=True)
class Latency:
    p50_ms: float
    p99_ms: float
    max_ms: float
    count: int


@dataclass(frozen=True)
class FlowResult:
    trades: int
    seconds: float
    latency: Latency | None  # of the open-loop run

    @property
    def rate(self) -> float:
        return self.trades / self.seconds


async def until(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    """Wait for ``check`` to hold: the agents are other processes, so their tables are read."""
    try:
        async with asyncio.timeout(timeout):
            while not await check():  # noqa: ASYNC110 — another process's tables have no event to wait on
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise SystemExit(f"bench: timed out after {timeout:g} s waiting for {what}") from None


async def count(st: Stage, agent: str, sql: str, *args: object) -> int:
    return int(await st.fetchval(agent, sql, *args))


async def prepare(st: Stage, trades: int, timeout: float) -> None:
    offering = Offering(
        ISSUE, "Bench K.K.", date(2000, 1, 1), ShareClass.COMMON, PRICE, trades * LOT, trades * LOT, LOT
    )
    await st.command("issuer", "issuer", lambda ctx: issuer_repo.open_offering(ctx.connection, offering))
    await st.command(
        "exchange", "exchange", lambda ctx: order_repo.list_instrument(ctx.connection, ISSUE, "common", PRICE)
    )
    await st.command("settlement", "settlement", settlement.open_account("seller", SELLER))
    await st.command("settlement", "settlement", settlement.open_account("buyer", BUYER))
    await st.command("settlement", "settlement", settlement.deposit("buyer", PRICE * LOT * trades, "bench"))
    # the buyer's orders draw on a standing cover, booked in the hop that receives them (docs/dvp.md)
    await st.command("investor", BUYER, open_standing_cover("buyer", PRICE * LOT * trades))
    covered = "SELECT count(*) FROM standing_covers WHERE user_id = $1 AND status = 'active'"
    await until(lambda: _at_least(st, "investor", 1, covered, BUYER), timeout, "the buyer's standing cover")
    delivery = Dividend(method=DividendMethod.SETTLEMENT_ACCOUNT, account="seller")
    order = IssuanceOrder(ISSUE, ShareClass.COMMON, LOT, "Seller", "Tokyo", delivery)
    for _ in range(trades):
        await st.command("investor", SELLER, request_certificates(order))
    wallet = "SELECT count(*) FROM wallet WHERE holder_user_id = $1"
    await until(lambda: _at_least(st, "investor", trades, wallet, SELLER), timeout, "certificates issued")
    listed = "SELECT count(*) FROM certid_list WHERE user_id = $1 AND status = 'valid'"
    await until(lambda: _at_least(st, "exchange", trades, listed, SELLER), timeout, "certificates listed")
    certs = await st.fetch("investor", "SELECT cert_id FROM wallet WHERE holder_user_id = $1", SELLER)
    tickets = [
        OrderTicket(f"s{i}", ISSUE, Side.SELL, LOT, "seller", PRICE, cert_id=row["cert_id"])
        for i, row in enumerate(certs)
    ]
    for start in range(0, len(tickets), LIST):
        await st.command("investor", SELLER, place_orders(tickets[start : start + LIST]))
    sells = "SELECT count(*) FROM orders WHERE side = 'sell' AND status = 'open'"
    await until(lambda: _at_least(st, "exchange", trades, sells), timeout, "sell orders resting")


async def _at_least(st: Stage, agent: str, want: int, sql: str, *args: object) -> bool:
    return await count(st, agent, sql, *args) >= want


def _buy(i: int) -> OrderTicket:
    return OrderTicket(f"b{i}", ISSUE, Side.BUY, LOT, "buyer", PRICE, holder_name="Buyer", holder_address="Tokyo")


async def burst(st: Stage, trades: int, timeout: float) -> float:
    """Seconds from the first buy placed to the last trade settled, all buys placed at once, in
    lists of ``LIST`` (``kabuto investor order-list``): the client's own cost of placing them, a
    transaction an order, is not the platform's, and the burst shares the cores with it."""
    started = time.perf_counter()
    for start in range(0, trades, LIST):
        await st.command("investor", BUYER, place_orders([_buy(i) for i in range(start, min(trades, start + LIST))]))
    await until(lambda: _at_least(st, "settlement", trades, SETTLED), timeout, "trades settled")
    return time.perf_counter() - started


async def open_loop(st: Stage, first: int, rate: float, seconds: float, timeout: float) -> Latency:
    """Buys placed at ``rate`` per second for ``seconds``; latency accepted → settled of those trades."""
    trades = int(rate * seconds)
    started = time.perf_counter()
    for i in range(trades):
        delay = started + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)  # the offered load's schedule, not synchronisation
        await st.command("investor", BUYER, place_order(_buy(first + i)))
    await until(lambda: _at_least(st, "settlement", first + trades, SETTLED), timeout, "trades settled")
    return latency_of((await latencies(st))[first:])


def latency_of(seconds: list[float]) -> Latency:
    """p50, p99 and max in milliseconds. Inclusive quantiles: the default (exclusive) method
    extrapolates past the largest value of a small sample, and printed a p99 above the max."""
    q = statistics.quantiles(seconds, n=100, method="inclusive")
    return Latency(q[49] * 1000, q[98] * 1000, max(seconds) * 1000, len(seconds))


async def latencies(st: Stage) -> list[float]:
    """Accepted → settled per trade, in the order the buys were accepted."""
    accepted = {
        r["acceptance_number"]: r["accepted_at"]
        for r in await st.fetch("exchange", "SELECT acceptance_number, accepted_at FROM orders WHERE side = 'buy'")
    }
    buy_of = {r["matching_number"]: r["buy_order"] for r in await st.fetch("exchange", "SELECT * FROM matches")}
    settled = await st.fetch(
        "settlement", "SELECT matching_number, updated_at FROM dvp_instructions WHERE settlement = 'settled'"
    )
    pairs = sorted((buy_of[r["matching_number"]], r["updated_at"]) for r in settled)
    return [(at - accepted[buy]).total_seconds() for buy, at in pairs]


async def run(trades: int, rate: float, seconds: float, timeout: float, progress: Callable[[str], None]) -> FlowResult:
    async with stage(investors=(SELLER, BUYER)) as st:
        total = trades + int(rate * seconds)
        progress(f"trades: preparing {total} certificates and resting sell orders")
        await prepare(st, total, timeout)
        progress(f"trades: burst of {trades} buys")
        elapsed = await burst(st, trades, timeout)
        progress(f"trades: {trades / elapsed:.1f} trades/s; waiting for its aftermath to end")
        await st.quiet(timeout)  # the trades' completions and new certificates, before the open loop
        progress(f"trades: open loop at {rate:g}/s for {seconds:g} s")
        latency = await open_loop(st, trades, rate, seconds, timeout) if rate and seconds else None
    return FlowResult(trades, elapsed, latency)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    p.add_argument("--trades", type=int, default=1000)
    p.add_argument("--rate", type=float, default=100)
    p.add_argument("--seconds", type=float, default=5)
    p.add_argument("--timeout", type=float, default=600)
    args = p.parse_args()
    logs.configure("warning", "console")
    result = event_loop.run(run(args.trades, args.rate, args.seconds, args.timeout, print), settings.load().event_loop)
    print(f"trades end to end: {result.rate:.1f} trades/s ({result.trades} in {result.seconds:.1f} s)")
    if result.latency:
        lat = result.latency
        print(f"latency accepted → settled: p50 {lat.p50_ms:.0f} ms, p99 {lat.p99_ms:.0f} ms, max {lat.max_ms:.0f} ms")


if __name__ == "__main__":
    main()
