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
(``AgentRuntime._open_session``), so an agent never consumes without it, and loses it with the
session that consumed.

While another connection holds it, a session waits, up to ``wait``, looking again every
``EVERY`` seconds. The holder may be this agent's own last connection: after a kill -9 the
broker deletes the queue a moment after the restart looks, and a connection left half-open is
noticed only by its missed heartbeats (RabbitMQ's default timeout is 60 s). Past the wait it
raises ``InstanceHeld``. That is not an outage the supervisor waits out: the agent stops and
says which instance it gave way to (exit 1, the reason on stderr).
"""

from __future__ import annotations

import asyncio
import time

import aiormq
from aio_pika.abc import AbstractConnection

from broker import logs
from broker.errors import KabutoError
from broker.topology import Names

EVERY = 0.2  # seconds between two looks at a held lease

log = logs.get("kabuto.instance")


class InstanceHeld(KabutoError):
    """Another connection holds the agent's lease: another instance of the agent is running."""


async def take(connection: AbstractConnection, names: Names, agent: str, wait: float) -> None:
    """Hold ``agent``'s lease for as long as ``connection`` is open; ``InstanceHeld`` if another
    connection still held it after ``wait`` seconds."""
    name = names.instance(agent)
    deadline = time.monotonic() + wait
    waiting = False
    while True:
        try:
            await _declare(connection, name)
        except aiormq.exceptions.ChannelLockedResource as exc:
            if time.monotonic() >= deadline:
                raise InstanceHeld(
                    f"another instance of the {agent} agent is running: the broker's lease {name} "
                    f"is held by another connection, and was still after {wait:g} s"
                ) from exc
            if not waiting:
                waiting = True
                log.warning("instance_lease_held", agent=agent, lease=name, waiting_up_to_s=wait)
            await asyncio.sleep(EVERY)
        else:
            if waiting:
                log.info("instance_lease_taken", agent=agent, lease=name)
            return


async def _declare(connection: AbstractConnection, name: str) -> None:
    # A refused declaration closes its channel: each look gets a channel of its own.
    channel = await connection.channel(publisher_confirms=False)
    try:
        await channel.declare_queue(name, exclusive=True, auto_delete=True, arguments={"x-queue-type": "classic"})
    finally:
        if not channel.is_closed:
            await channel.close()
