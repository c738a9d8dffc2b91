"""The credit agent's periodic work: lapse uncaptured approvals, abandon inquiries whose
custodians fell silent, and refresh every purchaser's holdings (R-003-24, Fig. 16)."""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID

import asyncpg

from agents.credit import card_issuer, line, line_repo, prices
from broker import logs
from broker.context import Context
from broker.progress import pause
from broker.runtime import AgentRuntime
from schemas.identity import CARD_ISSUER_ID, CREDIT_ID

log = logs.get("kabuto.credit.jobs")
EVERY = timedelta(seconds=5)


async def refresh_due(ctx: Context) -> list[UUID]:
    """S6000/S6010: ask each custodian of each purchaser not refreshed within the interval;
    returns the requests' ids (each answer comes back in that conversation)."""
    policy = await line_repo.policy(ctx.connection)
    if policy is None:
        return []
    due = await ctx.connection.fetch(
        """UPDATE purchasers SET last_refresh = $1
           WHERE last_refresh IS NULL OR last_refresh <= $1::timestamptz - $2::interval RETURNING purchaser""",
        ctx.now,
        policy.refresh_interval,
    )
    asked = []
    for row in due:
        contract = await line_repo.purchaser(ctx.connection, row["purchaser"])
        assert contract is not None
        for custodian, cursor in contract.custodians:
            asked.append(await line.request_refresh(ctx, contract.purchaser, custodian, cursor, None))
    return asked


async def housekeeping(runtime: AgentRuntime) -> None:
    """Background: subscribe to the exchange's prices once, then the periodic work, for ever."""
    async with runtime.round_of(housekeeping):  # on a session, as every round: with the agent's lease
        await runtime.command(CREDIT_ID, prices.subscribe)
    while True:
        try:
            async with runtime.round_of(housekeeping):
                await runtime.command(CARD_ISSUER_ID, card_issuer.expire_uncaptured())
                await runtime.command(CREDIT_ID, line.abandon_overdue)
                await runtime.command(CREDIT_ID, refresh_due)
        except (asyncpg.PostgresConnectionError, OSError) as exc:  # the database or the broker is away: next round
            log.warning("housekeeping_postponed", error=str(exc))
        await pause(EVERY.total_seconds())
