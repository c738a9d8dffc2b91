"""The fault suite: trades through the seven agents as separate processes while faults are
injected, and a report of what recovered, how fast, and every anomaly (``make chaos``).

On private services (``chaos.services``): the suite migrates a fresh database, enrols a
seller and a buyer, starts the agents with ``kabuto run AGENT`` behind two fault proxies
(one before RabbitMQ, one before PostgreSQL), issues the seller one certificate per trade,
then runs one wave of trades per fault. During each wave, at a random moment, it injects
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
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import asyncpg

from agents.exchange import order_repo
from agents.investor.app import IssuanceOrder, request_certificates
from agents.investor.trading import OrderError, OrderTicket, place_order
from agents.issuer import repo as issuer_repo
from agents.issuer.domain import Offering
from agents.registry import institutions
from agents.settlement import app as settlement
from broker import logs, ops
from broker.context import Context
from broker.migrate import migrate
from broker.pki import Identity, KeyStore, default_participant
from broker.runtime import execute
from broker.settings import AGENT_IDS, Settings
from broker.supervision import is_infrastructure
from broker.trust import TrustStore
from chaos import invariants
from chaos.fleet import Fleet
from chaos.invariants import BUYER, ISSUE, LOT, PRICE, SELLER, Anomaly, Market
from chaos.proxy import FaultProxy
from chaos.services import ROOT, PrivatePostgres, PrivateRabbit
from schemas.certificates import ShareClass
from schemas.identity import Role
from schemas.issuance import DividendDelivery, DividendMethod
from schemas.trading import Side

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
METRICS_PORT = 55480  # the agents' Prometheus endpoints, 55480–55486
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


class Driver:
    """Places the suite's commands in the agents' schemas, as the CLI would, through outages."""

    def __init__(self, settings: Settings, keys: KeyStore) -> None:
        self.settings = settings
        self.trust = TrustStore(keys.ca_certificate(), keys.certificates())
        self.identities: dict[str, Identity] = {}
        self.keys = keys
        self.pools: dict[str, asyncpg.Pool] = {}

    async def command(self, agent: str, user: str, action: Callable[[Context], Awaitable[T]]) -> T | None:
        """Run one command, again after an outage; None if it had committed before the outage."""
        if user not in self.identities:
            self.identities[user] = self.keys.load_identity(user)
        retried = False
        for _ in range(600):
            try:
                if agent not in self.pools:
                    self.pools[agent] = await asyncpg.create_pool(
                        self.settings.database_url,
                        min_size=1,
                        max_size=4,
                        server_settings={"search_path": agent, "role": f"kabuto_{agent}"},
                    )
                now = datetime.now(UTC)
                return await execute(self.pools[agent], agent, self.identities[user], self.trust, action, now)
            except (asyncpg.UniqueViolationError, OrderError):
                if retried:
                    return None  # it committed before the connection dropped; the retry found it
                raise
            except Exception as exc:
                if not is_infrastructure(exc):
                    raise
                retried = True
                await asyncio.sleep(0.5)  # the database is away; the suite waits like an agent
        raise RuntimeError(f"{agent} command could not be run for 5 minutes")

    async def close(self) -> None:
        for pool in self.pools.values():
            pool.terminate()


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
    for institution in institutions():  # the credit agent hosts the card issuer too
        keys.enrol(institution)
    for user in (SELLER, BUYER):
        keys.enrol(default_participant(user, Role.INVESTOR, limit=10**12))
    return keys


async def until(check: Callable[[], Awaitable[bool]], deadline: float, what: str) -> None:
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.5)  # polling the agents' books, bounded by the deadline


async def prepare(driver: Driver, settings: Settings, certificates: int) -> tuple[Market, list[Any]]:
    offering = Offering(
        ISSUE, "Chaos K.K.", date(2000, 1, 1), ShareClass.COMMON, PRICE, certificates * LOT, certificates * LOT, LOT
    )
    await driver.command("issuer", "issuer", lambda ctx: issuer_repo.open_offering(ctx.connection, offering))
    await driver.command(
        "exchange", "exchange", lambda ctx: order_repo.list_instrument(ctx.connection, ISSUE, "common", PRICE)
    )
    deposit = PRICE * LOT * certificates
    await driver.command("settlement", "settlement", settlement.open_account("seller", SELLER))
    await driver.command("settlement", "settlement", settlement.open_account("buyer", BUYER))
    await driver.command("settlement", "settlement", settlement.deposit("buyer", deposit, "chaos"))
    delivery = DividendDelivery(method=DividendMethod.SETTLEMENT_ACCOUNT, account="seller")
    order = IssuanceOrder(ISSUE, ShareClass.COMMON, LOT, "Seller", "Tokyo", delivery)
    for _ in range(certificates):
        await driver.command("investor", SELLER, request_certificates(order))
    db = await asyncpg.connect(settings.database_url)
    try:

        async def issued() -> bool:
            n = await db.fetchval("SELECT count(*) FROM investor.wallet WHERE holder_user_id = $1", SELLER)
            return bool(n == certificates)

        await until(issued, time.monotonic() + 600, "certificates issued")
        certs = await db.fetch(
            "SELECT cert_id FROM investor.wallet WHERE holder_user_id = $1 ORDER BY received_at, cert_id", SELLER
        )
    finally:
        await db.close()
    return Market(certificates, deposit), [r["cert_id"] for r in certs]


async def place_trades(driver: Driver, certs: list[Any], first: int, last: int) -> None:
    for i in range(first, last):
        sell = OrderTicket(f"s{i}", ISSUE, Side.SELL, LOT, "seller", PRICE, cert_id=certs[i])
        buy = OrderTicket(f"b{i}", ISSUE, Side.BUY, LOT, "buyer", PRICE, holder_name="Buyer", holder_address="Tokyo")
        await driver.command("investor", SELLER, place_order(sell))
        await driver.command("investor", BUYER, place_order(buy))


async def converge(settings: Settings, market: Market, trades: int, deadline: float) -> list[Anomaly]:
    """Check until every invariant holds or the deadline passes; return what is still wrong."""
    anomalies: list[Anomaly] = []
    while time.monotonic() < deadline:
        try:
            db = await asyncpg.connect(settings.database_url, timeout=5)
            try:
                anomalies = await invariants.check(db, settings, market, trades)
            finally:
                await db.close()
        except Exception as exc:
            if not _outage(exc):
                raise
            anomalies = [Anomaly(invariants.Kind.STUCK, "services answer", repr(exc)[:200])]
        if not anomalies:
            return []
        await asyncio.sleep(0.5)  # polling the agents' books and queues, bounded by the deadline
    return anomalies


async def unhealthy(settings: Settings) -> list[Anomaly]:
    found = []
    for agent in AGENT_IDS:
        for problem in await ops.health(settings, agent):
            found.append(Anomaly(invariants.Kind.UNEXPECTED, f"kabuto health {agent}", problem))
    return found


async def wave(
    lab: Lab, driver: Driver, settings: Settings, market: Market, certs: list[Any], span: tuple[int, int],
    fault: tuple[str, Fault], rng: random.Random, deadline_s: float,
) -> Outcome:  # fmt: skip
    name, inject = fault
    started = time.monotonic()
    placing = asyncio.create_task(place_trades(driver, certs, *span))
    injected_after = rng.uniform(0.3, 3.0)
    await asyncio.sleep(injected_after)  # the random moment of the fault
    await inject(lab)
    fault_over = time.monotonic()
    await placing
    anomalies = await converge(settings, market, span[1], time.monotonic() + deadline_s)
    recovered = None if anomalies else time.monotonic() - fault_over
    if not anomalies:
        anomalies = await unhealthy(settings)
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
    print(f"  orders placed: {orders} ({orders // 2} trades), run time {elapsed:.0f} s")
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
        investors=(SELLER, BUYER),
        stall_after=timedelta(seconds=30),
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
            market, certs = await prepare(driver, settings, per_wave * len(faults))
            print(f"chaos: {len(certs)} certificates issued in {time.monotonic() - started:.0f} s; faults:", flush=True)
            outcomes = []
            for n, fault in enumerate(faults):
                outcome = await wave(
                    lab, driver, settings, market, certs, (n * per_wave, (n + 1) * per_wave), fault, rng, deadline_s
                )
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
    except Exception as exc:
        if not _outage(exc):
            raise
        return False
    return all(s.consumers == 1 for s in status)


def _outage(exc: BaseException) -> bool:
    # aiormq raises a bare RuntimeError when a channel is asked of a connection that just closed.
    return is_infrastructure(exc) or isinstance(exc, RuntimeError)


def main() -> int:
    p = argparse.ArgumentParser(description="Kabuto's fault suite (run it through `make chaos`).")
    p.add_argument("--trades", type=int, default=int(os.environ.get("CHAOS_TRADES", "750")))
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
