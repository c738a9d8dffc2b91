"""SQL for the card issuer's books (DB 600, authorisations, repayments); rows never leave here."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from uuid import UUID

import asyncpg

from agents.credit.domain import CardAccount, CardType, Split


class AuthStatus(StrEnum):
    AWAITING_LINE = "awaiting_line"
    APPROVED = "approved"
    REFUSED = "refused"
    CAPTURED = "captured"
    LAPSED = "lapsed"
    REPAID = "repaid"
    DEFAULTED = "defaulted"
    RECOVERED = "recovered"


@dataclass(frozen=True, slots=True)
class Authorisation:
    authorisation_id: UUID
    merchant: str
    purchase_id: str
    card_number: str
    purchaser: str
    card_type: CardType
    price: int
    covered: int
    secured: int
    owed: int
    repaid: int
    status: AuthStatus
    reason: str | None
    detail: str | None
    capture_by: datetime | None
    merchant_account: str | None

    @property
    def secured_remaining(self) -> int:
        """Repayments go to the secured part first: it is what keeps the collateral locked."""
        return max(self.secured - self.repaid, 0)

    @property
    def remaining(self) -> int:
        return self.owed - self.repaid


@dataclass(frozen=True, slots=True)
class IssuerPolicy:
    settlement_account: str
    capture_window: timedelta


def _card(row: asyncpg.Record) -> CardAccount:
    return CardAccount(
        row["card_number"], row["purchaser"], CardType(row["card_type"]), row["credit_limit"], row["outstanding"]
    )


def _auth(row: asyncpg.Record) -> Authorisation:
    values = dict(row)
    values.pop("created_at")
    values.pop("updated_at")
    return Authorisation(**{**values, "card_type": CardType(row["card_type"]), "status": AuthStatus(row["status"])})


async def open_card(conn: asyncpg.Connection, account: CardAccount, repayment_account: str) -> None:
    await conn.execute(
        """INSERT INTO card_accounts (card_number, purchaser, card_type, credit_limit, outstanding, repayment_account)
           VALUES ($1, $2, $3, $4, $5, $6)
           ON CONFLICT (card_number) DO UPDATE SET purchaser = $2, card_type = $3, credit_limit = $4,
               repayment_account = $6""",
        account.card_number,
        account.purchaser,
        account.card_type.value,
        account.credit_limit,
        account.outstanding,
        repayment_account,
    )


async def card_for_update(conn: asyncpg.Connection, card_number: str) -> CardAccount | None:
    row = await conn.fetchrow("SELECT * FROM card_accounts WHERE card_number = $1 FOR UPDATE", card_number)
    return _card(row) if row else None


async def repayment_account(conn: asyncpg.Connection, card_number: str) -> str:
    account: str = await conn.fetchval(
        "SELECT repayment_account FROM card_accounts WHERE card_number = $1", card_number
    )
    return account


async def cards(conn: asyncpg.Connection) -> list[tuple[CardAccount, str]]:
    rows = await conn.fetch("SELECT * FROM card_accounts ORDER BY card_number")
    return [(_card(r), r["repayment_account"]) for r in rows]


async def use(conn: asyncpg.Connection, card_number: str, delta: int) -> None:
    """Change the card's usage; the check constraint keeps it from going below zero."""
    await conn.execute(
        "UPDATE card_accounts SET outstanding = greatest(outstanding + $2, 0) WHERE card_number = $1",
        card_number,
        delta,
    )


async def policy(conn: asyncpg.Connection) -> IssuerPolicy | None:
    row = await conn.fetchrow("SELECT settlement_account, capture_window FROM issuer_policy")
    return IssuerPolicy(row["settlement_account"], row["capture_window"]) if row else None


async def set_policy(conn: asyncpg.Connection, settlement_account: str, capture_window: timedelta) -> None:
    await conn.execute(
        """INSERT INTO issuer_policy (settlement_account, capture_window) VALUES ($1, $2)
           ON CONFLICT (singleton) DO UPDATE SET settlement_account = $1, capture_window = $2""",
        settlement_account,
        capture_window,
    )


async def authorisation_by_purchase(conn: asyncpg.Connection, merchant: str, purchase_id: str) -> Authorisation | None:
    row = await conn.fetchrow(
        "SELECT * FROM authorisations WHERE merchant = $1 AND purchase_id = $2", merchant, purchase_id
    )
    return _auth(row) if row else None


async def authorisation_for_update(conn: asyncpg.Connection, authorisation_id: UUID) -> Authorisation | None:
    row = await conn.fetchrow("SELECT * FROM authorisations WHERE authorisation_id = $1 FOR UPDATE", authorisation_id)
    return _auth(row) if row else None


async def insert_authorisation(
    conn: asyncpg.Connection,
    authorisation_id: UUID,
    merchant: str,
    purchase_id: str,
    account: CardAccount,
    split: Split,
    status: AuthStatus,
    now: datetime,
) -> None:
    await conn.execute(
        """INSERT INTO authorisations (authorisation_id, merchant, purchase_id, card_number, purchaser, card_type,
               price, covered, secured, owed, status, created_at, updated_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12)""",
        authorisation_id,
        merchant,
        purchase_id,
        account.card_number,
        account.purchaser,
        account.card_type.value,
        split.price,
        split.covered,
        split.secured,
        split.owed,
        status.value,
        now,
    )


async def set_status(
    conn: asyncpg.Connection,
    authorisation_id: UUID,
    status: AuthStatus,
    now: datetime,
    *,
    reason: str | None = None,
    detail: str | None = None,
    capture_by: datetime | None = None,
    merchant_account: str | None = None,
) -> None:
    await conn.execute(
        """UPDATE authorisations SET status = $2, updated_at = $3, reason = coalesce($4, reason),
               detail = coalesce($5, detail), capture_by = coalesce($6, capture_by),
               merchant_account = coalesce($7, merchant_account)
           WHERE authorisation_id = $1""",
        authorisation_id,
        status.value,
        now,
        reason,
        detail,
        capture_by,
        merchant_account,
    )


async def add_repaid(conn: asyncpg.Connection, authorisation_id: UUID, amount: int, now: datetime) -> None:
    await conn.execute(
        "UPDATE authorisations SET repaid = repaid + $2, updated_at = $3 WHERE authorisation_id = $1",
        authorisation_id,
        amount,
        now,
    )


async def lapsing(conn: asyncpg.Connection, now: datetime) -> list[Authorisation]:
    rows = await conn.fetch(
        "SELECT * FROM authorisations WHERE status = 'approved' AND capture_by <= $1 ORDER BY created_at FOR UPDATE",
        now,
    )
    return [_auth(r) for r in rows]


async def authorisations(conn: asyncpg.Connection) -> list[Authorisation]:
    return [_auth(r) for r in await conn.fetch("SELECT * FROM authorisations ORDER BY created_at")]


async def insert_repayment(conn: asyncpg.Connection, attempt_id: UUID, authorisation_id: UUID, amount: int) -> None:
    await conn.execute(
        "INSERT INTO repayments (attempt_id, authorisation_id, amount, status) VALUES ($1, $2, $3, 'requested')",
        attempt_id,
        authorisation_id,
        amount,
    )


async def settle_repayment(
    conn: asyncpg.Connection, attempt_id: UUID, succeeded: bool, detail: str | None
) -> tuple[UUID, int] | None:
    """Mark a requested attempt; returns (authorisation, amount), or None if it was not pending."""
    row = await conn.fetchrow(
        """UPDATE repayments SET status = $2, detail = $3 WHERE attempt_id = $1 AND status = 'requested'
           RETURNING authorisation_id, amount""",
        attempt_id,
        "succeeded" if succeeded else "failed",
        detail,
    )
    return (row["authorisation_id"], row["amount"]) if row else None
