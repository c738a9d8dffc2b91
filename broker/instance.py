"""One running instance of each agent: a lease held on the broker, taken by every session.

Two processes of one agent on the same queues would break what the runtime rests on: each book
and account decided in the order its messages arrive (one consumer), the group commit's claim
at the end of a batch (two runs of one delivery at once no longer wait for each other there:
docs/decisions.md, issue 8), and each background job run once. Before this, nothing refused a
second ``kabuto run exchange`` started by mistake.

The lease is an exclusive queue, ``<namespace>.<agent>.instance``, that carries nothing. The
broker lets only the connection that declared it use it, refuses any other connection's
declaration (``RESOURCE_LOCKED``), and deletes it when that connection closes: a process
stopped, killed or cut off. A session takes the lease before it declares or consumes anything
(``AgentRuntime._open_session``), and a background job's round starts only on a session
(``AgentRuntime.round_of``), so an agent consumes and starts a job's round only on a session
that took it (a session half-open on both sides looks live to its client for up to half a minute
after the broker dropped it: docs/resilience.md says what that leaves).

While another connection holds it, a session waits, up to ``wait``, looking again every
``EVERY`` seconds. The holder may be this agent's own last connection: after a kill -9 the
broker deletes the queue a moment after the restart looks, and a connection left half-open is
dropped only once it has sent nothing for two to three heartbeat intervals (RabbitMQ's
``rabbit_heartbeat``), which is why agents ask for a heartbeat of ``HEARTBEAT`` seconds rather
than the broker's 60 (up to 180 s). Past the wait it raises ``InstanceHeld``. That is not an
outage the supervisor waits out: the agent stops, exit 4, and says which lease it gave way to.
``kabuto run all`` looks at every agent's lease before it starts any (``until_free``).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qs, urlsplit

import aiormq
from aio_pika.abc import AbstractConnection

from broker import logs
from broker.supervision import AgentFailed
from broker.topology import Names

EVERY = 0.2  # seconds between two looks at a held lease
# The heartbeat (seconds) an agent's broker connection asks for, unless its URL names one: a
# connection left half-open holds the lease for two to three of them (the default wait is 90 s).
HEARTBEAT = 20

log = logs.get("kabuto.instance")


class InstanceHeld(AgentFailed):
    """Another connection holds the agent's lease: another instance of the agent is running (or
    its own last connection is not dropped yet). The agent stops; under a supervisor, a standby."""


def heartbeat_of(url: str) -> dict[str, int]:
    """The connection option asking for ``HEARTBEAT``, unless ``url`` names a heartbeat itself."""
    return {} if "heartbeat" in parse_qs(urlsplit(url).query) else {"heartbeat": HEARTBEAT}


async def take(connection: AbstractConnection, names: Names, agent: str, wait: float) -> None:
    """Hold ``agent``'s lease for as long as ``connection`` is open; ``InstanceHeld`` if another
    connection still held it after ``wait`` seconds."""
    name = names.instance(agent)
    await _once_free(functools.partial(_declare, connection, name), agent, name, time.monotonic() + wait, wait)


async def until_free(connection: AbstractConnection, names: Names, agent: str, wait: float, deadline: float) -> None:
    """Return once no connection holds ``agent``'s lease (looked at, not taken); ``InstanceHeld``
    at ``deadline`` (monotonic) of a ``wait`` shared by several agents: the look a supervisor
    takes before it starts the agents, so that a second ``kabuto run all`` starts none of them
    (``broker.ops.none_running``)."""
    name = names.instance(agent)
    await _once_free(functools.partial(_look, connection, name), agent, name, deadline, wait)


async def _once_free(
    attempt: Callable[[], Awaitable[None]], agent: str, name: str, deadline: float, wait: float
) -> None:
    waiting = False
    while True:
        try:
            await attempt()
        except aiormq.exceptions.ChannelLockedResource as exc:
            if time.monotonic() >= deadline:
                raise InstanceHeld(
                    f"another instance of the {agent} agent is running, or its last connection is not yet "
                    f"dropped by the broker: the lease {name} is held by another connection, and was still "
                    f"after {wait:g} s"
                ) from exc
            if not waiting:
                waiting = True
                log.warning("instance_lease_held", agent=agent, lease=name, waiting_up_to_s=wait)
            await asyncio.sleep(EVERY)
        else:
            if waiting:
                log.info("instance_lease_free", agent=agent, lease=name)
            return


async def _declare(connection: AbstractConnection, name: str) -> None:
    # A refused declaration closes its channel: each look gets a channel of its own.
    channel = await connection.channel(publisher_confirms=False)
    try:
        await channel.declare_queue(name, exclusive=True, auto_delete=True, arguments={"x-queue-type": "classic"})
    finally:
        if not channel.is_closed:
            await channel.close()


async def _look(connection: AbstractConnection, name: str) -> None:
    """Raises ``ChannelLockedResource`` if a connection holds the lease ``name``."""
    channel = await connection.channel(publisher_confirms=False)
    try:
        await channel.declare_queue(name, passive=True)
    except aiormq.exceptions.ChannelNotFoundEntity:
        return  # no lease: nobody runs the agent
    finally:
        if not channel.is_closed:
            await channel.close()
