"""Order entry at the exchange, from outside: signed order.submit in, signed order.accepted out.

* ``offered``: orders sent at a fixed rate for a fixed time (open loop); the figure is what
  was accepted over the time until the last acceptance arrived, so a backlog shows as a lower rate;
* ``burst``: orders sent as fast as confirms allow, windows of ``WINDOW``; the exchange's
  messages per second through one hop (the same figure the bare loop is compared with);
* ``depth``: a burst with 100 resting orders on the book, then with 10,000;
* ``memory``: a long run of orders that do not rest (IOC buys with nothing to meet), each
  agent's resident memory sampled after the first tenth and at the end.

Every order is signed by one of ``TRADERS`` (investors enrolled for the bench, not hosted by the
investor agent: the acceptances come back to the bench's own queue, and are counted there).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal

from agents.exchange import order_repo
from agents.settlement import app as settlement
from bench.client import Client, account_box, book_entry_sell_order, buy_order, connect, standing_cover
from bench.stage import Stage
from broker.envelope import Sealed
from broker.pki import Identity
from broker.trust import TrustStore
from schemas.trading import TimeInForce

ISSUE, REFERENCE, LOT, WINDOW = "ENTRY", Decimal(1000), 100, 200
FUNDS = Decimal(10**12)  # per trader: far more than every order of a run covers
TRADERS = tuple(f"bench-t{i:02d}" for i in range(20))
ACCEPTED = "order.accepted"
STANDING_COVER_OPENED = "standing_cover.opened"
Progress = Callable[[str], None]


@dataclass
class Entry:
    st: Stage
    client: Client
    identities: list[Identity]
    trust: TrustStore
    boxes: list[str]
    sent: int = 0

    def orders(self, count: int, tif: TimeInForce = TimeInForce.DAY) -> list[Sealed]:
        """Signed buys that never cross (there are no sells), round robin over the traders."""
        made = []
        for i in range(self.sent, self.sent + count):
            price = REFERENCE - 1 - (i % 40)
            trader = i % len(self.identities)
            made.append(buy_order(self.identities[trader], self.boxes[trader], f"e{i}", ISSUE, price, LOT, tif))
        self.sent += count
        return made

    def sells(self, count: int) -> list[Sealed]:
        """Signed book-entry sells above the buys' prices (nothing crosses): one hop each."""
        made = []
        for i in range(self.sent, self.sent + count):
            price = REFERENCE + 1 + (i % 40)
            trader = self.identities[i % len(self.identities)]
            made.append(book_entry_sell_order(trader, self.trust, f"e{i}", ISSUE, price, LOT))
        self.sent += count
        return made

    async def accepted(self, count: int, timeout: float = 600) -> None:
        await self.client.wait_for(ACCEPTED, count, timeout)


async def open_entry(st: Stage) -> Entry:
    await st.command(
        "exchange", "exchange", lambda ctx: order_repo.list_instrument(ctx.connection, ISSUE, "common", REFERENCE)
    )
    for trader in TRADERS:  # a buy order is accepted once settlement covers it (docs/dvp.md)
        await st.command("settlement", "settlement", settlement.open_account(f"acct-{trader}", trader))
        await st.command("settlement", "settlement", settlement.deposit(f"acct-{trader}", FUNDS, f"bench-{trader}"))
    client = await connect(st.settings.amqp_url, st.settings.namespace, list(TRADERS))
    identities, trust = [st.identity(t) for t in TRADERS], st.trust()
    boxes = [account_box(trust, t) for t in TRADERS]
    # each trader's buys draw on a standing cover, as a participant sending a thousand orders a
    # second would fund them: booked in the hop that receives them (docs/dvp.md, "Standing cover")
    await client.publish_window([standing_cover(i, box, FUNDS) for i, box in zip(identities, boxes, strict=True)])
    await client.wait_for(STANDING_COVER_OPENED, len(TRADERS), timeout=60)
    return Entry(st, client, identities, trust, boxes)


@dataclass(frozen=True)
class Offered:
    """What an open-loop offer of orders came to."""

    rate: float  # orders accepted a second, from the first sent to the last accepted
    waiting: int  # orders sent and not yet accepted when the offer ended
    drained: float  # seconds from the offer's end to the last acceptance
    sent_rate: float  # orders sent a second: the offer, unless the bench's own publishing fell behind


async def offered(entry: Entry, rate: int, seconds: int, progress: Progress) -> Offered:
    """``rate`` orders a second offered for ``seconds``, on a fixed schedule whatever the
    exchange does (an open loop), and what was accepted."""
    total, tick = rate * seconds, 0.05
    orders = entry.orders(total)  # signed before the clock starts: the bench measures Kabuto
    first = entry.client.received[ACCEPTED]
    started = last_report = time.perf_counter()
    sent = 0
    for index in range(1, round(seconds / tick) + 1):
        due = min(total, round(rate * tick * index))  # on schedule, however a tick rounds
        await entry.client.publish_window(orders[sent:due])
        sent = due
        if time.perf_counter() - last_report >= 10:
            last_report = time.perf_counter()
            done = entry.client.received[ACCEPTED] - first
            progress(f"order entry: {last_report - started:.0f} s, {sent:,} sent, {done:,} accepted")
        delay = started + index * tick - time.perf_counter()
        if delay > 0:
            await _pause(delay)
    ended = time.perf_counter()
    waiting = first + total - entry.client.received[ACCEPTED]
    await entry.accepted(first + total)
    drained = time.perf_counter()
    return Offered(total / (drained - started), waiting, drained - ended, total / (ended - started))


async def burst(entry: Entry, count: int, *, one_hop: bool = False) -> float:
    """Accepted orders per second when ``count`` are sent as fast as the broker confirms them:
    buy orders drawn on their trader's standing cover, or with ``one_hop`` book-entry sell
    orders; the exchange accepts either in the hop that receives it."""
    orders = entry.sells(count) if one_hop else entry.orders(count)
    first = entry.client.received[ACCEPTED]
    started = time.perf_counter()
    for start in range(0, count, WINDOW):
        await entry.client.publish_window(orders[start : start + WINDOW])
    await entry.accepted(first + count)
    return count / (time.perf_counter() - started)


async def rest(st: Stage, resting: int) -> None:
    """Top the book up to ``resting`` open orders, written as rows (set-up, not measured)."""
    have = int(await st.fetchval("exchange", "SELECT count(*) FROM orders WHERE status = 'open'"))
    await st.execute_sql(
        "exchange",
        """INSERT INTO orders (acceptance_number, client_order_id, user_id, issue_code, side, order_type,
               price, quantity, remaining, time_in_force, priority, status, settlement_account, request_hash)
           SELECT n, 'depth-' || n, 'bench-depth', $1, 'buy', 'limit', $2 - 50 - (n % 100), 100, 100,
                  'gtc', n, 'open', 'acct-depth', 'bench'
           FROM (SELECT nextval('acceptance_numbers') AS n FROM generate_series(1, $3)) s""",
        ISSUE,
        REFERENCE,
        max(0, resting - have),
    )


async def depth(entry: Entry, count: int, progress: Progress, rounds: int = 2) -> tuple[float, float]:
    """Burst rates with 100 and with 10,000 orders resting on the book, the best of ``rounds`` bursts
    at each (one burst of a thousand orders varied by a fifth on this machine)."""
    rates = []
    for resting in (100, 10_000):
        await rest(entry.st, resting)
        await burst(entry, WINDOW)  # the first order after the rows were written rebuilds the book
        rates.append(max([await burst(entry, count) for _ in range(rounds)]))
        progress(f"depth: {resting:,} resting → {rates[-1]:,.0f} orders/s (best of {rounds})")
    return rates[0], rates[1]


@dataclass(frozen=True)
class Memory:
    messages: int
    early_kib: dict[str, int]
    late_kib: dict[str, int]

    def growth(self, agent: str) -> float:
        return self.late_kib[agent] / self.early_kib[agent] - 1


async def memory(entry: Entry, messages: int, progress: Progress) -> Memory:
    """Resident memory after the first tenth of ``messages`` orders and after all of them."""
    early: dict[str, int] = {}
    # Counted from here: the bare loop's orders, signed by the same ``Entry``, never reach the exchange.
    first = entry.client.received[ACCEPTED]
    for done, chunk in _chunks(messages, 2_000):
        for start in range(0, chunk, WINDOW):
            await entry.client.publish_window(entry.orders(min(WINDOW, chunk - start), TimeInForce.IOC))
        await entry.accepted(first + done)  # every order of this run is accepted (then cancelled)
        if not early and done >= messages // 10:
            early = entry.st.rss_kib()
        if done % 10_000 == 0 or done == messages:
            progress(f"memory: {done:,}/{messages:,} orders")
    return Memory(messages, early, entry.st.rss_kib())


def _chunks(total: int, size: int) -> Iterator[tuple[int, int]]:
    done = 0
    while done < total:
        chunk = min(size, total - done)
        done += chunk
        yield done, chunk


async def _pause(seconds: float) -> None:
    await asyncio.sleep(seconds)  # the offered load's schedule, not synchronisation
