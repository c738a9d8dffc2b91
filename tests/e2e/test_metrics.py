"""The Prometheus endpoint of a running ``kabuto run`` process, scraped over HTTP as Prometheus would
(issue 10): the counters, the latency histogram and the sampled gauges move with the traffic."""

from __future__ import annotations

import asyncio
import socket
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime

from prometheus_client.parser import text_string_to_metric_families

from agents.investor.trading import inquire_account
from broker.db import agent_pool
from broker.pki import KeyStore
from broker.runtime import execute
from broker.settings import AGENT_IDS, Settings
from broker.trust import TrustStore
from tests import support

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@asynccontextmanager
async def kabuto_run_with_metrics(settings: Settings, port: int) -> AsyncIterator[None]:
    """``kabuto run all --in-process`` serving its metrics on ``port``: KABUTO_METRICS_PORT + 7 for
    several agents in one process."""
    env = support.environment(settings) | {
        "KABUTO_METRICS_PORT": str(port - len(AGENT_IDS)),
        "KABUTO_METRICS_INTERVAL": "0.2",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agents.cli", "run", "all", "--in-process", env=env, stderr=asyncio.subprocess.PIPE
    )
    assert process.stderr is not None
    async with asyncio.timeout(30):
        while b'"agents_ready"' not in (line := await process.stderr.readline()):
            assert line, "kabuto run exited before its agents were ready"
    drain = asyncio.create_task(process.stderr.read())
    try:
        yield
    finally:
        process.terminate()
        assert await process.wait() == 0
        await drain


async def scrape(port: int) -> Samples:
    def get() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            return str(response.read().decode())

    text = await asyncio.to_thread(get)
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def scrape_until(port: int, ready: Callable[[Samples], bool], timeout: float = 20) -> Samples:
    """Scrape until ``ready`` holds: the figures are only observable over HTTP."""
    async with asyncio.timeout(timeout):
        while True:
            samples = await scrape(port)
            if ready(samples):
                return samples
            await asyncio.sleep(0.1)  # nothing to wait on across the process boundary but the endpoint


async def test_scraped_metrics_move_with_messages_handled_rejected_and_dead_lettered(settings: Settings) -> None:
    port = free_port()
    async with kabuto_run_with_metrics(settings, port):
        # Sampled agent by agent: a first round may find one consumer not yet registered.
        before = await scrape_until(
            port, lambda s: all(value(s, "kabuto_inbox_consumers", agent=a) == 1 for a in AGENT_IDS)
        )
        assert value(before, "kabuto_dead_letters", agent="settlement") == 0

        keys = KeyStore(settings.key_dir)
        trust = TrustStore(keys.ca_certificate(), keys.certificates())
        async with agent_pool(settings.database_url, "investor", max_size=1) as pool:
            await execute(pool, keys.load_identity("alice"), trust, inquire_account("alice-cash"), datetime.now(UTC))
        await support.publish(settings, b"not a kabuto message", {}, "settlement", "garbage-1")

        inquiry = {"agent": "settlement", "type": "account.inquiry"}
        statement = {"agent": "investor", "type": "account.statement"}
        after = await scrape_until(
            port,
            lambda s: (
                value(s, "kabuto_messages_handled_total", **inquiry, outcome="processed") == 1
                and value(s, "kabuto_dead_letters", agent="settlement") == 1
                and value(s, "kabuto_messages_handled_total", **statement, outcome="processed") == 1
                and value(s, "kabuto_consumer_batch_deliveries_sum", agent="settlement") == 2
                and value(s, "kabuto_consumer_batch_deliveries_sum", agent="investor") == 1
                and value(s, "kabuto_outbox_published_total", agent="investor", type="account.inquiry") == 1
                and value(s, "kabuto_outbox_published_total", agent="settlement", type="account.statement") == 1
            ),
        )
        # The outbox gauges, from samples begun after both rows were written: a relay marks what was
        # confirmed on its next round, so the statement can be handled before its row reads published.
        handled = time.time()
        drained = await scrape_until(
            port,
            lambda s: (
                all(value(s, "kabuto_gauges_sampled_timestamp_seconds", agent=a) > handled for a in AGENT_IDS)
                and value(s, "kabuto_outbox_pending", agent="settlement") == 0
                and value(s, "kabuto_outbox_lag_seconds", agent="investor") == 0
            ),
        )
        assert value(drained, "kabuto_outbox_parked", agent="settlement") == 0
    assert value(after, "kabuto_handler_seconds_count", **inquiry) == 1
    assert value(after, "kabuto_handler_seconds_bucket", **inquiry, le="+Inf") == 1
    rejected = [k for k, v in after.items() if k[0] == "kabuto_messages_rejected_total" and v == 1]
    assert [dict(labels)["agent"] for _, labels in rejected] == ["settlement"]
    reason = dict(rejected[0][1])["reason"]
    assert value(after, "kabuto_messages_dead_lettered_total", agent="settlement", reason=reason) == 1
    # Each consumer's batches (the garbage and the inquiry, together or apart) and the time they took.
    assert value(after, "kabuto_consumer_batch_deliveries_count", agent="settlement") in (1, 2)
    assert value(after, "kabuto_consumer_batch_deliveries_count", agent="investor") == 1
    assert value(after, "kabuto_consumer_batch_deliveries_bucket", agent="investor", le="1.0") == 1
    assert value(after, "kabuto_consumer_busy_seconds_total", agent="settlement") > 0
    # Every statement of an agent's pool counts, from its start on; settling a delivery alone is
    # at least four (BEGIN, the handler's, the inbox claimed with the outbox rows, COMMIT), and
    # its relay reads what it stored.
    for agent in ("investor", "settlement"):
        started = value(before, "kabuto_db_statements_total", agent=agent)
        assert started > 0
        assert value(after, "kabuto_db_statements_total", agent=agent) >= started + 5
