"""A small TCP fault proxy on loopback: connections cut, refused and delayed on demand.

Put between an agent and RabbitMQ or PostgreSQL, it forwards bytes both ways until told
otherwise: ``cut()`` drops every open connection at once (as a network failure would),
``refusing()`` drops new connections too for the length of a block (an outage of any
length, without stopping the shared service), ``silent()`` holds every byte for the length
of a block without closing anything (a service that stopped answering), ``delay`` holds
each chunk back. It only
listens on and forwards to loopback, and bounds what it does: delays are capped at
``MAX_DELAY`` and it serves at most ``max_connections`` connections at a time.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from types import TracebackType
from urllib.parse import urlsplit, urlunsplit

MAX_DELAY = 2.0


class FaultProxy:
    def __init__(self, target_host: str, target_port: int, *, port: int = 0, max_connections: int = 200) -> None:
        if not ipaddress.ip_address(target_host).is_loopback:
            raise ValueError(f"the fault proxy forwards to loopback only, not {target_host}")
        self.target = (target_host, target_port)
        self.port = port
        self.max_connections = max_connections
        self.delay = 0.0
        self.refuse = False
        self.cuts = 0
        self.accepted = 0
        self._pipes: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self._speaking = asyncio.Event()
        self._speaking.set()

    @classmethod
    def for_url(cls, url: str, *, port: int = 0) -> FaultProxy:
        parts = urlsplit(url)
        return cls(parts.hostname or "127.0.0.1", parts.port or 0, port=port)

    def url(self, url: str) -> str:
        """``url`` with its host and port replaced by the proxy's."""
        parts = urlsplit(url)
        credentials = parts.netloc.rpartition("@")[0]
        netloc = f"{credentials}@127.0.0.1:{self.port}" if credentials else f"127.0.0.1:{self.port}"
        return urlunsplit(parts._replace(netloc=netloc))

    async def __aenter__(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object | TracebackType) -> None:
        if self._server is not None:
            self._server.close()
        self.cut()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def cut(self) -> int:
        """Drop every open connection now; return how many."""
        pipes = list(self._pipes)
        for writer in pipes:
            writer.transport.abort()
        self._pipes.clear()
        self.cuts += len(pipes)
        return len(pipes)

    @contextmanager
    def refusing(self) -> Iterator[None]:
        """An outage for the length of the block: open connections cut, new ones dropped."""
        self.refuse = True
        self.cut()
        try:
            yield
        finally:
            self.refuse = False

    @contextmanager
    def silent(self) -> Iterator[None]:
        """For the length of the block nothing is forwarded either way and nothing is closed: the
        service seems to have stopped answering (a hung broker, a link that drops every packet)."""
        self._speaking.clear()
        try:
            yield
        finally:
            self._speaking.set()

    @asynccontextmanager
    async def delayed(self, seconds: float) -> AsyncIterator[None]:
        self.delay = min(max(seconds, 0.0), MAX_DELAY)
        try:
            yield
        finally:
            self.delay = 0.0

    async def _serve(self, client_reader: asyncio.StreamReader, client: asyncio.StreamWriter) -> None:
        if self.refuse or len(self._pipes) >= self.max_connections:
            client.transport.abort()
            return
        try:
            upstream_reader, upstream = await asyncio.open_connection(*self.target)
        except OSError:
            client.transport.abort()
            return
        self.accepted += 1
        self._pipes.update((client, upstream))
        pumps = [
            asyncio.create_task(self._pump(client_reader, upstream)),
            asyncio.create_task(self._pump(upstream_reader, client)),
        ]
        self._tasks.update(pumps)
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
                self._tasks.discard(pump)
            for writer in (client, upstream):
                self._pipes.discard(writer)
                writer.transport.abort()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while chunk := await reader.read(65536):
                if self.delay:
                    await asyncio.sleep(self.delay)  # the injected latency itself
                await self._speaking.wait()
                writer.write(chunk)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            return
