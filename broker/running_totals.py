"""Totals kept beside the rows they sum, without a row every writer locks (migration 0068).

A total is a folded amount per key (``<table>``) plus the changes not folded yet
(``<table>_changes``), which a trigger on the summed rows inserts with every write that moves
a row's share. Writers only insert, so two transactions that move the same total never wait on
each other for it, whatever order their other locks come in. ``fold`` moves the changes into
the amounts in one statement; an agent runs it every ``FOLD_EVERY`` (``folding``), and it is the
only writer of the amounts. A reader adds the amount and the changes not folded yet, which one
statement reads from one snapshot: a fold commits the deleted changes and the new amounts at
once, so a reader sees both before or both after. What a reader passes is about a second's
worth of changes, plus the index entries of folded ones until autovacuum clears them (the
migration sets the change tables to be vacuumed, without the cost delay, every autovacuum round
they have 500 dead rows: migration 0073; the server should run a round every few seconds,
docs/performance.md stop 21).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import TYPE_CHECKING

import asyncpg

from broker.progress import pause

if TYPE_CHECKING:
    from broker.runtime import AgentRuntime, Background

FOLD_EVERY = timedelta(seconds=1)


@dataclass(frozen=True, slots=True)
class RunningTotal:
    """One kind of total: its amounts' table and the column its key is in."""

    table: str
    key: str
    # A SECURITY DEFINER function that folds, for a total the agent may read but not write (one
    # a database check trusts: migration 0072's balances); None: the agent folds it itself.
    folder: str | None = None

    @property
    def changes(self) -> str:
        """The table of the changes not folded yet, one row per write that moved a total."""
        return f"{self.table}_changes"

    def of(self, key: str) -> str:
        """A SQL expression for the total of the key the SQL expression ``key`` gives: a
        parameter (``$1``) or a qualified column — a bare column named like this total's key
        column would be read from the inner tables."""
        return (
            f"(coalesce((SELECT amount FROM {self.table} WHERE {self.key} = {key}), 0)"
            f" + coalesce((SELECT sum(change) FROM {self.changes} WHERE {self.key} = {key}), 0))"
        )

    @property
    def kept(self) -> str:
        """A SQL query of every key's total, as (key, amount) rows: folded and not."""
        return self._grouped("")

    def each(self, keys: str) -> str:
        """A SQL query of (key, amount) rows, the total of each key in the SQL array ``keys``."""
        return self._grouped(f" WHERE {self.key} = ANY({keys})")

    def _grouped(self, where: str) -> str:
        return (
            f"SELECT {self.key} AS key, sum(amount) AS amount FROM"
            f" (SELECT {self.key}, amount FROM {self.table}{where}"
            f"  UNION ALL SELECT {self.key}, change FROM {self.changes}{where}) AS parts GROUP BY {self.key}"
        )

    async def totals(self, connection: asyncpg.Connection, keys: list[str]) -> dict[str, Decimal]:
        """The total of each of ``keys`` that has one other than zero."""
        query = f"SELECT key, amount FROM ({self.each('$1::text[]')}) AS t WHERE amount <> 0"
        rows = await connection.fetch(query, keys)
        return {r["key"]: r["amount"] for r in rows}

    async def drift(self, connection: asyncpg.Connection, summed: str) -> list[tuple[str, Decimal, Decimal]]:
        """Every key whose total differs from the sum of its rows, as (key, total, sum);
        ``summed`` is a SQL query of (key, summed) rows over the rows themselves."""
        rows = await connection.fetch(
            f"""SELECT coalesce(k.key, s.key) AS key, coalesce(k.amount, 0) AS kept, coalesce(s.summed, 0) AS summed
                FROM ({self.kept}) AS k FULL JOIN ({summed}) AS s ON s.key = k.key
                WHERE coalesce(k.amount, 0) <> coalesce(s.summed, 0)"""
        )
        return [(r["key"], r["kept"], r["summed"]) for r in rows]

    async def fold(self, connection: asyncpg.Connection) -> int:
        """Move every committed change into its amount; returns how many keys moved. The
        amounts are written in key order, and only here, so two folds never deadlock."""
        if self.folder is not None:
            return int(await connection.fetchval(f"SELECT {self.folder}()"))
        result: str = await connection.execute(
            f"""WITH moved AS (DELETE FROM {self.changes} RETURNING {self.key}, change),
                     summed AS (SELECT {self.key}, sum(change) AS change FROM moved GROUP BY {self.key})
                INSERT INTO {self.table} AS t ({self.key}, amount)
                SELECT {self.key}, change FROM summed ORDER BY {self.key}
                ON CONFLICT ({self.key}) DO UPDATE SET amount = t.amount + excluded.amount"""
        )
        return int(result.split()[-1])


def folding(*totals: RunningTotal) -> Background:
    """The background job that folds ``totals`` every ``FOLD_EVERY``, for an agent's definition
    (one per agent: its heartbeat is named ``fold_running_totals``)."""

    async def fold_running_totals(runtime: AgentRuntime) -> None:
        while True:
            await pause(FOLD_EVERY.total_seconds())
            async with runtime.round_of(fold_running_totals):
                for total in totals:
                    await runtime.query(total.fold)

    return fold_running_totals
