"""Pruning of the inbox: rows older than the freshness window are deleted by a background job.

The inbox exists to refuse a message id seen before. Once a message is older than the
freshness window, ``broker.envelope`` refuses it as stale before the inbox is consulted,
so its row can go. A message accepted at ``received_at`` was created no later than
``received_at + max_skew`` (it may be dated that far in the future); it is stale for a
receiver whose clock reads more than ``created_at + max_age``. Rows are kept for
``max_age + 2 × max_skew``: one skew for the future-dated message, one for the difference
between the database's clock (``received_at``) and the agent's (the freshness check).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import asyncpg

from broker import logs
from broker.envelope import Freshness
from broker.progress import TaskBeat

log = logs.get("kabuto.pruning")


def inbox_horizon(freshness: Freshness) -> timedelta:
    """How long an inbox row must be kept for replays to be refused."""
    return freshness.max_age + 2 * freshness.max_skew


async def prune_inbox(pool: asyncpg.Pool, horizon: timedelta, *, batch: int = 5_000) -> int:
    """Delete inbox rows received more than ``horizon`` ago, in batches; return how many."""
    pruned = 0
    while True:
        deleted: int = await pool.fetchval(
            """WITH gone AS (
                   DELETE FROM inbox WHERE message_id IN (
                       SELECT message_id FROM inbox WHERE received_at < now() - $1::interval LIMIT $2)
                   RETURNING 1)
               SELECT count(*) FROM gone""",
            horizon,
            batch,
        )
        pruned += deleted
        if deleted < batch:
            return pruned


async def run_pruner(pool: asyncpg.Pool, freshness: Freshness, interval: timedelta, beat: TaskBeat) -> None:
    """Prune now and then every ``interval`` until cancelled."""
    beat.running()
    while True:
        with beat.busy():
            pruned = await prune_inbox(pool, inbox_horizon(freshness))
        if pruned:
            log.info("inbox_pruned", rows=pruned)
        await asyncio.sleep(interval.total_seconds())  # a schedule, not synchronisation
