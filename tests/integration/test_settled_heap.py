"""Issue 8 (docs/performance.md, "Stop 26"): once its agents are ready, a serving process moves
what it loaded out of the cyclic collector's sight, so a full collection no longer walks every
module, schema and key it holds (6–9 % of an agent's CPU during a burst, measured)."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from dataclasses import replace

import pytest

from agents.issuer.app import AGENT as ISSUER
from broker.runtime import serve
from broker.settings import Settings
from tests import support


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()  # what the test froze goes back to the collector, for the tests after it


async def test_a_serving_process_freezes_its_start_up_heap_once_its_agents_are_ready(
    settings: Settings, unfrozen: None
) -> None:
    assert gc.get_freeze_count() == 0
    stop = asyncio.Event()
    # No metrics server: a port found free and the one bound (the next, port_for) were two, and a
    # client socket of either test process could hold the second (review, -n 2).
    serving = asyncio.create_task(serve([ISSUER], replace(settings, metrics_port=0), stop))
    try:
        await support.eventually(lambda: gc.get_freeze_count() > 0 or serving.done(), timeout=60)
        assert not serving.done(), serving.exception()
        frozen = gc.get_freeze_count()
        assert frozen > 10_000  # the modules, schemas and keys loaded: far more than a handful
    finally:
        stop.set()
        await serving
