"""SQL for the reports the investor agent's participants signed (agents/investor/reported.py)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from uuid import UUID

import asyncpg

from broker.trade_reports import ReportTerms
from schemas.trading import Side


@dataclass(frozen=True, slots=True)
class SignedReport:
    """A report one participant signed, with what its side needs when the trade settles."""

    user_id: str
    side: str
    seller_user_id: str
    report_id: str
    issue_code: str
    quantity: int
    price: Decimal
    cert_id: UUID
    settlement_account: str
    holder_name: str | None
    holder_address: str | None
    dividend_method: str | None
    dividend_account: str | None
    status: str


_COLUMNS = """user_id, side, seller_user_id, report_id, issue_code, quantity, price, cert_id, settlement_account,
    holder_name, holder_address, dividend_method, dividend_account, status"""


async def signed(
    connection: asyncpg.Connection,
    terms: ReportTerms,
    side: Side,
    cert_id: UUID,
    settlement_account: str,
    holder: tuple[str | None, str | None, str | None, str | None] = (None, None, None, None),
) -> str:
    """Kept as signed, unless the participant signed this side of the report before: then the
    terms it signed then (their digest), which the caller compares."""
    name, address, method, account = holder
    user = terms.buyer_user_id if side is Side.BUY else terms.seller_user_id
    kept: str = await connection.fetchval(
        """WITH added AS (
               INSERT INTO reports (user_id, side, seller_user_id, report_id, terms_digest, issue_code, quantity,
                                    price, cert_id, settlement_account, holder_name, holder_address,
                                    dividend_method, dividend_account, status)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, 'signed')
               ON CONFLICT (user_id, seller_user_id, report_id, side) DO NOTHING
               RETURNING terms_digest)
           SELECT terms_digest FROM added
           UNION ALL
           SELECT terms_digest FROM reports
           WHERE user_id = $1 AND side = $2 AND seller_user_id = $3 AND report_id = $4
             AND NOT EXISTS (SELECT 1 FROM added)""",
        user,
        side.value,
        terms.seller_user_id,
        terms.report_id,
        terms.digest(),
        terms.issue_code,
        terms.quantity,
        terms.price,
        cert_id,
        settlement_account,
        name,
        address,
        method,
        account,
    )
    return kept


async def signed_report(
    connection: asyncpg.Connection, user_id: str, seller_user_id: str, report_id: str, side: Side
) -> SignedReport | None:
    """What the participant signed of this report, locked until the transaction ends; None: nothing."""
    row = await connection.fetchrow(
        f"""SELECT {_COLUMNS} FROM reports
            WHERE user_id = $1 AND seller_user_id = $2 AND report_id = $3 AND side = $4 FOR UPDATE""",
        user_id,
        seller_user_id,
        report_id,
        side.value,
    )
    return SignedReport(**dict(row)) if row is not None else None


async def settled(
    connection: asyncpg.Connection, user_id: str, seller_user_id: str, report_id: str, side: Side
) -> None:
    await connection.execute(
        """UPDATE reports SET status = 'settled', settled_at = now()
           WHERE user_id = $1 AND seller_user_id = $2 AND report_id = $3 AND side = $4""",
        user_id,
        seller_user_id,
        report_id,
        side.value,
    )
