"""The exchange's warm books: each issue's ``OrderBook`` kept in memory between orders.

Rebuilding an issue's book from its open orders for every order made an order's cost grow
with the depth of the book. Here the book stays in memory, and a token in the issue's
``instruments`` row says whether it still matches the committed rows:

* ``load`` locks the instrument row (as before: one decision per issue at a time) and reads
  the token; if the book kept in memory carries that token it is used as is, otherwise it is
  rebuilt from rows. Either way the book is taken out of the cache while a handler uses it;
* any write to an order clears the token (a trigger, migration 0055): a command run from
  another process, this handler's own writes, anything; and it locks the instrument row first
  (migration 0066), so it waits for a transaction deciding on that book and is seen by the next;
* ``sealing`` wraps a handler: when it returns, each book it loaded is given a fresh token,
  written in the handler's transaction, and put back in the cache;
* in a batch (``batch``, the consumer's group commit) the books a handler leaves stay with the
  batch instead: the next handler of the batch takes them without a round trip (the instrument
  row is locked since the batch first loaded it, so no other transaction wrote its orders),
  and they are sealed once, when the batch's last handler has returned. A handler that writes
  orders of an issue whose book it does not hold makes the batch forget that issue's books
  (``wrote``), and the seal fails if the database counted an order row the exchange did not
  (migration 0066): the batch is then rolled back and run again a delivery at a time.

So the cache is right whatever happens: a handler that fails never puts its book back; a
transaction (or savepoint) rolled back after the seal takes the new token with it, and the
next ``load`` sees a token that is not the cached one and rebuilds. The cache is per process
and keyed by issue and segment (certificate orders and book-entry orders never match each
other); one token per issue covers both segments, so sealing one segment makes the other's
cached copy stale and it is rebuilt. The tokens are random, so two databases never share one.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID, uuid4

import asyncpg

from agents.exchange import order_repo
from agents.exchange.book import OrderBook
from broker import logs, set_based
from broker.context import Context
from schemas.catalogue import Message

Handler = Callable[[Any, Context], Awaitable[None]]
# Another write of the batch's instrument rows that carries the seal in its own statement
# (prices.py: the batch's last prices), so that the rows are written once at the batch's end:
# given the issues and their new tokens, it writes them with its own columns, reads the order
# rows counted (``ROWS_WRITTEN``) in the same statement, and calls ``check`` with that count
# before it acts on what it wrote.
Sealer = Callable[[asyncpg.Connection, dict[str, UUID], Callable[[int], None]], Awaitable[None]]
log = logs.get("kabuto.exchange")


@dataclass(frozen=True, slots=True)
class Segment:
    issue_code: str
    book_entry: bool


@dataclass(frozen=True, slots=True)
class _Warm:
    book: OrderBook
    token: UUID


@dataclass(slots=True)
class _Batch:
    """The books a batch's handlers left, to be sealed when its last handler returned."""

    books: dict[Segment, OrderBook] = field(default_factory=dict)
    rows_written: int = 0  # order rows this batch wrote through order_repo
    loaded: bool = False  # a handler of the batch loaded a book
    locked: set[str] = field(default_factory=set)  # issues whose instrument row the batch locked
    # Book tokens read with the lock (``lock_issues``), while no order row of the issue has been
    # written since: the token is still the row's, since the batch holds the row.
    tokens: dict[str, UUID | None] = field(default_factory=dict)
    sealer: Sealer | None = None  # what writes the seal with its own write (``seal_with``)

    def forget(self, issue_code: str) -> None:
        self.tokens.pop(issue_code, None)
        for segment in [s for s in self.books if s.issue_code == issue_code]:
            del self.books[segment]


class UncountedOrderWrite(Exception):
    """The database counted order rows that order_repo did not report: a book held by the
    batch may not match its rows. Raised before the commit, so the batch runs again."""


class WarmBooks:
    def __init__(self) -> None:
        self._warm: dict[Segment, _Warm] = {}
        self._in_use: ContextVar[dict[Segment, OrderBook] | None] = ContextVar("books_in_use", default=None)
        self._batch: ContextVar[_Batch | None] = ContextVar("books_in_batch", default=None)
        self.rebuilt = 0  # how many loads had to read the rows, for the benchmark and tests
        # How many loads locked the row: a round trip each, unless the batch read its token with its lock.
        self.locked = 0
        self.uncounted = 0  # batches refused for an order write order_repo did not report (a defect)

    async def load(self, connection: asyncpg.Connection, issue_code: str, book_entry: bool = False) -> OrderBook:
        """One segment of the issue's book, locked for this transaction's decision."""
        segment = Segment(issue_code, book_entry)
        batch = self._batch.get()
        book = None
        if batch is not None:
            batch.loaded = True
            book = batch.books.pop(segment, None)
        if book is None:
            book = await self._locked(connection, segment)
        in_use = self._in_use.get()
        if in_use is not None:
            in_use[segment] = book
        return book

    async def _locked(self, connection: asyncpg.Connection, segment: Segment) -> OrderBook:
        """Lock the instrument row; the warm book if its token is the row's, else one rebuilt from rows."""
        self.locked += 1
        batch = self._batch.get()
        if batch is not None:
            batch.locked.add(segment.issue_code)
        await order_repo.write_held(connection)  # the token and the rows must count every order booked
        if batch is not None and segment.issue_code in batch.tokens:
            token = batch.tokens[segment.issue_code]
        else:
            token = await connection.fetchval(
                "SELECT book_token FROM instruments WHERE issue_code = $1 FOR UPDATE", segment.issue_code
            )
        warm = self._warm.pop(segment, None)
        if warm is not None and token is not None and warm.token == token:
            return warm.book
        self.rebuilt += 1
        return await order_repo.rebuild_book(connection, segment.issue_code, segment.book_entry)

    async def lock_issues(self, connection: asyncpg.Connection, issue_codes: Iterable[str]) -> None:
        """Lock the instrument rows of ``issue_codes`` (in issue order) that this batch has not
        locked yet, so that what is read next is read after every transaction that held one has
        committed: an order decided on its book must decide on what the database holds once the
        book is its own (a command closing the day or setting a new reference price holds the row).
        In a batch, each row's book token is kept from the same read, so that the first ``load``
        of the issue needs no read of its own (until the batch writes an order of that issue)."""
        batch = self._batch.get()
        wanted = sorted(set(issue_codes) - (batch.locked if batch is not None else set()))
        if not wanted:
            return
        await order_repo.write_held(connection)  # so that the tokens read say what the rows are
        rows = await connection.fetch(
            """SELECT issue_code, book_token FROM instruments WHERE issue_code = ANY($1::text[])
               ORDER BY issue_code FOR UPDATE""",
            wanted,
        )
        if batch is not None:
            batch.locked.update(wanted)
            batch.tokens.update((row["issue_code"], row["book_token"]) for row in rows)

    def wrote(self, issue_code: str, rows: int) -> None:
        """order_repo wrote ``rows`` order rows of ``issue_code``. Outside a batch the token the
        trigger cleared is enough. In one, the books of that issue the batch holds are forgotten:
        only the books the writing handler holds itself are taken to reflect its writes (as
        outside a batch), and a segment it does not hold may be the one written."""
        batch = self._batch.get()
        if batch is not None:
            batch.rows_written += rows
            batch.forget(issue_code)

    @asynccontextmanager
    async def batch(self, connection: asyncpg.Connection, _: Sequence[Message]) -> AsyncIterator[None]:
        """Around a batch's handlers in one transaction: books pass from handler to handler and
        are sealed once at the end, if no handler raised."""
        batch = _Batch()
        reset = self._batch.set(batch)
        try:
            yield
            if batch.loaded or batch.sealer is not None:
                await self._seal(connection, batch.books, batch.rows_written, batch.sealer)
        finally:
            self._batch.reset(reset)

    def seal_with(self, sealer: Sealer) -> bool:
        """Have the batch's seal written by ``sealer``'s statement (see ``Sealer``); False when no
        batch of books is open, and the caller writes on its own."""
        batch = self._batch.get()
        if batch is None or batch.sealer is not None:
            return False
        batch.sealer = sealer
        return True

    def _check_counted(self, counted: int, rows_written: int) -> None:
        if counted != rows_written:
            # A defect: some statement wrote orders behind order_repo. The batch is safe (it runs
            # again a delivery at a time), but every batch that writes that way will pay it.
            self.uncounted += 1
            log.error("order_write_uncounted", counted=counted, reported=rows_written)
            raise UncountedOrderWrite(
                f"the database counted {counted} order rows written in this batch, order_repo {rows_written}"
            )

    def sealing(self, handler: Handler) -> Handler:
        """``handler``, putting each book it loaded back in the cache under a new token when it
        returns (a set-based one: when its set returns)."""

        async def sealed(call: Callable[[], Awaitable[None]], _: Sequence[Message], ctx: Context) -> None:
            reset = self._in_use.set({})
            try:
                await call()
                used = self._in_use.get() or {}
                batch = self._batch.get()
                if batch is None:
                    await self._seal(ctx.connection, used)
                else:
                    batch.books.update(used)
            finally:
                self._in_use.reset(reset)

        return set_based.around(handler, sealed)

    async def _seal(
        self,
        connection: asyncpg.Connection,
        used: dict[Segment, OrderBook],
        rows_written: int | None = None,
        sealer: Sealer | None = None,
    ) -> None:
        """A new token for each issue of ``used``, in one statement (``sealer``'s, if given); with
        ``rows_written`` (a batch's), the same statement reads the order rows the database
        counted, and the books are cached only if the counts agree (else ``UncountedOrderWrite``,
        and the batch rolls back with its tokens)."""
        tokens = {segment.issue_code: uuid4() for segment in used}
        if rows_written is not None:
            check = functools.partial(self._check_counted, rows_written=rows_written)
            if sealer is not None:
                await sealer(connection, tokens, check)
            else:
                check(await connection.fetchval(f"WITH sealed AS ({_SEAL}) SELECT {ROWS_WRITTEN}", *_arrays(tokens)))
        elif tokens:
            await connection.execute(_SEAL, *_arrays(tokens))
        for segment, book in used.items():
            self._warm[segment] = _Warm(book, tokens[segment.issue_code])

    def sealing_all(self, handlers: Mapping[type[Message], Handler]) -> dict[type[Message], Handler]:
        return {kind: self.sealing(handler) for kind, handler in handlers.items()}


_SEAL = """UPDATE instruments SET book_token = t.token
           FROM unnest($1::text[], $2::uuid[]) AS t (issue_code, token)
           WHERE instruments.issue_code = t.issue_code"""
# The order rows written in this transaction, as migration 0066's trigger counts them.
ROWS_WRITTEN = "coalesce(nullif(current_setting('kabuto.order_rows_written', true), ''), '0')::bigint"


def _arrays(tokens: dict[str, UUID]) -> tuple[list[str], list[UUID]]:
    return list(tokens), list(tokens.values())


BOOKS = WarmBooks()
