"""Both legs or neither under kill -9 (issue 11, docs/dvp.md "Durable state at every step").

The exchange, settlement and the issuer run as real ``kabuto run AGENT`` processes. One trade
goes through the protocol with only the agent whose step is next alive; as soon as that step
has committed (seen in its database: each step's commit also NOTIFYs its outbox, so we wait on
that notification, never on a timer) the process gets SIGKILL, and the next agent is started.
Every step of the protocol is thus followed by a crash of the agent that took it — including
the window where the names are transferred and the cash, earmarked, is not yet posted. Restarted, the agents finish
the trade: both legs, once, and cash and shares conserved. A second trade, whose certificate the
issuer cannot deliver, ends with neither leg under the same treatment.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import asyncpg

from agents.investor.trading import place_order
from broker.db import notify_channel
from broker.settings import Settings
from tests import support
from tests.integration.test_trading_paths import buy, issue, market, place, sell

AGENTS = ("investor", "issuer", "exchange", "settlement")


class Process:
    """``kabuto run AGENT`` in its own OS process."""

    def __init__(self, settings: Settings, agent: str) -> None:
        self.settings, self.agent = settings, agent
        self.process: asyncio.subprocess.Process | None = None
        self.drain: asyncio.Task[bytes] | None = None

    async def start(self) -> Process:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "agents.cli",
            "run",
            self.agent,
            env=support.environment(self.settings),
            stderr=asyncio.subprocess.PIPE,
        )
        assert self.process.stderr is not None
        async with asyncio.timeout(60):
            while b'"agents_ready"' not in (line := await self.process.stderr.readline()):
                assert line, f"kabuto run {self.agent} exited before it was ready"
        self.drain = asyncio.create_task(self.process.stderr.read())
        return self

    async def kill(self) -> None:
        """SIGKILL: no clean shutdown, unacked deliveries go back to the queue."""
        assert self.process is not None
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        if self.drain is not None:
            await self.drain


@asynccontextmanager
async def watching(settings: Settings) -> AsyncIterator[Watch]:
    connection = await asyncpg.connect(settings.database_url)
    watch = Watch(connection)
    try:
        for agent in ("exchange", "settlement", "issuer"):
            await connection.add_listener(notify_channel(agent), watch.notified)
        yield watch
    finally:
        await connection.close()


class Watch:
    """Waits for a state in an agent's tables, woken by the agents' commit notifications."""

    def __init__(self, connection: asyncpg.Connection) -> None:
        self.connection = connection
        self.changed = asyncio.Event()

    def notified(self, *_: Any) -> None:
        self.changed.set()

    async def until(self, sql: str, *args: Any, timeout: float = 60) -> None:
        """Until ``sql`` is true: re-checked at each commit notification, and at least every 0.2 s
        for what commits silently (the relay marking its outbox rows published)."""
        async with asyncio.timeout(timeout):
            while True:
                self.changed.clear()
                if await self.connection.fetchval(sql, *args):
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.changed.wait(), 0.2)

    async def value(self, sql: str, *args: Any) -> Any:
        return await self.connection.fetchval(sql, *args)


async def step(settings: Settings, agent: str, watch: Watch, done_when: str, *args: Any) -> None:
    """Start ``agent``, let it take its step, and kill it -9 the moment the step has committed."""
    process = await Process(settings, agent).start()
    try:
        await watch.until(done_when, *args)
        # and what the step emitted is on its way, so the next agent can take the next step
        await watch.until(
            f"SELECT NOT EXISTS (SELECT FROM {agent}.outbox WHERE published_at IS NULL AND failed_at IS NULL)"
        )
    finally:
        await process.kill()


async def test_issue_11_a_trade_killed_after_every_step_settles_both_legs_once(settings: Settings) -> None:
    async with support.agents(settings, *AGENTS) as rt:
        await market(rt)
        cert_id = await issue(rt, "alice", 500)
        await place(rt, "alice", sell("s1", 500, cert_id))

    async with support.agents(settings, "investor") as rt, watching(settings) as watch:
        await rt["investor"].command("bob", place_order(buy("b1", 300)))
        # 1. the exchange keeps the buy order until its cover is granted
        await step(settings, "exchange", watch, "SELECT true FROM exchange.pending_orders")
        # 2. settlement holds the cover
        await step(settings, "settlement", watch, "SELECT true FROM settlement.covers")
        # 3. the exchange books and matches the order and instructs settlement
        await step(settings, "exchange", watch, "SELECT true FROM exchange.matches WHERE status = 'transfer_requested'")
        # 4. settlement earmarks the cash and asks the issuer to reserve
        await step(settings, "settlement", watch, "SELECT true FROM settlement.dvp_attempts WHERE status = 'reserving'")
        # 5. the issuer reserves alice's certificate and, since settlement asked it to deliver against
        #    the earmarked cash, transfers the names in the same transaction (docs/dvp.md)
        await step(settings, "issuer", watch, "SELECT true FROM issuer.reservations WHERE status = 'committed'")
        # ... so that, until settlement posts, the shares have moved and the cash not: the earmark is what
        # keeps this window safe — bound to the attempt, nothing but its posting can take bob's cash now.
        assert await watch.value("SELECT status FROM issuer.register WHERE cert_id = $1", cert_id) == "retired"
        assert await watch.value("SELECT status FROM settlement.dvp_attempts") == "reserving"
        assert (
            await watch.value(
                "SELECT status FROM settlement.holds WHERE owner = 'bob' AND hold_id IN "
                "(SELECT hold_id FROM settlement.dvp_attempts)"
            )
            == "placed"
        )
        # 6. settlement posts the cash from the earmark and records the instruction settled
        await step(
            settings, "settlement", watch, "SELECT true FROM settlement.dvp_instructions WHERE settlement = 'settled'"
        )
        # 7. the exchange completes the trade
        await step(settings, "exchange", watch, "SELECT true FROM exchange.matches WHERE status = 'completed'")

    async with support.agents(settings, *AGENTS) as rt:
        # the rest (the cover's release, 37 to both, bob's certificate) follows from what was committed
        await rt["settlement"].outcomes.wait(lambda s: s.type == "settlement.cover.release", timeout=30)
        await both_legs_once(rt, cert_id)


async def both_legs_once(rt: dict[str, Any], cert_id: Any) -> None:
    valid = await support.rows(
        rt["issuer"], "SELECT holder_user_id, shares FROM register WHERE status = 'valid' ORDER BY 1"
    )
    assert [(r["holder_user_id"], r["shares"]) for r in valid] == [("alice", 200), ("bob", 300)]
    transfers = await support.rows(rt["issuer"], "SELECT matching_number, shares FROM name_transfers")
    assert transfers == [{"matching_number": 1, "shares": 300}]
    entries = await support.rows(rt["settlement"], "SELECT reference FROM entries WHERE kind = 'trade'")
    assert entries == [{"reference": "1/1"}]
    balances = await support.rows(
        rt["settlement"],
        "SELECT account_id, sum(amount) AS b FROM postings WHERE account_id IN ('alice-cash', 'bob-cash') "
        "GROUP BY account_id ORDER BY 1",
    )
    assert [(b["account_id"], b["b"]) for b in balances] == [
        ("alice-cash", Decimal(5_300_000)),
        ("bob-cash", Decimal(4_700_000)),
    ]
    assert await support.rows(rt["settlement"], "SELECT coalesce(sum(amount), 0) AS t FROM postings") == [{"t": 0}]
    assert await support.rows(rt["settlement"], "SELECT * FROM holds WHERE status = 'placed'") == []
    instruction = await support.rows(rt["settlement"], "SELECT settlement, attempt FROM dvp_instructions")
    assert instruction == [{"settlement": "settled", "attempt": 1}]
    assert await support.rows(rt["exchange"], "SELECT status FROM matches") == [{"status": "completed"}]


async def test_issue_11_a_leg_that_fails_under_kill_9_leaves_neither(settings: Settings) -> None:
    async with support.agents(settings, *AGENTS) as rt:
        await market(rt)
        cert_id = await issue(rt, "alice", 500)
        await place(rt, "alice", sell("s1", 500, cert_id))
        await place(rt, "bob", buy("b1", 300, price="990"))  # rests: the book does not cross yet
        # the issuer will refuse: alice's CertID is no longer valid when the trade comes
        await rt["issuer"].query(
            lambda c: c.execute("UPDATE register SET status = 'retired' WHERE cert_id = $1", cert_id)
        )

    async with support.agents(settings, "investor") as rt, watching(settings) as watch:
        await rt["investor"].command("bob", place_order(buy("b2", 300)))
        await step(settings, "exchange", watch, "SELECT true FROM exchange.pending_orders WHERE client_order_id = 'b2'")
        await step(settings, "settlement", watch, "SELECT count(*) = 2 FROM settlement.covers")
        await step(settings, "exchange", watch, "SELECT true FROM exchange.matches WHERE status = 'transfer_requested'")
        await step(settings, "settlement", watch, "SELECT true FROM settlement.dvp_attempts WHERE status = 'reserving'")
        held = "SELECT sum(amount) FROM settlement.holds WHERE account_id = 'bob-cash' AND status = 'placed'"
        assert await watch.value(held) == Decimal(300 * 990 + 300 * 1000)  # b1's cover, b2's earmark
        refused = "SELECT true FROM issuer.outbox WHERE message_type = 'securities.reservation_refused'"
        await step(settings, "issuer", watch, refused)
        await step(settings, "settlement", watch, "SELECT true FROM settlement.dvp_attempts WHERE status = 'refused'")

    async with support.agents(settings, *AGENTS) as rt, watching(settings) as watch:
        await watch.until("SELECT true FROM exchange.matches WHERE status = 'failed'")
        row = await support.rows(rt["settlement"], "SELECT settlement, reason FROM dvp_instructions")
        assert row == [{"settlement": "failed", "reason": "lack_of_securities"}]
        assert await support.rows(rt["settlement"], "SELECT * FROM entries WHERE kind = 'trade'") == []
        balances = await support.rows(
            rt["settlement"], "SELECT sum(amount) AS b FROM postings WHERE account_id = 'bob-cash'"
        )
        assert balances == [{"b": Decimal(5_000_000)}]
        assert await support.rows(rt["issuer"], "SELECT * FROM name_transfers") == []
        assert await support.rows(rt["issuer"], "SELECT * FROM register WHERE holder_user_id = 'bob'") == []
        # b2's earmark went back to its cover: b2 rests again (S131), covered, next to b1
        assert await watch.value(held) == Decimal(300 * 990 + 300 * 1000)
        orders = await support.rows(rt["exchange"], "SELECT client_order_id, status, remaining FROM orders ORDER BY 1")
        assert [(o["client_order_id"], o["status"], o["remaining"]) for o in orders] == [
            ("b1", "open", 300),
            ("b2", "open", 300),
            ("s1", "cancelled", 0),
        ]
