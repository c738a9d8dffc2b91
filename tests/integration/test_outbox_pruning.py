"""Outbox rows published longer ago than the retention are pruned by the agent's pruner task;
rows not yet published — pending, or parked as unroutable — stay however old they are, and a
command waiting on a pruned message is told it was published. The refusal of a retention shorter
than the inbox horizon is in tests/unit/test_settings.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from structlog.testing import capture_logs

from agents.investor import answer_repo
from agents.investor.lifecycle import hand_over
from agents.registry import AGENTS
from broker.awaiting import Sent, Verdict, outcome
from broker.db import agent_pool
from broker.pruning import PRUNE_OUTBOX, prune_outbox
from broker.runtime import AgentRuntime, execute, running
from broker.settings import Settings
from tests import support
from tests.integration.test_lifecycle_refusals import issued

WEEK = timedelta(days=7)
LONG_AGO = timedelta(days=365)
MINUTE = timedelta(minutes=1)


async def add_row(
    runtime: AgentRuntime,
    label: str,
    *,
    published: timedelta | None = None,
    failed: timedelta | None = None,
    created: timedelta = LONG_AGO,
) -> None:
    """An outbox row of type ``test.<label>``, written and, if given, published or parked that long ago."""
    await runtime.query(
        lambda c: c.execute(
            """INSERT INTO outbox (message_id, message_type, exchange, routing_key, body, headers,
                                   created_at, published_at, failed_at, error)
               VALUES (gen_random_uuid(), 'test.' || $1, 'messages', 'nobody', '\\x00', '{}',
                       now() - $2::interval, now() - $3::interval, now() - $4::interval,
                       CASE WHEN $4::interval IS NOT NULL THEN 'unroutable: no queue for nobody' END)""",
            label,
            created,
            published,
            failed,
        )
    )


async def labels(runtime: AgentRuntime) -> list[str]:
    found = await support.rows(runtime, "SELECT message_type FROM outbox WHERE message_type LIKE 'test.%' ORDER BY seq")
    return [r["message_type"].removeprefix("test.") for r in found]


async def test_rows_published_longer_ago_than_the_retention_go_and_newer_ones_stay(settings: Settings) -> None:
    async with AgentRuntime(AGENTS["issuer"], settings) as issuer:
        await add_row(issuer, "old", published=WEEK + MINUTE)
        await add_row(issuer, "recent", published=WEEK - MINUTE, created=WEEK)
        await add_row(issuer, "older", published=WEEK + timedelta(days=30))
        await add_row(issuer, "new", published=timedelta(0), created=timedelta(0))

        assert await prune_outbox(issuer.pool, WEEK) == 2
        assert await labels(issuer) == ["recent", "new"]


async def test_pending_and_parked_rows_stay_however_old_they_are(settings: Settings) -> None:
    async with AgentRuntime(AGENTS["issuer"], settings) as issuer:
        await add_row(issuer, "pending")
        await add_row(issuer, "parked", failed=LONG_AGO)
        # Marked both published and parked, as parked.py once left a row it sent again: still parked.
        await add_row(issuer, "published-and-parked", published=LONG_AGO, failed=LONG_AGO)
        await add_row(issuer, "published", published=LONG_AGO)

        assert await prune_outbox(issuer.pool, WEEK) == 1
        assert await labels(issuer) == ["pending", "parked", "published-and-parked"]


async def test_a_pass_goes_on_past_the_first_batch_until_nothing_is_left(settings: Settings) -> None:
    async with AgentRuntime(AGENTS["issuer"], settings) as issuer:
        for n in range(7):
            await add_row(issuer, f"old-{n}", published=WEEK + MINUTE)
        await add_row(issuer, "recent", published=MINUTE)

        assert await prune_outbox(issuer.pool, WEEK, batch=3) == 7  # batches of 3, 3 and 1
        assert await labels(issuer) == ["recent"]


async def test_a_batch_reads_the_rows_it_deletes_not_the_published_history(settings: Settings) -> None:
    async with AgentRuntime(AGENTS["issuer"], settings) as issuer:
        async with issuer.pool.acquire() as connection:
            await connection.execute(
                """INSERT INTO outbox (message_id, message_type, exchange, routing_key, body, headers,
                                       created_at, published_at)
                   SELECT gen_random_uuid(), 'test.history', 'messages', 'k', '\\x00', '{}', now() - interval '9 days',
                          now() - CASE WHEN n <= 1000 THEN interval '8 days' ELSE interval '1 day' END
                   FROM generate_series(1, 5000) AS n"""
            )
            await support.analyze(settings, "issuer.outbox")  # as autovacuum would
            # A batch a fifth of the table: where `seq IN (…)` hashed the batch and read every row.
            nodes = await support.plan_nodes(connection, PRUNE_OUTBOX, WEEK, 1_000)
    read: Any = [n for n in nodes if n.get("Relation Name") == "outbox"]
    assert read and all(n["Node Type"] != "Seq Scan" for n in read), [n["Node Type"] for n in read]
    assert sum(n["Actual Rows"] * n["Actual Loops"] for n in read) <= 3 * 1_000  # found, fetched, deleted


async def test_the_agents_pruner_prunes_the_outbox_at_start_and_logs_how_many(settings: Settings) -> None:
    async with AgentRuntime(AGENTS["issuer"], settings) as issuer:
        await add_row(issuer, "old", published=settings.outbox_retention + MINUTE)
        await add_row(issuer, "older", published=settings.outbox_retention + timedelta(days=1))
        await add_row(issuer, "recent", published=settings.outbox_retention - MINUTE)

        with capture_logs() as logged:
            async with running(issuer):  # the pruner runs once at start, then every interval

                def pruned() -> bool:
                    return any(e["event"] == "outbox_pruned" for e in logged)

                await support.eventually(pruned)
        assert [e["rows"] for e in logged if e["event"] == "outbox_pruned"] == [2]
        assert await labels(issuer) == ["recent"]


async def test_a_hand_over_waited_on_while_its_agent_is_down_is_not_reported_published(settings: Settings) -> None:
    """A hand-over not yet relayed is reported still in the outbox, not published and pruned (a
    review of a first version that read a missing row as pruned found the hand-over's wait, which
    then looked for its row under an id no row had)."""
    async with support.agents(settings, "investor", "issuer", "exchange") as rt:
        await support.open_offering(rt["issuer"])
        cert_id = await issued(rt)
        alice, trust = rt["investor"].identities["alice"], rt["investor"].trust
    # Every agent is stopped now: nothing relays what the command writes.
    async with agent_pool(settings.database_url, "investor", max_size=1) as pool:
        handover_id = await execute(pool, alice, trust, hand_over(cert_id, "bob"), datetime.now(UTC))
        pending = await pool.fetchval(
            """SELECT count(*) FROM outbox WHERE message_type = 'certificate.handover'
               AND published_at IS NULL AND failed_at IS NULL"""
        )
        assert pending == 1
        sent = Sent("investor", handover_id, "investor", answer_repo.handover(handover_id))
        answer = await outcome(settings, pool, sent, timeout=0.5)
    assert answer.verdict is Verdict.TIMED_OUT
    assert "still in the investor outbox" in answer.summary, answer.summary
