"""The exchange's warm books: each issue's ``OrderBook`` kept in memory between orders.

Rebuilding an issue's book from its open orders for every order made an order's cost grow
with the depth of the book. Here the book stays in memory, and a token in the issue's
``instruments`` row says whether it still matches the committed rows:

* ``load`` locks the instrument row (as before: one decision per issue at a time) and reads
  the token; if the book kept in memory carries that token it is used as is, otherwise it is
  rebuilt from rows. Either way the book is taken out of the cache while a handler uses it;
* any write to an order clears the token (a trigger, migration 0055): a command run from
  another process, this handler's own writes, anything;
* ``sealing`` wraps a handler: when it returns, each book it loaded is given a fresh token,
  written in the handler's transaction, and put back in the cache.

So the cache is right whatever happens: a handler that fails never puts its book back; a
transaction (or savepoint) rolled back after the seal takes the new token with it, and the
next ``load`` sees a token that is not the cached one and rebuilds. The cache is per process
and keyed by issue and segment (certificate orders and book-entry orders never match each
other); one token per issue covers both segments, so sealing one segment makes the other's
cached copy stale and it is rebuilt. The tokens are random, so two databases never share one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any
from uuid import UUID, uuid4

import asyncpg

from agents.exchange import order_repo
from agents.exchange.book import OrderBook
from broker.context import Context
from schemas.catalogue import Message

Handler = Callable[[Any, Context], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Segment:
    issue_code: str
    book_entry: bool


@dataclass(frozen=True, slots=True)
class _Warm:
    book: OrderBook
    token: UUID


class WarmBooks:
    def __init__(self) -> None:
        self._warm: dict[Segment, _Warm] = {}
        self._in_use: ContextVar[dict[Segment, OrderBook] | None] = ContextVar("books_in_use", default=None)
        self.rebuilt = 0  # how many loads had to read the rows, for the benchmark and tests

    async def load(self, connection: asyncpg.Connection, issue_code: str, book_entry: bool = False) -> OrderBook:
        """One segment of the issue's book, locked for this transaction's decision."""
        token = await connection.fetchval(
            "SELECT book_token FROM instruments WHERE issue_code = $1 FOR UPDATE", issue_code
        )
        segment = Segment(issue_code, book_entry)
        warm = self._warm.pop(segment, None)
        if warm is not None and token is not None and warm.token == token:
            book = warm.book
        else:
            self.rebuilt += 1
            book = await order_repo.rebuild_book(connection, issue_code, book_entry)
        in_use = self._in_use.get()
        if in_use is not None:
            in_use[segment] = book
        return book

    def sealing(self, handler: Handler) -> Handler:
        """``handler``, putting each book it loaded back in the cache under a new token when it returns."""

        async def sealed(message: Any, ctx: Context) -> None:
            reset = self._in_use.set({})
            try:
                await handler(message, ctx)
                await self._seal(ctx.connection, self._in_use.get() or {})
            finally:
                self._in_use.reset(reset)

        sealed.__name__ = sealed.__qualname__ = getattr(handler, "__name__", "handler")
        return sealed

    async def _seal(self, connection: asyncpg.Connection, used: dict[Segment, OrderBook]) -> None:
        tokens: dict[str, UUID] = {}
        for segment in used:
            if segment.issue_code not in tokens:
                tokens[segment.issue_code] = token = uuid4()
                await connection.execute(
                    "UPDATE instruments SET book_token = $2 WHERE issue_code = $1", segment.issue_code, token
                )
        for segment, book in used.items():
            self._warm[segment] = _Warm(book, tokens[segment.issue_code])

    def sealing_all(self, handlers: Mapping[type[Message], Handler]) -> dict[type[Message], Handler]:
        return {kind: self.sealing(handler) for kind, handler in handlers.items()}


BOOKS = WarmBooks()
