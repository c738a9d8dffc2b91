"""The outbox's figures (metrics, `kabuto status`, `watch`) read only the rows they count
(issue 8, migration 0076): the outbox keeps every row it published, and a count that read them
all cost 64 ms a sample after a minute of order entry, growing with history."""

from __future__ import annotations

from typing import Any

from broker.metrics import OUTBOX_FIGURES, outbox_figures
from broker.runtime import AgentRuntime
from broker.settings import Settings
from tests import support


async def test_the_figures_count_pending_and_parked_rows_without_reading_the_published_history(
    settings: Settings,
) -> None:
    async with AgentRuntime(support.AGENTS["issuer"], settings) as issuer:
        async with issuer.pool.acquire() as connection:
            await connection.execute(
                """INSERT INTO outbox (message_id, message_type, exchange, routing_key, body, headers,
                                       created_at, published_at, failed_at, error)
                   SELECT gen_random_uuid(), 't', 'messages', 'k', '\\x00', '{}',
                          now() - interval '1 minute',
                          CASE WHEN n > 4 THEN now() END,
                          CASE WHEN n = 4 THEN now() END,
                          CASE WHEN n = 4 THEN 'unroutable' END
                   FROM generate_series(1, 5000) AS n"""
            )
            await support.analyze(settings, "issuer.outbox")
            nodes = await support.plan_nodes(connection, OUTBOX_FIGURES)
        figures = await outbox_figures(issuer.pool)
    assert (figures.pending, figures.parked) == (3, 1)
    assert figures.lag is not None and figures.lag.total_seconds() >= 60
    read: Any = [n for n in nodes if n.get("Relation Name") == "outbox"]
    assert read and all(n["Node Type"] != "Seq Scan" for n in read), [n["Node Type"] for n in read]
    assert sum(n["Actual Rows"] * n["Actual Loops"] for n in read) <= 4  # the rows counted, not 5,000
