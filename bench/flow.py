"""Benchmark of the whole trading flow through the running agents: orders per second and
latency from order accepted to settlement completed. A benchmark, not a test.

It makes its own database and broker namespace (both removed afterwards), enrols a seller
and a buyer with a large account usage limit, issues the seller one certificate per trade,
rests one sell order per certificate, then sends the crossing buy orders and waits until
every trade is settled. Latency is read from the agents' own records: the buy order's
acceptance time at the exchange to the settlement instruction's time at settlement.

    python -m bench.flow --trades 200
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from agents.exchange import order_repo
from agents.investor.app import IssuanceOrder, request_certificates
from agents.investor.trading import OrderTicket, place_order
from agents.issuer import repo as issuer_repo
from agents.issuer.domain import Offering
from agents.registry import AGENTS
from agents.settlement import app as settlement
from broker import logs
from broker.migrate import migrate
from broker.pki import KeyStore, default_participant
from broker.runtime import AgentRuntime, started
from broker.settings import load
from schemas.certificates import ShareClass
from schemas.identity import Role
from schemas.issuance import DividendDelivery, DividendMethod
from schemas.trading import Side

SELLER, BUYER, ISSUE, LOT, PRICE = "bench-seller", "bench-buyer", "BENCH", 100, Decimal(1000)
MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    p.add_argument("--trades", type=int, default=200)
    p.add_argument("--timeout", type=float, default=600)
    return p.parse_args()


async def bench(trades: int, timeout: float) -> None:
    base = load()
    name = f"kabuto_bench_{uuid.uuid4().hex[:8]}"
    url = urlunsplit(urlsplit(base.database_url)._replace(path=f"/{name}"))
    keys = KeyStore(Path(base.key_dir))
    keys.init_ca()
    for agent in AGENTS:  # a fresh clone has no identities yet: the bench prepares its own
        if agent != "investor":
            keys.enrol(default_participant(agent, Role(agent)))
    for user in (SELLER, BUYER):
        keys.enrol(default_participant(user, Role.INVESTOR, limit=10**12))
    settings = base.with_(
        database_url=url,
        namespace=f"bench{uuid.uuid4().hex[:6]}",
        investors=(SELLER, BUYER),
        outbox_idle_poll=timedelta(seconds=1),
    )
    await migrate(url, MIGRATIONS)
    try:
        async with started(list(AGENTS.values()), settings) as rt:
            await _prepare(rt, trades, timeout)
            await _run(rt, trades, timeout)
    finally:
        admin = await asyncpg.connect(urlunsplit(urlsplit(url)._replace(path="/postgres")))
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def _prepare(rt: dict[str, AgentRuntime], trades: int, timeout: float) -> None:
    offering = Offering(
        ISSUE, "Bench K.K.", date(2000, 1, 1), ShareClass.COMMON, PRICE, trades * LOT, trades * LOT, LOT
    )
    await rt["issuer"].command("issuer", lambda ctx: issuer_repo.open_offering(ctx.connection, offering))
    await rt["exchange"].command(
        "exchange", lambda ctx: order_repo.list_instrument(ctx.connection, ISSUE, "common", PRICE)
    )
    ledger = rt["settlement"]
    await ledger.command("settlement", settlement.open_account("seller", SELLER))
    await ledger.command("settlement", settlement.open_account("buyer", BUYER))
    await ledger.command("settlement", settlement.deposit("buyer", PRICE * LOT * trades, "bench"))
    investor = rt["investor"]
    delivery = DividendDelivery(method=DividendMethod.SETTLEMENT_ACCOUNT, account="seller")
    for _ in range(trades):
        await investor.command(
            SELLER,
            request_certificates(IssuanceOrder(ISSUE, ShareClass.COMMON, LOT, "Seller", "Tokyo", delivery)),
        )
    await investor.outcomes.wait_count(lambda s: s.type == "certificate.issued", trades, timeout=timeout)
    await rt["exchange"].outcomes.wait_count(lambda s: s.type == "certid_list.updated", trades, timeout=timeout)
    certs = await investor.query(lambda c: c.fetch("SELECT cert_id FROM wallet WHERE holder_user_id = $1", SELLER))
    for i, row in enumerate(certs):
        await investor.command(
            SELLER,
            place_order(OrderTicket(f"s{i}", ISSUE, Side.SELL, LOT, "seller", PRICE, cert_id=row["cert_id"])),
        )
    await rt["exchange"].outcomes.wait_count(lambda s: s.type == "order.submit", trades, timeout=timeout)


async def _run(rt: dict[str, AgentRuntime], trades: int, timeout: float) -> None:
    investor, ledger = rt["investor"], rt["settlement"]
    started_at = time.perf_counter()
    for i in range(trades):
        await investor.command(
            BUYER,
            place_order(
                OrderTicket(f"b{i}", ISSUE, Side.BUY, LOT, "buyer", PRICE, holder_name="Buyer", holder_address="Tokyo")
            ),
        )
    await ledger.outcomes.wait_count(lambda s: s.type == "settlement.request", trades, timeout=timeout)
    elapsed = time.perf_counter() - started_at
    latencies = await _latencies(rt)
    print(f"flow: {trades} trades through 7 agents in {elapsed:.2f} s — {trades / elapsed:.1f} orders/s")
    quantiles = statistics.quantiles(latencies, n=100)
    print(
        f"flow: order accepted → settlement completed: p50 {quantiles[49] * 1000:.0f} ms, "
        f"p99 {quantiles[98] * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms"
    )


async def _latencies(rt: dict[str, AgentRuntime]) -> list[float]:
    accepted = {
        r["acceptance_number"]: r["accepted_at"]
        for r in await rt["exchange"].query(
            lambda c: c.fetch("SELECT acceptance_number, accepted_at FROM orders WHERE side = 'buy'")
        )
    }
    buy_of = {
        r["matching_number"]: r["buy_order"]
        for r in await rt["exchange"].query(lambda c: c.fetch("SELECT matching_number, buy_order FROM matches"))
    }
    settled = await rt["settlement"].query(lambda c: c.fetch("SELECT matching_number, received_at FROM instructions"))
    return [(r["received_at"] - accepted[buy_of[r["matching_number"]]]).total_seconds() for r in settled]


def main() -> None:
    args = parse()
    logs.configure("warning", "console")
    asyncio.run(bench(args.trades, args.timeout))


if __name__ == "__main__":
    main()
