"""Issue 8 (docs/performance.md, "Stop 26"): once its agents are ready, a serving process moves
what it loaded out of the cyclic collector's sight, so a full collection no longer walks every
module, schema and key it holds (6–9 % of an agent's CPU during a burst, measured)."""

from __future__ import annotations

import asyncio
import gc
import socket
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def test_a_serving_process_freezes_its_start_up_heap_once_its_agents_are_ready(
    settings: Settings, unfrozen: None
) -> None:
    assert gc.get_freeze_count() == 0
    stop = asyncio.Event()
    serving = asyncio.create_task(serve([ISSUER], replace(settings, metrics_port=free_port()), stop))
    try:
        await support.eventually(lambda: gc.get_freeze_count() > 0 or serving.done(), timeout=60)
        assert not serving.done(), serving.exception()
        frozen = gc.get_freeze_count()
        assert frozen > 10_000  # the modules, schemas and keys loaded: far more than a handful
    finally:
        stop.set()
        await serving
