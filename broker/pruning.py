"""Pruning of the inbox and the outbox: rows past their use are deleted by a background job.

The inbox exists to refuse a message id seen before. Once a message is older than the
freshness window, ``broker.envelope`` refuses it as stale before the inbox is consulted,
so its row can go. A message accepted at ``received_at`` was created no later than
``received_at + max_skew`` (it may be dated that far in the future); it is stale for a
receiver whose clock reads more than ``created_at + max_age``. Rows are kept for
``max_age + 2 × max_skew``: one skew for the future-dated message, one for the difference
between the database's clock (``received_at``) and the agent's (the freshness check).

The outbox keeps a published row ``outbox_retention`` after its ``published_at`` (seven days
by default, never less than the inbox horizon: ``broker.settings`` refuses a shorter one), then
deletes it. By then every receiver refuses the message as stale, so nothing can still answer
it or deliver it again. Rows not yet published — pending, or parked as unroutable — are never
pruned, however old: they are work the relay or an operator still owes.
"""

from __future__ import annotations

from contextlib import nullcontext
from datetime import timedelta

import asyncpg

from broker import logs
from broker.progress import TaskBeat, pause

log = logs.get("kabuto.pruning")


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


# The rows are found through the partial index of published rows (migration 0077): without it,
# each pass read the whole outbox, days of messages, to find the last batch. `= ANY(ARRAY(…))`
# fetches each chosen row by its key; with `IN (…)` the planner hashed the batch and read the
# whole table to join it, once per batch (EXPLAIN on 200,000 rows: 200,000 rows read to delete
# 5,000). The DELETE checks the condition again: a row changed since the subquery read it (marked
# parked, say) is not deleted on the strength of the row it was. `failed_at IS NULL` keeps a row
# marked both published and parked, which parked.py once left behind, as the parked row it also is.
PRUNE_OUTBOX = """WITH gone AS (
        DELETE FROM outbox WHERE seq = ANY(ARRAY(
            SELECT seq FROM outbox WHERE published_at < now() - $1::interval AND failed_at IS NULL LIMIT $2))
            AND published_at < now() - $1::interval AND failed_at IS NULL
        RETURNING 1)
    SELECT count(*) FROM gone"""


async def prune_outbox(
    pool: asyncpg.Pool, retention: timedelta, *, batch: int = 5_000, beat: TaskBeat | None = None
) -> int:
    """Delete outbox rows published more than ``retention`` ago, in batches; return how many.

    Each batch is one unit of work of ``beat``: at the throughput Kabuto aims for, an hour's
    published rows take longer to delete than ``kabuto health`` allows one unit of work.
    """
    pruned = 0
    while True:
        with beat.busy() if beat else nullcontext():
            deleted: int = await pool.fetchval(PRUNE_OUTBOX, retention, batch)
        pruned += deleted
        if deleted < batch:
            return pruned


async def run_pruner(
    pool: asyncpg.Pool, inbox_horizon: timedelta, outbox_retention: timedelta, interval: timedelta, beat: TaskBeat
) -> None:
    """Prune the inbox and the outbox now and then every ``interval`` until cancelled."""
    beat.running()
    while True:
        with beat.busy():
            inbox = await prune_inbox(pool, inbox_horizon)
        if inbox:
            log.info("inbox_pruned", rows=inbox)
        outbox = await prune_outbox(pool, outbox_retention, beat=beat)
        if outbox:
            log.info("outbox_pruned", rows=outbox)
        await pause(interval.total_seconds())
