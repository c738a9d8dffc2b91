"""SQL for the line's books: DB 610–640, prices, obligations, refreshes and collateral."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from uuid import UUID

import asyncpg

from agents.credit.domain import Band, Holding, Method, PriceQuote, Valuation, ValuedHolding
from schemas.custody import HoldingDelta


class ObligationStatus(StrEnum):
    REFRESHING = "refreshing"
    LOCKING = "locking"
    APPROVED = "approved"
    REFUSED = "refused"
    LAPSED = "lapsed"
    REPAID = "repaid"
    DEFAULTED = "defaulted"
    RECOVERED = "recovered"


class LockStatus(StrEnum):
    REQUESTED = "requested"
    PLACED = "placed"
    REFUSED = "refused"
    RELEASING = "releasing"
    RELEASED = "released"
    SELLING = "selling"
    SOLD = "sold"


@dataclass(frozen=True, slots=True)
class LinePolicy:
    settlement_account: str
    current_within: timedelta
    inquiry_timeout: timedelta
    refresh_interval: timedelta


@dataclass(frozen=True, slots=True)
class Purchaser:
    purchaser: str
    method: Method
    cash_account: str
    custodians: tuple[tuple[str, int], ...]  # (custodian, cursor consumed)


@dataclass(frozen=True, slots=True)
class Obligation:
    obligation_id: UUID
    purchaser: str
    card_number: str
    shortfall: int
    status: ObligationStatus
    accumulated: int
    grantable: int
    reason: str | None
    detail: str | None
    deadline: datetime
    advanced: int
    advance_reference: UUID | None
    proceeds: int
    surplus: int
    deficit: int


@dataclass(frozen=True, slots=True)
class Collateral:
    lock_id: UUID
    obligation_id: UUID
    purchaser: str
    custodian: str
    account: str
    issue_code: str
    quantity: int
    price: Decimal
    price_source: str
    price_as_of: datetime
    price_age_seconds: int
    market_value: int
    coefficient: Decimal
    credit_value: int
    status: LockStatus
    lock_cursor: int | None
    quantity_sold: int
    proceeds: int


@dataclass(frozen=True, slots=True)
class Position:
    """A DB 620 row: what the custodian reported, and what of it the line may still pledge."""

    custodian: str
    account: str
    issue_code: str
    available: int
    locked: int
    eligible: int


# -- policy and contracts ------------------------------------------------------------------------


async def policy(conn: asyncpg.Connection) -> LinePolicy | None:
    row = await conn.fetchrow("SELECT * FROM line_policy")
    if row is None:
        return None
    return LinePolicy(row["settlement_account"], row["current_within"], row["inquiry_timeout"], row["refresh_interval"])


async def set_policy(conn: asyncpg.Connection, p: LinePolicy) -> None:
    await conn.execute(
        """INSERT INTO line_policy (settlement_account, current_within, inquiry_timeout, refresh_interval)
           VALUES ($1, $2, $3, $4)
           ON CONFLICT (singleton) DO UPDATE SET settlement_account = $1, current_within = $2,
               inquiry_timeout = $3, refresh_interval = $4""",
        p.settlement_account,
        p.current_within,
        p.inquiry_timeout,
        p.refresh_interval,
    )


async def register_purchaser(
    conn: asyncpg.Connection,
    purchaser: str,
    method: Method,
    cash_account: str,
    cards: tuple[str, ...],
    custodians: tuple[str, ...],
    pledged: tuple[str, ...] = (),
) -> None:
    await conn.execute(
        """INSERT INTO purchasers (purchaser, method, cash_account, pledged_accounts) VALUES ($1, $2, $3, $4)
           ON CONFLICT (purchaser) DO UPDATE SET method = $2, cash_account = $3, pledged_accounts = $4""",
        purchaser,
        method.value,
        cash_account,
        list(pledged) or None,
    )
    await conn.executemany(
        """INSERT INTO purchaser_cards (card_number, purchaser) VALUES ($1, $2)
           ON CONFLICT (card_number) DO UPDATE SET purchaser = $2""",
        [(c, purchaser) for c in cards],
    )
    await conn.executemany(
        "INSERT INTO purchaser_custodians (purchaser, custodian) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        [(purchaser, c) for c in custodians],
    )


async def purchaser(conn: asyncpg.Connection, purchaser_id: str, *, lock: bool = False) -> Purchaser | None:
    row = await conn.fetchrow(
        "SELECT * FROM purchasers WHERE purchaser = $1" + (" FOR UPDATE" if lock else ""), purchaser_id
    )
    if row is None:
        return None
    custodians = await conn.fetch(
        "SELECT custodian, cursor FROM purchaser_custodians WHERE purchaser = $1 ORDER BY custodian", purchaser_id
    )
    return Purchaser(
        row["purchaser"],
        Method(row["method"]),
        row["cash_account"],
        tuple((c["custodian"], c["cursor"]) for c in custodians),
    )


async def purchasers(conn: asyncpg.Connection) -> list[Purchaser]:
    ids = [r["purchaser"] for r in await conn.fetch("SELECT purchaser FROM purchasers ORDER BY 1")]
    found = [await purchaser(conn, i) for i in ids]
    return [p for p in found if p is not None]


async def card_holder(conn: asyncpg.Connection, card_number: str) -> str | None:
    holder: str | None = await conn.fetchval(
        "SELECT purchaser FROM purchaser_cards WHERE card_number = $1", card_number
    )
    return holder


async def set_band(conn: asyncpg.Connection, band: Band) -> None:
    await conn.execute(
        """INSERT INTO haircut_bands (minimum, maximum, rate) VALUES ($1, $2, $3)
           ON CONFLICT (minimum) DO UPDATE SET maximum = $2, rate = $3""",
        band.minimum,
        band.maximum,
        band.rate,
    )


async def clear_bands(conn: asyncpg.Connection) -> None:
    await conn.execute("DELETE FROM haircut_bands")


async def bands(conn: asyncpg.Connection) -> list[Band]:
    rows = await conn.fetch("SELECT minimum, maximum, rate FROM haircut_bands ORDER BY minimum")
    return [Band(r["minimum"], r["maximum"], r["rate"]) for r in rows]


async def set_rating(conn: asyncpg.Connection, issue_code: str, rating: str, rate: Decimal, now: datetime) -> None:
    await conn.execute(
        """INSERT INTO ratings (issue_code, rating, discount_rate, rated_at) VALUES ($1, $2, $3, $4)
           ON CONFLICT (issue_code) DO UPDATE SET rating = $2, discount_rate = $3, rated_at = $4""",
        issue_code,
        rating,
        rate,
        now,
    )


async def ratings(conn: asyncpg.Connection) -> dict[str, tuple[str, Decimal]]:
    rows = await conn.fetch("SELECT issue_code, rating, discount_rate FROM ratings ORDER BY issue_code")
    return {r["issue_code"]: (r["rating"], r["discount_rate"]) for r in rows}


# -- prices --------------------------------------------------------------------------------------


async def store_price(
    conn: asyncpg.Connection,
    issue_code: str,
    reference: Decimal,
    last: Decimal | None,
    last_at: datetime | None,
    close: Decimal | None,
    closed_at: datetime | None,
    now: datetime,
) -> None:
    """Keep the newest of each fact: an update delivered late never rolls a price back."""
    await conn.execute(
        """INSERT INTO prices AS p (issue_code, reference_price, last_price, last_traded_at, previous_close,
                                    closed_at, received_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7)
           ON CONFLICT (issue_code) DO UPDATE SET
             last_price = CASE WHEN p.last_traded_at IS NULL OR excluded.last_traded_at > p.last_traded_at
                               THEN excluded.last_price ELSE p.last_price END,
             last_traded_at = greatest(p.last_traded_at, excluded.last_traded_at),
             previous_close = CASE WHEN p.closed_at IS NULL OR excluded.closed_at > p.closed_at
                                   THEN excluded.previous_close ELSE p.previous_close END,
             reference_price = CASE WHEN p.closed_at IS NULL OR excluded.closed_at >= p.closed_at
                                    THEN excluded.reference_price ELSE p.reference_price END,
             closed_at = greatest(p.closed_at, excluded.closed_at),
             received_at = excluded.received_at""",
        issue_code,
        reference,
        last,
        last_at,
        close,
        closed_at,
        now,
    )


async def quotes(conn: asyncpg.Connection) -> dict[str, PriceQuote]:
    rows = await conn.fetch("SELECT * FROM prices ORDER BY issue_code")
    return {
        r["issue_code"]: PriceQuote(
            r["issue_code"], r["last_price"], r["last_traded_at"], r["previous_close"], r["closed_at"]
        )
        for r in rows
    }


# -- holdings (DB 620) ---------------------------------------------------------------------------


async def apply_delta(conn: asyncpg.Connection, purchaser_id: str, custodian: str, delta: HoldingDelta) -> bool:
    """S2030: reflect one delta; an older one than the row already has changes nothing.

    ``custodian`` is the participant that answered (where locks and sell instructions go);
    it may keep accounts under several custodian names, which the account id tells apart.
    """
    b = delta.balances
    status = await conn.execute(
        """INSERT INTO holdings AS h (purchaser, custodian, account, issue_code, available, locked,
                                      pending_delivery, pending_receipt, sequence, updated_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
           ON CONFLICT (purchaser, custodian, account, issue_code) DO UPDATE SET
             available = $5, locked = $6, pending_delivery = $7, pending_receipt = $8, sequence = $9, updated_at = $10
           WHERE h.sequence < $9""",
        purchaser_id,
        custodian,
        delta.account,
        delta.issue_code,
        b.available,
        b.locked,
        b.pending_delivery,
        b.pending_receipt,
        delta.sequence,
        delta.changed_at,
    )
    return bool(status.endswith("1"))


async def advance_cursor(conn: asyncpg.Connection, purchaser_id: str, custodian: str, cursor: int) -> None:
    await conn.execute(
        "UPDATE purchaser_custodians SET cursor = greatest(cursor, $3) WHERE purchaser = $1 AND custodian = $2",
        purchaser_id,
        custodian,
        cursor,
    )


async def positions(conn: asyncpg.Connection, purchaser_id: str) -> list[Position]:
    """Each position with what may still be pledged: available as reported, less this line's
    locks the report does not show yet (requested, or placed after the consumed cursor) — so
    two inquiries never pledge the same shares (R-003-41, R-003-60)."""
    rows = await conn.fetch(
        """SELECT h.custodian, h.account, h.issue_code, h.available, h.locked,
                  h.available - coalesce((
                    SELECT sum(c.quantity) FROM collateral c
                    JOIN purchaser_custodians pc ON pc.purchaser = c.purchaser AND pc.custodian = c.custodian
                    WHERE c.purchaser = h.purchaser AND c.custodian = h.custodian AND c.account = h.account
                      AND c.issue_code = h.issue_code
                      AND (c.status = 'requested' OR (c.status = 'placed' AND c.lock_cursor > pc.cursor))
                  ), 0)::bigint AS eligible
           FROM holdings h JOIN purchasers p USING (purchaser)
           WHERE h.purchaser = $1 AND (p.pledged_accounts IS NULL OR h.account = ANY(p.pledged_accounts))
           ORDER BY h.custodian, h.account, h.issue_code""",
        purchaser_id,
    )
    return [Position(**dict(r)) for r in rows]


def as_holdings(found: list[Position]) -> list[Holding]:
    return [Holding(p.custodian, p.issue_code, p.eligible, account=p.account) for p in found if p.eligible > 0]


async def remove_sold(conn: asyncpg.Connection, c: Collateral, sold: int) -> None:
    """S9110: the sold shares leave DB 620 (the custodian's next delta says the same)."""
    await conn.execute(
        """UPDATE holdings SET locked = greatest(locked - $5, 0)
           WHERE purchaser = $1 AND custodian = $2 AND account = $3 AND issue_code = $4""",
        c.purchaser,
        c.custodian,
        c.account,
        c.issue_code,
        sold,
    )
    await conn.execute(
        """DELETE FROM holdings WHERE purchaser = $1 AND custodian = $2 AND account = $3 AND issue_code = $4
           AND available + locked + pending_delivery + pending_receipt = 0""",
        c.purchaser,
        c.custodian,
        c.account,
        c.issue_code,
    )


async def account_of(conn: asyncpg.Connection, purchaser_id: str, custodian: str, issue_code: str) -> str | None:
    account: str | None = await conn.fetchval(
        """SELECT account FROM holdings WHERE purchaser = $1 AND custodian = $2 AND issue_code = $3
           ORDER BY available DESC LIMIT 1""",
        purchaser_id,
        custodian,
        issue_code,
    )
    return account


async def set_grantable(conn: asyncpg.Connection, purchaser_id: str, valuation: Valuation, now: datetime) -> None:
    await conn.execute(
        """INSERT INTO grantable (purchaser, method, amount, valued_at) VALUES ($1, $2, $3, $4)
           ON CONFLICT (purchaser) DO UPDATE SET method = $2, amount = $3, valued_at = $4""",
        purchaser_id,
        valuation.method.value,
        valuation.grantable,
        now,
    )


async def record_valuation(
    conn: asyncpg.Connection,
    purchaser_id: str,
    obligation_id: UUID | None,
    method: Method,
    valuation: Valuation | None,
    refusal: str | None,
    now: datetime,
) -> None:
    """Every valuation with each position's price, source and age (R-003-25)."""
    held = valuation.holdings if valuation else ()
    await conn.execute(
        """INSERT INTO valuations (purchaser, obligation_id, method, total_market_value, haircut_rate, grantable,
                                   refusal, positions, valued_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9)""",
        purchaser_id,
        obligation_id,
        method.value,
        valuation.total_market_value if valuation else None,
        valuation.haircut_rate if valuation else None,
        valuation.grantable if valuation else None,
        refusal,
        json.dumps([_valued_json(v) for v in held]),
        now,
    )


def _valued_json(v: ValuedHolding) -> dict[str, object]:
    return {
        "custodian": v.holding.custodian,
        "issue_code": v.holding.issue_code,
        "quantity": v.holding.quantity,
        "price": str(v.price.price),
        "price_source": v.price.source.value,
        "price_as_of": v.price.as_of.isoformat(),
        "price_age_seconds": int(v.price.age.total_seconds()),
        "market_value": v.market_value,
        "coefficient": str(v.coefficient),
        "credit_value": v.credit_value,
    }


async def valuations(conn: asyncpg.Connection, purchaser_id: str | None) -> list[dict[str, object]]:
    rows = await conn.fetch(
        """SELECT valuation_id, purchaser, obligation_id, method, total_market_value, haircut_rate, grantable,
                  refusal, positions, valued_at
           FROM valuations WHERE $1::text IS NULL OR purchaser = $1 ORDER BY valuation_id""",
        purchaser_id,
    )
    return [{**dict(r), "positions": json.loads(r["positions"])} for r in rows]
