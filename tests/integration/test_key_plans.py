"""The agents' set statements read by key once a table has a few thousand rows (docs/performance.md,
stop 42): the relay's mark and read of its outbox by sequence number, and the issuer's release of
a closed sell order's remainders by the order that committed them (migration 0082).

Before, at PostgreSQL's default page cost (4.0), the planner priced a few index probes above a
hash join over the whole table, and the release had no index to probe: the bench's database read
32 million tuples by sequential scans in 40 s at 100 trades/s. The plans are PostgreSQL's own
(``support.plan_nodes``, generic, as a prepared statement keeps them) in an agent's session.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from agents.investor.app import AGENT as AGENT_INVESTOR
from agents.issuer.app import AGENT as AGENT_ISSUER
from agents.issuer.repo import RELEASE_ALL
from broker import db
from broker.relay_window import MARK_AND_READ
from broker.runtime import AgentRuntime, started
from broker.settings import Settings
from tests import support

ROWS = 5000
EARLY_ROWS = 300


async def scans(pool: asyncpg.Pool, statement: str, *args: Any) -> list[tuple[str | None, str, str | None]]:
    """How the generic plan of ``statement`` reads tables and indexes: (table, node type, index);
    a bitmap index scan names its index only."""
    async with pool.acquire() as connection:
        nodes = await support.plan_nodes(connection, statement, *args, generic=True)
    return [
        (n.get("Relation Name"), n["Node Type"], n.get("Index Name"))
        for n in nodes
        if "Relation Name" in n or "Index Name" in n
    ]


async def test_the_agents_sessions_price_a_page_read_out_of_order_as_cached(settings: Settings) -> None:
    async with AgentRuntime(AGENT_INVESTOR, settings) as investor:
        assert await investor.pool.fetchval("SHOW random_page_cost") == db.RANDOM_PAGE_COST


async def test_the_relay_marks_and_reads_its_outbox_by_sequence_number(settings: Settings) -> None:
    """As a prepared statement plans it early in a day: a few hundred rows, not yet analyzed.
    At the default page cost that plan was a sequential scan, kept as the outbox grew."""
    admin = await asyncpg.connect(settings.database_url)
    try:
        await admin.execute(
            """INSERT INTO investor.outbox
                      (message_id, message_type, exchange, routing_key, body, headers, published_at)
               SELECT gen_random_uuid(), 'order.submit', 'messages', 'exchange', '\\x00', '{}', now()
               FROM generate_series(1, $1)""",
            EARLY_ROWS,
        )
        seqs = await admin.fetch("SELECT seq FROM investor.outbox ORDER BY seq DESC LIMIT 3")
    finally:
        await admin.close()
    async with AgentRuntime(AGENT_INVESTOR, settings) as investor:
        read = await scans(investor.pool, MARK_AND_READ, [r["seq"] for r in seqs], 100)
    assert ("outbox", "Seq Scan", None) not in read, read
    assert any(index == "outbox_pkey" for _, _, index in read), read


async def test_the_issuer_releases_a_sell_orders_remainders_by_the_order(settings: Settings) -> None:
    async with started([AGENT_ISSUER], settings) as rt:
        offer = await support.open_offering(rt["issuer"])
        admin = await asyncpg.connect(settings.database_url)
        try:
            await admin.execute(
                """INSERT INTO issuer.register (cert_id, issue_code, certificate_number, holder_user_id, holder_name,
                                                holder_address, shares, share_class, acquired_on,
                                                committed_by, committed_order)
                   SELECT gen_random_uuid(), $1, 'N' || n, 'seller', 'Seller', '1-1 Kabuto-cho', 100, 'common',
                          current_date, 'tse', n
                   FROM generate_series(1, $2) AS n""",
                offer.issue_code,
                ROWS,
            )
        finally:
            await admin.close()
        await support.analyze(settings, "issuer.register")
        read = await scans(rt["issuer"].pool, RELEASE_ALL, ["tse", "tse"], [17, 4242], ["seller", "seller"])
    assert ("register", "Seq Scan", None) not in read, read
    assert any(index == "register_committed" for _, _, index in read), read
