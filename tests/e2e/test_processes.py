"""``kabuto run`` as an operator runs it: a real process, stopped by a signal."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

from agents.investor.app import request_certificates
from agents.issuer import repo as issuer_repo
from broker import ops
from broker.db import agent_pool
from broker.pki import KeyStore
from broker.runtime import execute, run_as
from broker.settings import AGENT_IDS, Settings
from broker.trust import TrustStore
from tests import support


@asynccontextmanager
async def kabuto_run(settings: Settings, agent: str = "all") -> AsyncIterator[asyncio.subprocess.Process]:
    """Start ``kabuto run AGENT`` and wait until it logs that its agents are ready."""
    process = await support.kabuto_process(settings, "run", agent)
    assert process.stderr is not None
    expected = sorted(AGENT_IDS) if agent == "all" else [agent]
    async with asyncio.timeout(120):  # each agent's process says it is ready, then `run all` for all of them
        while not (b'"agents_ready"' in (line := await process.stderr.readline()) and _agents(line) == expected):
            assert line, "kabuto run exited before its agents were ready"
    drain = asyncio.create_task(process.stderr.read())  # keep the pipe from filling up
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await drain


def _agents(line: bytes) -> list[str]:
    try:
        return sorted(json.loads(line).get("agents", []))
    except ValueError:  # not one JSON object: not the line looked for
        return []


async def stop(process: asyncio.subprocess.Process, sig: signal.Signals) -> int:
    process.send_signal(sig)
    async with asyncio.timeout(30):
        return await process.wait()


async def test_run_all_starts_every_agent_and_sigterm_stops_it_cleanly(settings: Settings) -> None:
    async with kabuto_run(settings) as process:
        status = await ops.status(settings, AGENT_IDS)
        assert [(s.agent, s.consumers, s.dead_letters) for s in status] == [(agent, 1, 0) for agent in AGENT_IDS]
        assert await stop(process, signal.SIGTERM) == 0


async def test_sigint_stops_a_single_agent_cleanly(settings: Settings) -> None:
    async with kabuto_run(settings, "settlement") as process:
        status = await ops.status(settings, ["settlement"])
        assert status[0].consumers == 1
        assert await ops.health(settings, "settlement") == []
        assert await stop(process, signal.SIGINT) == 0
    after = await ops.health(settings, "settlement")
    assert after[0] == f"nothing consumes {settings.namespace}.settlement or {settings.namespace}.settlement.answers"
    assert "the agent was stopped" in after[1]
    assert "never started" in (await ops.health(settings, "credit"))[0]


async def test_work_committed_before_a_stop_is_delivered_after_the_restart(settings: Settings) -> None:
    keys = KeyStore(settings.key_dir)
    async with kabuto_run(settings) as process:
        offer = support.offering()  # opened as the CLI's commands run: no second issuer instance
        await run_as(settings, "issuer", "issuer", lambda ctx: issuer_repo.open_offering(ctx.connection, offer))
        async with agent_pool(settings.database_url, "investor", max_size=1) as pool:
            request_id = await execute(
                pool,
                keys.load_identity("alice"),
                TrustStore(keys.ca_certificate(), keys.certificates()),  # settlement's certificate, as the agent has
                request_certificates(support.order()),
                datetime.now(UTC),
            )
        assert await stop(process, signal.SIGTERM) == 0

    async with support.agents(settings, "investor", "issuer", "exchange") as rt:
        requests = await support.rows(rt["investor"], "SELECT status FROM requests WHERE request_id = $1", request_id)
        if requests != [{"status": "fulfilled"}]:  # not finished before the stop: it finishes now
            await rt["investor"].outcomes.reply("certificate.issued", request_id)
        wallet = await support.rows(rt["investor"], "SELECT holder_user_id, shares FROM wallet")
        register = await support.rows(rt["issuer"], "SELECT holder_user_id, shares FROM register")
    assert wallet == register == [{"holder_user_id": "alice", "shares": 500}]


async def kabuto_run_refused(settings: Settings, agent: str) -> str:
    """Run ``kabuto run AGENT`` while another instance holds a lease it needs: it must exit 4
    within its one-second wait; returns its stderr."""
    process = await support.kabuto_process(settings, "run", agent, KABUTO_INSTANCE_WAIT="1")
    async with asyncio.timeout(60):
        _, stderr = await process.communicate()
    assert process.returncode == 4, stderr.decode()[-2000:]
    return stderr.decode()


def refusal(settings: Settings, agent: str) -> str:
    return (
        f"kabuto: InstanceHeld: another instance of the {agent} agent is running, or its last connection is not "
        f"yet dropped by the broker: the lease {settings.namespace}.{agent}.instance is held by another "
        "connection, and was still after 1 s"
    )


async def test_a_second_kabuto_run_of_an_agent_is_refused_and_a_killed_one_gives_way_to_its_restart(
    settings: Settings,
) -> None:
    """One instance of each agent (broker/instance.py): an operator's second ``kabuto run`` of a
    running agent stops with the reason (exit 4) and never consumes; after a kill -9 the restart
    takes the lease the broker freed."""
    async with kabuto_run(settings, "settlement") as first:
        assert refusal(settings, "settlement") in await kabuto_run_refused(settings, "settlement")
        assert (await ops.status(settings, ["settlement"]))[0].consumers == 1
        assert await ops.health(settings, "settlement") == []
        first.kill()
        await first.wait()
    async with kabuto_run(settings, "settlement") as restarted:  # ready: it holds the lease and consumes
        assert (await ops.status(settings, ["settlement"]))[0].consumers == 1
        assert await stop(restarted, signal.SIGTERM) == 0


async def test_a_second_kabuto_run_all_starts_no_agent_and_exits_4(settings: Settings) -> None:
    """Found by review: a second ``kabuto run all`` started every child, each waited for its lease,
    failed and was restarted for ever, and the first instance's consumers made it log that its
    agents were ready. It now looks at every lease before it starts any child."""
    async with kabuto_run(settings, "settlement"):
        stderr = await kabuto_run_refused(settings, "all")
        assert refusal(settings, "settlement") in stderr
        assert '"child_started"' not in stderr and '"agents_ready"' not in stderr
        status = await ops.status(settings, AGENT_IDS)
        # No other agent's queue was even declared: no child started.
        assert {s.agent: s.consumers for s in status} == {a: 1 if a == "settlement" else None for a in AGENT_IDS}
