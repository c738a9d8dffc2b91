"""SQL for the hosted investors' standing covers (migration 0071); records never leave this module."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from uuid import UUID

import asyncpg

from agents.investor.domain import CoverStatus
from schemas.dvp import OpenStandingCover


@dataclass(frozen=True, slots=True)
class StandingCover:
    cover_id: UUID
    user_id: str
    account: str
    box: str  # the account sealed to settlement, as the open and the cover's buy orders carry it
    amount: Decimal
    currency: str
    request_id: UUID  # the standing_cover.open message
    status: CoverStatus
    reason: str | None
    detail: str | None
    spent: Decimal | None
    opened_at: datetime
    updated_at: datetime


_COLUMNS = """cover_id, user_id, account, box, amount, currency, request_id, status, reason, detail, spent,
              opened_at, updated_at"""


def _cover(row: asyncpg.Record | None) -> StandingCover | None:
    return StandingCover(**{**dict(row), "status": CoverStatus(row["status"])}) if row else None


async def request(connection: asyncpg.Connection, open_: OpenStandingCover, account: str, request_id: UUID) -> bool:
    """Record the cover as requested; False if the account has a live cover already."""
    row = await connection.fetchrow(
        """INSERT INTO standing_covers (cover_id, user_id, account, box, amount, currency, request_id)
           VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING RETURNING cover_id""",
        open_.cover_id,
        open_.user_id,
        account,
        open_.account,
        open_.amount,
        open_.currency,
        request_id,
    )
    return row is not None


async def live(connection: asyncpg.Connection, user_id: str, account: str) -> StandingCover | None:
    """The account's requested, active or closing cover, if any (there is at most one)."""
    row = await connection.fetchrow(
        f"""SELECT {_COLUMNS} FROM standing_covers
            WHERE user_id = $1 AND account = $2 AND status IN ('requested', 'active', 'closing')""",
        user_id,
        account,
    )
    return _cover(row)


async def active_boxes(connection: asyncpg.Connection, user_id: str, accounts: Sequence[str]) -> dict[str, str]:
    """The box of each account's active cover, by account (those with one): a buy order that carries
    it draws on the cover. Nothing is read for no accounts."""
    if not accounts:
        return {}
    rows = await connection.fetch(
        """SELECT account, box FROM standing_covers
           WHERE user_id = $1 AND account = ANY($2::text[]) AND status = 'active'""",
        user_id,
        list(accounts),
    )
    return {row["account"]: row["box"] for row in rows}


async def find(connection: asyncpg.Connection, user_id: str, cover_id: UUID) -> StandingCover | None:
    """The user's cover, locked until the transaction ends (in a transaction)."""
    row = await connection.fetchrow(
        f"SELECT {_COLUMNS} FROM standing_covers WHERE user_id = $1 AND cover_id = $2 FOR UPDATE",
        user_id,
        cover_id,
    )
    return _cover(row)


async def covers(connection: asyncpg.Connection, user_id: str) -> list[StandingCover]:
    rows = await connection.fetch(
        f"SELECT {_COLUMNS} FROM standing_covers WHERE user_id = $1 ORDER BY opened_at, cover_id", user_id
    )
    return [c for c in map(_cover, rows) if c is not None]


async def move(
    connection: asyncpg.Connection,
    user_id: str,
    cover_id: UUID,
    status: CoverStatus,
    *,
    was: CoverStatus,
    reason: str | None = None,
    detail: str | None = None,
    spent: Decimal | None = None,
) -> bool:
    """``was`` → ``status``, keeping a reason, detail or spent amount given; False if the cover is
    not the user's or not in ``was``."""
    done = await connection.fetchval(
        """UPDATE standing_covers
           SET status = $3, reason = coalesce($5, reason), detail = coalesce($6, detail),
               spent = coalesce($7, spent), updated_at = now()
           WHERE user_id = $1 AND cover_id = $2 AND status = $4 RETURNING true""",
        user_id,
        cover_id,
        status.value,
        was.value,
        reason,
        detail,
        spent,
    )
    return bool(done)
