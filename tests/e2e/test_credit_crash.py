"""A crash between lock and answer (issue 12 §4): kill -9 of a real agent process, then restart.

No orphan lock and no approval without a lock: the line records a lock before it asks custody
for it, approves only in the transaction that records the last lock placed, and releases a lock
that arrives for an inquiry it already gave up on.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from agents.credit import operators
from agents.merchant.client import MerchantTerminal
from broker.bundle import Delivery
from broker.envelope import seal
from broker.pki import KeyStore
from broker.runtime import AgentRuntime
from broker.settings import Settings
from broker.topology import Names
from schemas.custody import HoldingDelta, HoldingsDeltas, SubBalances
from tests import credit_support as cs
from tests import support


@asynccontextmanager
async def agent_process(settings: Settings, agent: str) -> AsyncIterator[asyncio.subprocess.Process]:
    """``kabuto run AGENT`` in its own process, ready; killed (if still alive) on the way out."""
    process = await support.kabuto_process(settings, "run", agent)
    try:
        await logged(process, b'"agents_ready"')
        yield process
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


async def logged(process: asyncio.subprocess.Process, *fragments: bytes, timeout: float = 30) -> bytes:
    """The first log line of ``process`` that contains every fragment."""
    assert process.stderr is not None
    async with asyncio.timeout(timeout):
        while line := await process.stderr.readline():
            if all(f in line for f in fragments):
                return line
    raise AssertionError(f"the process ended before logging {fragments}")


async def drain(process: asyncio.subprocess.Process) -> None:
    assert process.stderr is not None
    await process.stderr.read()


async def set_up(settings: Settings, inquiry_timeout: timedelta) -> None:
    async with support.agents(settings, *cs.AGENTS) as rt:
        await cs.seed_003_worked_example(rt)
        await rt["credit"].command("credit", operators.line_policy(cs.LINE_ACCOUNT, inquiry_timeout=inquiry_timeout))


async def active_custody_locks(settings: Settings) -> list[dict[str, object]]:
    async with support.agents(settings, "custody") as rt:
        return await support.rows(rt["custody"], "SELECT lock_id FROM locks WHERE status = 'active'")


async def test_kill_9_of_the_credit_agent_between_lock_and_answer_leaves_no_orphan(settings: Settings) -> None:
    await set_up(settings, timedelta(minutes=2))
    async with support.agents(settings, "investor", "exchange", "settlement", "custody") as rt:
        async with MerchantTerminal.connect(settings, "shop") as shop:
            async with agent_process(settings, "credit") as credit:
                await shop.request_purchase("crash-1", cs.CARD, 200_000)
                # The line valued the holdings and committed its lock request: kill it now.
                await logged(credit, b"message_processed", b"custody.holdings.deltas")
                credit.send_signal(signal.SIGKILL)
                await credit.wait()
            async with agent_process(settings, "credit") as restarted:
                draining = asyncio.create_task(drain(restarted))
                answer = await shop.answer("crash-1", timeout=30)
                restarted.send_signal(signal.SIGTERM)
                await restarted.wait()
                await draining
        assert answer.approved
        locks = await support.rows(rt["custody"], "SELECT lock_id FROM locks WHERE status = 'active'")
        assert await cs.custody_positions(rt["custody"]) == {cs.ISSUE_A: (0, 6_000), cs.ISSUE_B: (2_000, 0)}
    async with support.agents(settings, "credit") as after:
        collateral = await cs.collateral(after["credit"])
    assert [(c["lock_id"], c["status"]) for c in collateral] == [(locks[0]["lock_id"], "placed")]
    assert len(locks) == 1


async def test_kill_9_of_custody_between_lock_and_answer_leaves_no_orphan(settings: Settings) -> None:
    """Custody dies right after the line asked for the lock. Whether it died before locking,
    after locking, or after answering, once it is back the books agree: an approval has its lock
    at custody, a refusal (the line gave up waiting) leaves no lock anywhere."""
    await set_up(settings, timedelta(seconds=2))
    async with support.agents(settings, "investor", "exchange", "settlement", "credit") as rt:
        credit = rt["credit"]
        async with MerchantTerminal.connect(settings, "shop") as shop:
            async with agent_process(settings, "custody") as custody:
                asked = await shop.request_purchase("crash-2", cs.CARD, 200_000)
                await credit.outcomes.reply("custody.holdings.deltas", asked)
                custody.send_signal(signal.SIGKILL)  # the lock request was just committed by the line
                await custody.wait()
            answer = await shop.answer("crash-2", timeout=30)
            async with agent_process(settings, "custody") as restarted:
                draining = asyncio.create_task(drain(restarted))
                if not answer.approved:  # the line gave up: the late lock, if any, is released
                    assert "lock_refused" in (answer.detail or "")
                    await _settled(credit)
                restarted.send_signal(signal.SIGTERM)
                await restarted.wait()
                await draining
        collateral = await cs.collateral(credit)
        approvals = await support.rows(credit, "SELECT * FROM obligations WHERE status = 'approved'")
    active = await active_custody_locks(settings)
    if answer.approved:
        assert len(approvals) == 1 and [c["status"] for c in collateral] == ["placed"]
        assert [a["lock_id"] for a in active] == [collateral[0]["lock_id"]]
    else:
        assert approvals == [] and active == []
        assert all(c["status"] in ("released", "requested") for c in collateral)


async def _settled(credit: AgentRuntime) -> None:
    """Wait until the line's lock request was answered and, if placed, released again."""
    locks = await cs.collateral(credit)
    if locks and locks[0]["status"] != "released":
        await credit.outcomes.wait(lambda s: s.type == "custody.lock.released", timeout=30)


async def test_a_lock_placed_after_the_line_gave_up_is_released(settings: Settings) -> None:
    """Deterministically the late path: the test answers the refresh as the custodian, keeps the
    lock request waiting past the deadline, then lets the real custody agent lock it."""
    await set_up(settings, timedelta(seconds=1))
    async with support.agents(settings, "investor", "exchange", "settlement", "credit") as rt:
        credit = rt["credit"]
        queue = Names(settings.namespace).inbox("custody")
        async with MerchantTerminal.connect(settings, "shop") as shop:
            await shop.request_purchase("late", cs.CARD, 200_000)
            lock_request = await _play_custody_until_the_lock_request(settings, queue, credit)
            answer = await shop.answer("late", timeout=30)  # the lock request was held back
            assert not answer.approved and "lock_refused" in (answer.detail or "")
            await support.publish(settings, lock_request.body, lock_request.headers, "custody")  # it arrives late
            async with support.agents(settings, "custody") as late:
                await credit.outcomes.wait(lambda s: s.type == "custody.lock.released", timeout=30)
                assert await cs.custody_positions(late["custody"]) == {cs.ISSUE_A: (6_000, 0), cs.ISSUE_B: (2_000, 0)}
        assert [c["status"] for c in await cs.collateral(credit)] == ["released"]
        assert await support.rows(credit, "SELECT * FROM obligations WHERE status = 'approved'") == []


async def _play_custody_until_the_lock_request(settings: Settings, queue: str, credit: AgentRuntime) -> Delivery:
    """Answer holdings requests off custody's queue as custody would; return the lock request."""
    reader = support.QueueReader(settings, queue)
    while True:
        delivery = await reader.next(timeout=20)
        request = json.loads(delivery.body)
        if request["type"] == "custody.lock.place":
            return delivery
        assert request["type"] == "custody.holdings.deltas_request"
        await _answer_refresh(settings, request, credit)


async def _answer_refresh(settings: Settings, request: dict[str, Any], credit: AgentRuntime) -> None:
    deltas = HoldingsDeltas(
        request_id=request["message_id"],
        client="alice",
        cursor=request["payload"]["cursor"],
        next_cursor=2,
        more=False,
        deltas=tuple(
            HoldingDelta(
                sequence=n,
                account="alice-sk",
                custodian="custody",
                issue_code=issue,
                balances=SubBalances(available=qty, locked=0, pending_delivery=0, pending_receipt=0),
                cause="deposit",
                changed_at=datetime.now(UTC),
            )
            for n, issue, qty in ((1, cs.ISSUE_A, 6_000), (2, cs.ISSUE_B, 2_000))
        ),
    )
    identity = KeyStore(settings.key_dir).load_identity("custody")
    sealed = seal(identity, deltas, recipient="credit", now=datetime.now(UTC))
    await support.publish_sealed(settings, sealed)
    await credit.outcomes.wait_for(sealed.envelope.message_id)
