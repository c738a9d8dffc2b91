"""An agent's link to the broker: one session at a time, replaced when it is lost.

A ``BrokerSession`` is a plain (not robust) aio-pika connection, one confirming channel on
it, the exchanges and the agent's queues declared through that channel (the answers queue is
consumed on a channel of its own). The consumer acks and the relay publishes on it. When
either finds it closed (the broker stopped, the connection was cut or forced closed, a channel
error), its supervisor asks the ``BrokerLink`` for the current session, which opens and
declares a new one — the same code path as the first start, so a reconnection restores the
whole topology.

Why not ``aio_pika.connect_robust``: its reconnection is invisible to the code above it,
so deliveries taken on the old channel still fail to ack, publishes during the gap still
raise, and nothing could tell ``kabuto health`` that the agent is waiting for the broker.
One explicit loop handles first start, reconnection and reporting the same way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractQueue

from broker import amqp_values, logs
from broker.topology import Exchanges

log = logs.get("kabuto.link")
# Every connection is made here: header values pamqp would fail a frame on are read (B95).
amqp_values.install()


async def connect(url: str, **options: Any) -> AbstractConnection:
    """``aio_pika.connect``, with a broker that closes the socket before its handshake as the
    connection error it is. aiormq raises ``StopAsyncIteration`` when the socket is at its end
    before the first frame — seen under uvloop in ``make chaos`` while the broker restarted,
    where the agents exited instead of waiting for it."""
    try:
        connection: AbstractConnection = await aio_pika.connect(url, **options)
    except StopAsyncIteration as exc:
        raise aiormq.exceptions.AMQPConnectionError("the broker closed the connection before its handshake") from exc
    return connection


@dataclass(frozen=True, slots=True)
class BrokerSession:
    connection: AbstractConnection
    channel: AbstractChannel
    exchanges: Exchanges
    inbox: AbstractQueue
    # Consumed on a channel of its own: acks of one channel acknowledge its deliveries in
    # order (``multiple``), and the answers are taken ahead of the inbox's older deliveries.
    answers: AbstractQueue

    @property
    def is_closed(self) -> bool:
        return bool(self.connection.is_closed or self.channel.is_closed or self.answers.channel.is_closed)

    async def close(self) -> None:
        await close_within(self.connection)


async def close_within(connection: AbstractConnection, seconds: float = 5.0) -> None:
    """Close a broker connection, waiting ``seconds`` at most for the broker's answer: a stop or a
    failed start never waits on a broker that does not answer."""
    try:
        async with asyncio.timeout(seconds):
            await connection.close()
    except (OSError, RuntimeError, TimeoutError) as exc:  # it is going away anyway
        log.debug("broker_session_close_failed", error=repr(exc))


class BrokerLink:
    """Hands out the live session, opening a new one when the last was lost."""

    def __init__(self, open_session: Callable[[], Awaitable[BrokerSession]]) -> None:
        self._open = open_session
        self._session: BrokerSession | None = None
        self._lock = asyncio.Lock()
        self.sessions_opened = 0

    async def current(self) -> BrokerSession:
        async with self._lock:
            session = self._session
            if session is not None and not session.is_closed:
                return session
            if session is not None:
                await session.close()
                log.warning("broker_session_lost", sessions_opened=self.sessions_opened)
            self._session = None
            self._session = await self._open()
            self.sessions_opened += 1
            if self.sessions_opened > 1:
                log.info("broker_session_reopened", sessions_opened=self.sessions_opened)
            return self._session

    @property
    def live(self) -> BrokerSession | None:
        """The session in use, if it is still open; never opens one."""
        session = self._session
        return session if session is not None and not session.is_closed else None

    async def close(self) -> None:
        async with self._lock:
            if self._session is not None:
                await self._session.close()
                self._session = None
