"""Inbox rows older than the freshness window are pruned (issue 13); a replay of a pruned
message is still refused, because by then the freshness check finds it stale."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

from agents.issuer.app import AGENT as AGENT_ISSUER
from broker.consumer import Outcome
from broker.errors import Reason
from broker.pruning import prune_inbox
from broker.runtime import AgentRuntime, running
from broker.settings import Settings
from tests import support


async def inbox_ids(issuer: AgentRuntime) -> set[str]:
    return {str(r["message_id"]) for r in await support.rows(issuer, "SELECT message_id FROM inbox")}


async def age_inbox_row(issuer: AgentRuntime, message_id: object, by: timedelta) -> None:
    await issuer.query(
        lambda c: c.execute("UPDATE inbox SET received_at = now() - $2::interval WHERE message_id = $1", message_id, by)
    )


async def test_a_pruned_message_replayed_later_is_refused_as_stale(settings: Settings, keys: Any) -> None:
    now = [datetime.now(UTC)]
    async with AgentRuntime(AGENT_ISSUER, settings, clock=lambda: now[0]) as issuer, running(issuer):
        await support.open_offering(issuer)
        alice = keys.load_identity("alice")
        old, recent = support.sealed_request(alice, shares=100), support.sealed_request(alice, shares=200)
        for sealed in (old, recent):
            await support.publish_sealed(settings, sealed)
            assert (await issuer.outcomes.wait_for(sealed.envelope.message_id)).outcome is Outcome.PROCESSED

        horizon = issuer.settings.inbox_horizon
        assert horizon == settings.max_message_age + 2 * settings.max_clock_skew
        await age_inbox_row(issuer, old.envelope.message_id, horizon + timedelta(minutes=1))
        assert await prune_inbox(issuer.pool, horizon) == 1
        assert await inbox_ids(issuer) == {str(recent.envelope.message_id)}

        now[0] += horizon + timedelta(minutes=1)  # the replay comes as late as the row was old
        await support.publish_sealed(settings, old)
        refused = await issuer.outcomes.wait(
            lambda s: s.message_id == str(old.envelope.message_id) and s.outcome is Outcome.DEAD_LETTERED
        )
        assert refused.reason is Reason.STALE_MESSAGE
        register = await support.rows(issuer, "SELECT shares FROM register ORDER BY shares")
        assert register == [{"shares": 100}, {"shares": 200}]  # nothing applied twice


async def test_rows_inside_the_window_are_kept_and_the_job_prunes_on_start(settings: Settings, keys: Any) -> None:
    async with AgentRuntime(AGENT_ISSUER, settings) as issuer:
        async with running(issuer):
            await support.open_offering(issuer)
            alice = keys.load_identity("alice")
            sent = [support.sealed_request(alice, shares=100) for _ in range(3)]
            for sealed in sent:
                await support.publish_sealed(settings, sealed)
                await issuer.outcomes.wait_for(sealed.envelope.message_id)
        horizon = issuer.settings.inbox_horizon
        await age_inbox_row(issuer, sent[0].envelope.message_id, horizon + timedelta(seconds=1))
        await age_inbox_row(issuer, sent[1].envelope.message_id, horizon - timedelta(minutes=1))
        restarted = time.monotonic()
        async with running(issuer):  # the pruner runs once at start, then every interval
            await issuer.heartbeats.beat("inbox-pruner").until_progress(restarted)
            assert await inbox_ids(issuer) == {str(s.envelope.message_id) for s in sent[1:]}
