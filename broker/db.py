"""PostgreSQL access for an agent: a pool confined to the agent's own schema and role.

Each agent connects with ``search_path`` set to its schema and ``role`` set to
``kabuto_<agent>``, a role the migrations grant rights on that schema only, so a query that
strays into another agent's schema fails with a permission error instead of succeeding.
Both are startup parameters. The role guards against mistakes, not attacks: code that ran
``RESET ROLE`` would regain the login user's rights, which is why each agent logs in with its
own login role by default (``KABUTO_AGENT_CREDENTIALS``, docs/security.md §5).

A connection taken back by the pool is not reset beyond what asyncpg always does (roll back
a transaction left open): see ``nothing_to_undo``.

A session that sits idle inside a transaction for ``IDLE_IN_TRANSACTION`` is ended by
PostgreSQL (``idle_in_transaction_session_timeout``), and the transaction with it. No Kabuto
transaction waits on anything but its own statements — messages leave through the outbox after
the commit — so one idle that long is stuck (a hung process, a task blocked in a debugger), and
its locks would otherwise hold an issue's book or an account's rows from every other session
until someone killed it. The agent finds its connection gone at its next statement, and its
supervisor starts the failed task again (docs/resilience.md).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import asyncpg

# Far beyond any transaction's own work (the longest, a warm book rebuilt at 10,000 resting
# orders, takes about half a second) and beyond a health check's stall (``stall_after``).
IDLE_IN_TRANSACTION = timedelta(minutes=5)

# The planner's cost of reading a page out of order, for the agents' sessions. PostgreSQL's
# default (4.0) models a spinning disk; an agent's working set is cached and its statements are
# key lookups, often a handful of keys joined from ``unnest`` arrays. At 4.0 the planner prices a
# few index probes above a hash join over the whole table as soon as the table has a few
# thousand rows, and a prepared statement keeps that plan: the bench's database read 32 million
# tuples by sequential scans in 40 s at 100 trades/s (docs/performance.md, stop 42). 1.1 is the
# value PostgreSQL's documentation suggests for data that is cached or on solid-state storage.
RANDOM_PAGE_COST = "1.1"
PLANNER_SETTINGS = {"random_page_cost": RANDOM_PAGE_COST}  # an agent's sessions, and the bench's


def role_of(agent: str) -> str:
    return f"kabuto_{agent}"


@asynccontextmanager
async def agent_pool(
    database_url: str,
    agent: str,
    *,
    max_size: int = 4,
    on_connect: Callable[[asyncpg.Connection], Awaitable[None]] | None = None,
    idle_in_transaction: timedelta = IDLE_IN_TRANSACTION,
) -> AsyncIterator[asyncpg.Pool]:
    """The agent's pool: its schema, its role, its name in ``pg_stat_activity``, its planner's
    page cost (``RANDOM_PAGE_COST``), and its sessions ended by PostgreSQL when idle in a
    transaction for ``idle_in_transaction``. ``on_connect``:
    run on each new connection (a running agent counts its statements: ``metrics.counting``)."""
    if idle_in_transaction < timedelta(milliseconds=1):
        raise ValueError("idle_in_transaction must be at least a millisecond: 0 would turn the limit off")
    pool = await asyncpg.create_pool(
        database_url,
        min_size=1,
        max_size=max_size,
        init=on_connect,
        server_settings={
            "search_path": agent,
            "role": role_of(agent),
            "application_name": f"kabuto-{agent}",
            "idle_in_transaction_session_timeout": f"{idle_in_transaction // timedelta(milliseconds=1)}ms",
            **PLANNER_SETTINGS,
        },
        reset=nothing_to_undo,
    )
    try:
        yield pool
    finally:
        await close_pool(pool)


async def nothing_to_undo(connection: asyncpg.Connection) -> None:
    """The pool's reset of a connection it takes back, after asyncpg rolled back any transaction
    left open: nothing. Kabuto leaves no session state on a pooled connection — its settings are
    transaction-local (``set_config(..., true)``), its locks transaction locks, and the relay
    LISTENs on a connection of its own — so asyncpg's default reset (``SELECT
    pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL``) was a round trip per use with
    nothing to undo: about ten per trade across the agents (docs/performance.md, stop 17)."""


async def close_pool(pool: asyncpg.Pool, within: float = 10.0) -> None:
    """Close gracefully, but only for ``within`` seconds: a connection a stuck task still holds
    (the database not answering it) must not keep the agent from stopping; it is terminated."""
    try:
        async with asyncio.timeout(within):
            await pool.close()
    except TimeoutError:
        pool.terminate()


def unnest_columns(rows: Sequence[tuple[Any, ...]], width: int) -> list[list[Any]]:
    """Rows as the ``width`` arrays a set-wise statement's ``unnest($1, $2, …)`` takes, one per
    column (empty arrays for no rows: the statement then reads or writes nothing)."""
    return [list(column) for column in zip(*rows, strict=True)] if rows else [[] for _ in range(width)]


@dataclass(frozen=True, slots=True)
class Writes:
    """Data-modifying CTEs that can ride in another statement of the same transaction, one
    round trip where they were two: their text, parameters numbered from ``$1`` (and no ``$`` in
    it otherwise), their arguments, and what they must have done (``check``: a boolean SQL
    expression over the CTEs and the same parameters, e.g. a count; ``None``: nothing to check).
    ``what`` names them in the error raised when the check fails."""

    ctes: str
    args: tuple[Any, ...]
    check: str | None = None
    what: str = "writes"
    # Appends of rows, one array argument per column: two of the same can be one (``joined``).
    appends: bool = False

    def numbered_from(self, first: int) -> str:
        """The CTEs with their parameters renumbered to start at ``$first``, after the host's own."""
        return _renumbered(self.ctes, first)

    def check_from(self, first: int) -> str:
        """``check`` with its parameters renumbered as ``numbered_from``'s (``true`` when none)."""
        return _renumbered(self.check, first) if self.check is not None else "true"

    def joined(self, other: Writes) -> Writes | None:
        """These writes and ``other``'s in one, where both are the same appends of rows (``appends``:
        the same CTEs, nothing to check, one array argument per column), their rows concatenated
        in order (``other``'s after these). None otherwise: an update or an upsert given the same
        key twice in one statement is not what the two statements one after the other would do."""
        if not (self.appends and other.appends) or other.ctes != self.ctes:
            return None
        if self.check is not None or other.check is not None or not self.args or len(self.args) != len(other.args):
            return None
        if not all(isinstance(a, list) for a in (*self.args, *other.args)):
            return None
        return Writes(
            self.ctes, tuple(a + b for a, b in zip(self.args, other.args, strict=True)), what=self.what, appends=True
        )

    async def execute(self, connection: asyncpg.Connection) -> None:
        """The writes alone, as a statement of their own."""
        verified(await connection.fetchval(f"WITH {self.ctes} SELECT {self.check_from(1)}", *self.args), [self])


def riding(writes: Sequence[Writes], first: int) -> tuple[str, str, list[Any]]:
    """Several ``Writes`` in a host statement whose own parameters end before ``$first``: their
    CTEs (each preceded by a comma, to go after the host's own), one check for all of them, and
    their arguments, to go after the host's."""
    ctes: list[str] = []
    checks: list[str] = []
    args: list[Any] = []
    for each in writes:
        at = first + len(args)
        ctes.append(f", {each.numbered_from(at)}")
        checks.append(f"({each.check_from(at)})")
        args.extend(each.args)
    return "".join(ctes), " AND ".join(checks) or "true", args


def verified(done: object, writes: Sequence[Writes]) -> None:
    """Raise unless the statement that carried ``writes`` said their checks held."""
    if done is not True:
        raise RuntimeError(f"{', '.join(w.what for w in writes)}: not written as checked")


def _renumbered(text: str, first: int) -> str:
    return re.sub(r"\$(\d+)", lambda m: f"${int(m.group(1)) + first - 1}", text)


def notify_channel(agent: str) -> str:
    """The LISTEN/NOTIFY channel on which a commit wakes the agent's outbox relay."""
    return f"kabuto_outbox_{agent}"
