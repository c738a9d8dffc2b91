"""The fault suite: trades through the seven agents as separate processes while faults are
injected, and a report of what recovered, how fast, and every anomaly (``make chaos``).

On private services (``chaos.services``): the suite migrates a fresh database, enrols a
seller, a buyer, a shopper and a merchant, starts the agents with ``kabuto run AGENT`` behind
two fault proxies (one before RabbitMQ, one before PostgreSQL), issues the seller a
certificate per certificate trade and deposits shares at custody for the book-entry ones,
opens the shopper's card (``chaos.shopping``), then runs one wave of trades and one card
purchase per fault. During each wave, at a random moment, it injects
the fault — kill -9 of one agent (restarted by the suite's fleet, as compose would),
RabbitMQ ``stop_app``/``start_app``, a PostgreSQL restart, PostgreSQL stopped for a while,
every connection cut, connections delayed — then waits until every invariant of
``chaos.invariants`` holds again and prints the time to recover. Anything still wrong at
the wave's deadline is an anomaly (lost / duplicated / stuck / unexpected). Exit 0 only if
there is none.

    python -m chaos.run --trades 600 --seed 7
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import shutil
import signal
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any, TypeVar

import asyncpg

from agents.custody import repo as custody_repo
from agents.exchange import order_repo
from agents.investor.app import request_certificates
from agents.investor.standing import open_standing_cover
from agents.investor.trading import OrderTicket, place_order
from agents.issuer import repo as issuer_repo
from agents.issuer.domain import Offering
from agents.merchant.client import MerchantTerminal
from agents.settlement import app as settlement
from broker import logs, ops
from broker.context import Context
from broker.migrate import migrate
from broker.pki import KeyStore, default_participant, platform_participants
from broker.settings import AGENT_IDS, Settings
from broker.supervision import PERMANENT
from chaos import invariants, shopping
from chaos.driver import OUTAGE, Driver, deposit_at_custody, issuance, until
from chaos.fleet import Fleet
from chaos.invariants import (
    BUYER,
    CASH_ACCOUNT,
    ISSUE,
    LOT,
    MERCHANT,
    PRICE,
    SAFEKEEPING,
    SELLER,
    SHOPPER,
    Anomaly,
    Market,
    Trades,
    certificate_index,
    is_book_entry,
)
from chaos.proxy import FaultProxy
from chaos.services import ROOT, PrivatePostgres, PrivateRabbit
from schemas.certificates import ShareClass
from schemas.identity import Role
from schemas.trading import Side

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
# The agents' Prometheus endpoints, 27480–27486: below the ephemeral range, where a client
# socket may hold a port.
METRICS_PORT = 27480
T = TypeVar("T")


@dataclass(slots=True)
class Lab:
    """Everything a fault acts on."""

    pg: PrivatePostgres
    rabbit: PrivateRabbit
    amqp_proxy: FaultProxy
    pg_proxy: FaultProxy
    fleet: Fleet


Fault = Callable[[Lab], Awaitable[None]]


def kill(agent: str) -> tuple[str, Fault]:
    async def fault(lab: Lab) -> None:
        await lab.fleet.kill(agent)
        await asyncio.sleep(0.5)  # down for a moment, then the supervisor restarts it
        await lab.fleet.start(agent)

    return f"kill -9 {agent}", fault


async def rabbit_stop_start(lab: Lab) -> None:
    try:
        await asyncio.to_thread(lab.rabbit.stop_app)
        await asyncio.sleep(10)  # the outage
    finally:  # started again whatever happens, even when the suite is interrupted here
        await asyncio.shield(asyncio.to_thread(lab.rabbit.start_app))


async def postgres_restart(lab: Lab) -> None:
    try:
        await asyncio.to_thread(lab.pg.restart)
    finally:
        await asyncio.shield(asyncio.to_thread(lab.pg.start))


async def postgres_stop_20s(lab: Lab) -> None:
    try:
        await asyncio.to_thread(lab.pg.stop)
        await asyncio.sleep(20)  # longer than the whole retry schedule
    finally:
        await asyncio.shield(asyncio.to_thread(lab.pg.start))


async def cut_amqp(lab: Lab) -> None:
    lab.amqp_proxy.cut()


async def cut_postgres(lab: Lab) -> None:
    lab.pg_proxy.cut()


async def delay_everything(lab: Lab) -> None:
    async with lab.amqp_proxy.delayed(0.2), lab.pg_proxy.delayed(0.05):
        await asyncio.sleep(8)  # the slow period


async def refuse_broker_15s(lab: Lab) -> None:
    with lab.amqp_proxy.refusing():
        await asyncio.sleep(15)  # the network to the broker is down


FAULTS: list[tuple[str, Fault]] = [
    *(kill(agent) for agent in ("exchange", "settlement", "issuer", "investor", "brokerage", "custody", "credit")),
    ("RabbitMQ stop_app 10 s, start_app", rabbit_stop_start),
    ("PostgreSQL restart", postgres_restart),
    ("PostgreSQL stopped 20 s", postgres_stop_20s),
    ("proxy: every AMQP connection cut", cut_amqp),
    ("proxy: every PostgreSQL connection cut", cut_postgres),
    ("proxy: broker unreachable 15 s", refuse_broker_15s),
    ("proxy: AMQP +200 ms, PostgreSQL +50 ms for 8 s", delay_everything),
]


@dataclass(slots=True)
class Outcome:
    fault: str
    trades: int
    injected_after: float
    recovered_in: float | None
    anomalies: list[Anomaly]


def environment(settings: Settings, amqp_url: str, database_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "KABUTO_AMQP_URL": amqp_url,
        "KABUTO_DATABASE_URL": database_url,
        "KABUTO_KEY_DIR": str(settings.key_dir),
        "KABUTO_NAMESPACE": settings.namespace,
        "KABUTO_INVESTORS": ",".join(settings.investors),
        "KABUTO_LOG_FORMAT": "json",
        "KABUTO_LOG_LEVEL": "warning",
        "KABUTO_AGENT_CREDENTIALS": "0",
        "KABUTO_STALL_AFTER": str(int(settings.stall_after.total_seconds())),
        # Beside the private services' ports: agents run elsewhere on this machine hold the default ones.
        "KABUTO_METRICS_PORT": str(METRICS_PORT),
    }


async def fresh_database(pg: PrivatePostgres) -> None:
    admin = await asyncpg.connect(pg.admin_url)
    try:
        await admin.execute("DROP DATABASE IF EXISTS kabuto_chaos WITH (FORCE)")
    finally:
        await admin.close()
    await migrate(pg.url, MIGRATIONS)


def enrol(key_dir: Path) -> KeyStore:
    shutil.rmtree(key_dir, ignore_errors=True)
    keys = KeyStore(key_dir)
    keys.init_ca()
    for institution in platform_participants():  # the credit agent hosts the card issuer too
        keys.enrol(institution)
    for user in (SELLER, BUYER, SHOPPER):
        keys.enrol(default_participant(user, Role.INVESTOR, limit=10**12))
    keys.enrol(default_participant(MERCHANT, Role.MERCHANT))
    return keys


async def prepare(driver: Driver, settings: Settings, trades: Trades) -> tuple[Market, list[Any]]:
    """The seller's certificates (one per certificate trade) and book-entry shares at custody
    (one certificate handed over to it), the buyer's cash for every trade, the shopper's card."""
    market = Market(trades.certificate, trades.book_entry * LOT, PRICE * LOT * trades.total)
    shares = market.certificates * LOT + market.custody_shares + market.shopper_shares
    offering = Offering(ISSUE, "Chaos K.K.", date(2000, 1, 1), ShareClass.COMMON, PRICE, shares, shares, LOT)
    await driver.command("issuer", "issuer", lambda ctx: issuer_repo.open_offering(ctx.connection, offering))
    await driver.command(
        "exchange", "exchange", lambda ctx: order_repo.list_instrument(ctx.connection, ISSUE, "common", PRICE)
    )
    for user in (SELLER, BUYER):
        await driver.command("settlement", "settlement", settlement.open_account(CASH_ACCOUNT[user], user))
    await driver.command("settlement", "settlement", settlement.deposit(CASH_ACCOUNT[BUYER], market.deposit, "chaos"))
    # half the buyer's cash is a standing cover: the first half of its buys draw on it, the rest
    # take per-order covers, so both paths run through every fault (docs/dvp.md)
    await driver.command("investor", BUYER, open_standing_cover(CASH_ACCOUNT[BUYER], market.deposit / 2))
    for user, account in SAFEKEEPING.items():
        await driver.command("custody", "custody", _open_safekeeping(account, user))
    db = await asyncpg.connect(settings.database_url)
    try:
        if market.custody_shares:
            await deposit_at_custody(driver, db, SELLER, SAFEKEEPING[SELLER], market.custody_shares)
        certs = await _issued(driver, db, market.certificates)
        active = "SELECT count(*) > 0 FROM investor.standing_covers WHERE status = 'active'"
        await until(lambda: db.fetchval(active), time.monotonic() + 60, "the buyer's standing cover active")
        await shopping.open_credit(driver, db, market)
    finally:
        await db.close()
    return market, certs


def _open_safekeeping(account: str, client: str) -> Callable[[Context], Awaitable[None]]:
    async def action(ctx: Context) -> None:
        await custody_repo.open_account(ctx.connection, account, client, "custody")

    return action


async def _issued(driver: Driver, db: asyncpg.Connection, certificates: int) -> list[Any]:
    """One certificate of one lot per certificate trade, issued to the seller; their ids in order."""
    for _ in range(certificates):
        await driver.command("investor", SELLER, request_certificates(issuance(SELLER, LOT)))

    async def held() -> list[Any]:
        rows = await db.fetch(
            """SELECT cert_id FROM investor.wallet WHERE holder_user_id = $1 AND status = 'held'
               ORDER BY received_at, cert_id""",
            SELLER,
        )
        return [r["cert_id"] for r in rows]

    async def issued() -> bool:
        return len(await held()) == certificates

    await until(issued, time.monotonic() + 600, "certificates issued")
    return await held()


def tickets(trade: int, certs: list[Any]) -> tuple[OrderTicket, OrderTicket]:
    """Trade ``trade``'s sell and buy orders: a certificate trade, or a book-entry one at custody."""
    if is_book_entry(trade):
        sell_from: dict[str, Any] = {"safekeeping_account": SAFEKEEPING[SELLER]}
        buy_into: dict[str, Any] = {"safekeeping_account": SAFEKEEPING[BUYER]}
    else:
        sell_from = {"cert_id": certs[certificate_index(trade)]}
        buy_into = {"holder_name": "Buyer", "holder_address": "Tokyo"}
    sell = OrderTicket(f"s{trade}", ISSUE, Side.SELL, LOT, CASH_ACCOUNT[SELLER], PRICE, **sell_from)
    buy = OrderTicket(f"b{trade}", ISSUE, Side.BUY, LOT, CASH_ACCOUNT[BUYER], PRICE, **buy_into)
    return sell, buy


async def place_trades(driver: Driver, certs: list[Any], first: int, last: int) -> None:
    for trade in range(first, last):
        sell, buy = tickets(trade, certs)
        await driver.command("investor", SELLER, place_order(sell))
        await driver.command("investor", BUYER, place_order(buy))


async def converge(settings: Settings, market: Market, trades: int, purchases: int, deadline: float) -> list[Anomaly]:
    """Check until every invariant holds or the deadline passes; return what is still wrong."""
    anomalies: list[Anomaly] = []
    while time.monotonic() < deadline:
        try:
            db = await asyncpg.connect(settings.database_url, timeout=5)
            try:
                anomalies = await invariants.check(db, settings, market, trades, purchases)
            finally:
                await db.close()
        except OUTAGE as exc:
            if isinstance(exc, PERMANENT):
                raise
            anomalies = [Anomaly(invariants.Kind.STUCK, "services answer", repr(exc)[:200])]
        if not anomalies:
            return []
        await asyncio.sleep(0.5)  # polling the agents' books and queues, bounded by the deadline
    return anomalies


async def unhealthy(settings: Settings, deadline: float) -> list[Anomaly]:
    """What ``kabuto health`` still finds wrong at ``deadline`` (empty as soon as it finds
    nothing). Asked once, it could catch an agent between a database outage and its next
    heartbeat: the heartbeats are written to the database, so after a 20-s stop an agent whose
    last beat came just before it has none for 20 s plus a beat interval (seen once at stop 28,
    "no heartbeat for 30 s" 4.7 s after PostgreSQL came back)."""
    while True:
        found = [
            Anomaly(invariants.Kind.UNEXPECTED, f"kabuto health {agent}", problem)
            for agent in AGENT_IDS
            for problem in await ops.health(settings, agent)
        ]
        if not found or time.monotonic() >= deadline:
            return found
        await asyncio.sleep(1)  # polling the agents' own health reports, bounded by the deadline


@dataclass(slots=True)
class Business:
    """What the waves trade and buy with: the driver, the market set up, the merchant's terminal."""

    driver: Driver
    settings: Settings
    market: Market
    certs: list[Any]
    shop: MerchantTerminal


async def wave(
    lab: Lab, business: Business, n: int, span: tuple[int, int], fault: tuple[str, Fault], rng: random.Random,
    deadline_s: float,
) -> Outcome:  # fmt: skip
    """Trades ``span`` and card purchase ``n`` (the wave's number) while ``fault`` happens."""
    name, inject = fault
    settings, driver = business.settings, business.driver
    started = time.monotonic()
    placing = asyncio.create_task(place_trades(driver, business.certs, *span))
    buying = asyncio.create_task(shopping.purchase(driver, business.shop, n, started + deadline_s))
    injected_after = rng.uniform(0.3, 3.0)
    await asyncio.sleep(injected_after)  # the random moment of the fault
    await inject(lab)
    fault_over = time.monotonic()
    await placing
    await buying
    anomalies = await converge(settings, business.market, span[1], n + 1, time.monotonic() + deadline_s)
    recovered = None if anomalies else time.monotonic() - fault_over
    if not anomalies:
        # healthy again by itself within a few beats of the recovery (settings.heartbeat_interval)
        anomalies = await unhealthy(settings, time.monotonic() + 4 * settings.heartbeat_interval.total_seconds())
    print(
        f"  {name:<48} trades {span[0]:>4}–{span[1] - 1:<4} injected at +{injected_after:.1f} s  "
        + (f"recovered in {recovered:5.1f} s" if recovered is not None else "NOT RECOVERED")
        + f"  (wave {time.monotonic() - started:.0f} s)",
        flush=True,
    )
    for anomaly in anomalies:
        print(f"      {anomaly.kind.value:<10} {anomaly.check}: {anomaly.detail}", flush=True)
    return Outcome(name, span[1] - span[0], injected_after, recovered, anomalies)


def report(outcomes: list[Outcome], fleet: Fleet, elapsed: float, orders: int) -> bool:
    totals = invariants.tally([a for o in outcomes for a in o.anomalies])
    recovered = [o.recovered_in for o in outcomes if o.recovered_in is not None]
    print("\nchaos report")
    print(f"  faults injected: {len(outcomes)}, recovered without a human: {len(recovered)}")
    trades = Trades(orders // 2)
    print(
        f"  orders placed: {orders} ({trades.total} trades: {trades.certificate} certificate, {trades.book_entry}"
        f" book-entry at custody); card purchases on credit: {len(outcomes)}; run time {elapsed:.0f} s"
    )
    if recovered:
        print(f"  time to recover: max {max(recovered):.1f} s, mean {sum(recovered) / len(recovered):.1f} s")
    print("  anomalies: " + ", ".join(f"{k.value} {n}" for k, n in totals.items()))
    kills = {a: e.kills for a, e in fleet.agents.items() if e.kills}
    exits = {a: e.self_exits for a, e in fleet.agents.items() if e.self_exits}
    print(f"  kill -9 per agent: {kills}; agents that exited by themselves (restarted): {exits or 'none'}")
    ok = not any(totals.values()) and len(recovered) == len(outcomes)
    print("  RESULT: " + ("PASS — nothing lost, duplicated or stuck" if ok else "FAIL"))
    return ok


async def run(trades: int, seed: int, deadline_s: float, faults: list[tuple[str, Fault]]) -> bool:
    pg, rabbit = PrivatePostgres(), PrivateRabbit()
    await fresh_database(pg)
    keys = enrol(ROOT / "keys")
    namespace = f"chaos{uuid.uuid4().hex[:6]}"
    settings = Settings(
        amqp_url=rabbit.url,
        database_url=pg.url,
        key_dir=keys.root,
        namespace=namespace,
        investors=(SELLER, BUYER, SHOPPER),
        stall_after=timedelta(seconds=30),
        agent_credentials=False,  # private services run as their administrator; the tests prove least privilege
    )
    rng = random.Random(seed)
    per_wave = max(1, trades // len(faults))
    print(f"chaos: seed {seed}, {per_wave * len(faults)} trades in {len(faults)} waves, namespace {namespace}")
    async with FaultProxy.for_url(rabbit.url) as amqp_proxy, FaultProxy.for_url(pg.url) as pg_proxy:
        env = environment(settings, amqp_proxy.url(rabbit.url), pg_proxy.url(pg.url))
        fleet = Fleet(env, ROOT / "logs" / namespace)
        lab = Lab(pg, rabbit, amqp_proxy, pg_proxy, fleet)
        driver = Driver(settings, keys)
        started = time.monotonic()
        try:
            await fleet.start_all()
            await until(lambda: _consuming(settings), time.monotonic() + 120, "agents consuming")
            market, certs = await prepare(driver, settings, Trades(per_wave * len(faults)))
            print(
                f"chaos: {len(certs)} certificates issued, {market.custody_shares} shares deposited at custody,"
                f" the shopper's card open in {time.monotonic() - started:.0f} s; faults:",
                flush=True,
            )
            outcomes = []
            async with MerchantTerminal.connect(settings, MERCHANT) as shop:
                business = Business(driver, settings, market, certs, shop)
                for n, fault in enumerate(faults):
                    span = (n * per_wave, (n + 1) * per_wave)
                    outcome = await wave(lab, business, n, span, fault, rng, deadline_s)
                    outcomes.append(outcome)
                    if outcome.recovered_in is None:
                        print("chaos: stopping early: the last fault did not recover", flush=True)
                        break
            return report(outcomes, fleet, time.monotonic() - started, 2 * per_wave * len(outcomes))
        finally:
            await driver.close()
            await fleet.stop()


async def _consuming(settings: Settings) -> bool:
    try:
        status = await ops.status(settings, AGENT_IDS)
    except OUTAGE as exc:
        if isinstance(exc, PERMANENT):
            raise
        return False
    return all(s.consumers == 1 for s in status)


def main() -> int:
    p = argparse.ArgumentParser(description="Kabuto's fault suite (run it through `make chaos`).")
    p.add_argument("--trades", type=int, default=int(os.environ.get("CHAOS_TRADES", "1400")))
    p.add_argument("--seed", type=int, default=int(os.environ.get("CHAOS_SEED", str(random.randrange(10**6)))))
    p.add_argument("--deadline", type=float, default=180.0, help="seconds a wave may take to recover")
    p.add_argument("--only", help="run only the faults whose name contains this text")
    args = p.parse_args()
    logs.configure("warning", "console")
    for noisy in ("asyncpg", "aiormq", "aio_pika"):  # the faults make them complain, on purpose
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    faults = [f for f in FAULTS if not args.only or args.only in f[0]]
    try:
        return 0 if asyncio.run(interruptible(run(args.trades, args.seed, args.deadline, faults))) else 1
    except asyncio.CancelledError:
        print("chaos: interrupted; agents stopped, services started again", file=sys.stderr)
        return 130


async def interruptible(suite: Awaitable[T]) -> T:
    """Run ``suite``, cancelled by SIGTERM or SIGINT (ignored by a shell's background jobs
    otherwise), so that every ``finally`` runs: services started again, agents stopped."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, task.cancel)
    return await suite


if __name__ == "__main__":
    sys.exit(main())
