"""The event loop a Kabuto process runs on (issue 8, docs/performance.md).

uvloop by default: every hop is socket work — asyncpg statements, AMQP frames, the relay's
publishes — and uvloop's transports do it in C where asyncio's selector loop does it in Python.
``KABUTO_EVENT_LOOP=asyncio`` runs the standard library's loop instead (to compare, or where
uvloop does not build); both run the same code, and the tests run on the one configured.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar, get_args

T = TypeVar("T")

EventLoop = Literal["uvloop", "asyncio"]
EVENT_LOOPS: tuple[str, ...] = get_args(EventLoop)
LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def abandon(future: asyncio.Future[Any]) -> None:
    """Cancel a future nobody will await any more, and retrieve what it ends with: a gather
    cancelled while its children run ends holding a CancelledError, which asyncio otherwise
    reports as "exception was never retrieved" when it is collected."""
    future.cancel()
    future.add_done_callback(_retrieved)


def _retrieved(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def factory(name: EventLoop) -> LoopFactory:
    """A new loop of the named kind."""
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return asyncio.new_event_loop


def run(main: Coroutine[Any, Any, T], name: EventLoop) -> T:
    """``asyncio.run`` on the named loop (Python 3.11 has no ``loop_factory`` on ``asyncio.run``)."""
    with asyncio.Runner(loop_factory=factory(name)) as runner:
        return runner.run(main)


def settle_heap() -> None:
    """Once a process has started (its modules imported, its schemas, keys and topology loaded),
    move what it holds out of the cyclic garbage collector's sight (``gc.freeze``).

    Those objects live as long as the process, yet every full collection walked all of them:
    during a 1,000-trade burst the agents spent 6–9 % of their CPU in the collector, a full
    collection taking about a quarter of a second of one agent's event loop (docs/performance.md,
    "Stop 26"). Frozen, they are never scanned; what the process allocates afterwards is collected
    as before.
    """
    gc.collect()
    gc.freeze()
