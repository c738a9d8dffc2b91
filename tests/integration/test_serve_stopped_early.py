"""``serve`` stopped before its agents are ready leaves nothing for asyncio to report.

Its readiness is a gather of every agent's consumer; cancelled while it waited, that gather ended
holding a CancelledError nobody retrieved, and asyncio reported "_GatheringFuture exception was
never retrieved" when it was collected (found by a suite-wide exception handler, stop 46).
"""

from __future__ import annotations

import asyncio
import gc
from typing import Any

from agents.issuer.app import AGENT as AGENT_ISSUER
from broker.runtime import serve
from broker.settings import Settings


async def test_serve_stopped_before_its_agents_are_ready_leaves_no_unretrieved_exception(settings: Settings) -> None:
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    handler = loop.get_exception_handler()
    gc.collect()  # what earlier tests left is collected (and reported) before this test listens
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        stop = asyncio.Event()
        stop.set()  # before it starts: it stops as soon as its agents are up, ready or not
        await serve([AGENT_ISSUER], settings, stop)
        gc.collect()
    finally:
        loop.set_exception_handler(handler)
    gathers = [c for c in reported if type(c.get("future")).__name__ == "_GatheringFuture"]
    assert gathers == [], gathers
