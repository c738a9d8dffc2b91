"""Row locks a group-committed batch already holds, taken once per batch rather than per handler.

A handler locks the rows its decision rests on (a cash account, ``FOR NO KEY UPDATE``) in a
statement of its own before it reads them. When a batch runs all at once (broker.group_commit)
its handlers share one transaction with no savepoint, so a lock one of them took is held until
the commit, and the next handler of the batch that needs the same row has nothing to ask for:
no other transaction can have written it in between. Anywhere else — one delivery alone, or a
batch run again a savepoint each, where a rolled-back savepoint releases the locks taken in it —
every lock is taken every time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Hashable, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar

import asyncpg

from schemas.catalogue import Message


class BatchLocks:
    def __init__(self, name: str) -> None:
        self._held: ContextVar[set[Hashable] | None] = ContextVar(f"{name}_locks_held", default=None)
        self.taken = 0  # lock statements sent, for the tests and the benchmark

    @asynccontextmanager
    async def batch(self, _connection: asyncpg.Connection, _messages: Sequence[Message]) -> AsyncIterator[None]:
        """A broker.group_commit.BatchScope: the locks taken inside are remembered until it ends."""
        reset = self._held.set(set())
        try:
            yield
        finally:
            self._held.reset(reset)

    async def lock(
        self, connection: asyncpg.Connection, key: Hashable, statement: str, *args: object, rows: int = 1
    ) -> None:
        """Run the locking ``statement`` unless this batch already ran it for ``key`` and it locked
        all its ``rows`` then (a row created since by another transaction was not locked: it is
        asked for again). The statement is part of the key, so a weaker lock never stands in for
        a stronger one."""
        held = self._held.get()
        if held is not None and (key, statement) in held:
            return
        self.taken += 1
        status = await connection.execute(statement, *args)
        if held is not None and status == f"SELECT {rows}":
            held.add((key, statement))
