"""SQL for standing covers at the exchange (docs/dvp.md, "Standing cover"); records never leave
this module."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from uuid import UUID

import asyncpg

from broker.running_totals import RunningTotal
from schemas.dvp import OpenStandingCover

# What each standing cover has drawn: open orders' remaining × cover_unit, unsettled executions'
# shares × cover_unit, settled executions' amounts (migration 0070), kept beside the rows so
# drawing costs the same however many orders drew.
STANDING_COVER_DRAWN = RunningTotal("standing_cover_drawn", "cover_id")


@dataclass(frozen=True, slots=True)
class Room:
    """The buyer's active standing cover for an order's account box, and what it can still draw."""

    cover_id: UUID
    room: Decimal

    def draws(self, worst_case: Decimal) -> bool:
        return worst_case <= self.room


@dataclass(frozen=True, slots=True)
class StandingCover:
    cover_id: UUID
    user_id: str
    amount: Decimal
    status: str


@dataclass(frozen=True, slots=True)
class Closed:
    """A standing cover just released: its amount, what it spent, and whom to tell."""

    user_id: str
    amount: Decimal
    spent: Decimal
    conversation: UUID | None  # the close request's


def _cover(row: asyncpg.Record) -> StandingCover:
    return StandingCover(row["cover_id"], row["user_id"], row["amount"], row["status"])


async def request(connection: asyncpg.Connection, message: OpenStandingCover) -> StandingCover | None:
    """Record the cover as requested; None if its id is taken or its box has a live cover."""
    row = await connection.fetchrow(
        """INSERT INTO standing_covers (cover_id, user_id, account, amount, currency, status)
           VALUES ($1, $2, $3, $4, $5, 'requested') ON CONFLICT DO NOTHING
           RETURNING cover_id, user_id, amount, status""",
        message.cover_id,
        message.user_id,
        message.account,
        message.amount,
        message.currency,
    )
    return _cover(row) if row else None


async def find(connection: asyncpg.Connection, cover_id: UUID) -> StandingCover | None:
    row = await connection.fetchrow(
        "SELECT cover_id, user_id, amount, status FROM standing_covers WHERE cover_id = $1", cover_id
    )
    return _cover(row) if row else None


async def decide(
    connection: asyncpg.Connection, cover_id: UUID, status: str, reason: str | None = None
) -> StandingCover | None:
    """Settlement answered: requested → active or refused; None if the cover is not waiting."""
    row = await connection.fetchrow(
        """UPDATE standing_covers SET status = $2, reason = $3, updated_at = now()
           WHERE cover_id = $1 AND status = 'requested' RETURNING cover_id, user_id, amount, status""",
        cover_id,
        status,
        reason,
    )
    return _cover(row) if row else None


async def start_closing(connection: asyncpg.Connection, cover_id: UUID, conversation: UUID | None) -> None:
    await connection.execute(
        """UPDATE standing_covers SET status = 'closing', closing_conversation = $2, updated_at = now()
           WHERE cover_id = $1 AND status = 'active'""",
        cover_id,
        conversation,
    )


# The drain conditions name the cover row (``s.cover_id``), not the parameter: with ``$1`` they were
# uncorrelated, and PostgreSQL ran them once before looking at the cover — on every trade drawn
# on an active cover, over every order ever drawn on it (0.8 ms at 200 orders, growing with the
# cover's history). Correlated, they run only for a cover that is closing.
CLOSE_IF_DONE = f"""UPDATE standing_covers s SET status = 'closed', updated_at = now()
    WHERE s.cover_id = $1 AND s.status = 'closing'
      AND NOT EXISTS (SELECT 1 FROM orders o
                      WHERE o.cover_id = s.cover_id AND o.cover_unit IS NOT NULL AND o.status = 'open')
      AND NOT EXISTS (SELECT 1 FROM matches m JOIN orders o ON o.acceptance_number = m.buy_order
                      WHERE o.cover_id = s.cover_id AND o.cover_unit IS NOT NULL
                        AND m.status IN ('pending_transfer', 'transfer_requested'))
    RETURNING s.user_id, s.amount, {STANDING_COVER_DRAWN.of("$1")} AS spent, s.closing_conversation"""


async def close_if_done(connection: asyncpg.Connection, cover_id: UUID) -> Closed | None:
    """A closing cover with no open order drawn on it and no unsettled execution of one is
    closed; returns what to report, or None if it is not closing or something drawn is live."""
    row = await connection.fetchrow(CLOSE_IF_DONE, cover_id)
    return Closed(row["user_id"], row["amount"], row["spent"], row["closing_conversation"]) if row else None


async def closing(connection: asyncpg.Connection) -> list[UUID]:
    """Every cover still closing, oldest change first."""
    rows = await connection.fetch("SELECT cover_id FROM standing_covers WHERE status = 'closing' ORDER BY updated_at")
    return [r["cover_id"] for r in rows]


async def drawn_drift(connection: asyncpg.Connection) -> list[tuple[str, Decimal, Decimal]]:
    """Every standing cover whose kept drawn amount differs from the sum over its orders and
    executions: (cover, kept, summed). Empty unless a write bypassed migration 0070's triggers."""
    return await STANDING_COVER_DRAWN.drift(
        connection,
        """SELECT cover_id AS key, sum(share) AS summed FROM (
               SELECT cover_id, remaining * cover_unit AS share FROM orders
               WHERE side = 'buy' AND status = 'open' AND cover_unit IS NOT NULL
               UNION ALL
               SELECT o.cover_id, execution_draw(m.status, m.shares, m.price, o.cover_unit)
               FROM matches m JOIN orders o ON o.acceptance_number = m.buy_order
               WHERE o.cover_unit IS NOT NULL) AS shares
           GROUP BY cover_id""",
    )
