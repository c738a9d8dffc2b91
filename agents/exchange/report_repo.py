"""SQL for reported trades (agents/exchange/reports.py): what a report's checks read, the trade
kept, and what settlement said of it."""

from __future__ import annotations

from uuid import UUID

import asyncpg

from agents.exchange.acceptance import Instrument
from agents.exchange.reports import ReportBooks, ReportedTrade, TradeReport
from broker.envelope import Sealed

_COLUMNS = """matching_number, report_id, issue_code, cert_id, shares, price, seller_user_id,
    buyer_user_id, instruction_id, status, settlement_status, settlement_failure, new_cert_id"""


async def books(connection: asyncpg.Connection, report: TradeReport, cert_id: UUID) -> ReportBooks:
    """What the checks need. The issue's instrument row is locked first, as a command closing the
    day does, so that an order batch of the issue reads the CertID list only after this
    transaction ends; and the books are read after the lock, in a statement of their own: one
    that waited for the lock inside it would read them as they were before it waited, missing
    what the holder committed (found by review: a sell order and a report of one certificate
    were both accepted; prices.py says the same of its quotes)."""
    await connection.execute("SELECT 1 FROM instruments WHERE issue_code = $1 FOR UPDATE", report.issue_code)
    row = await connection.fetchrow(
        """SELECT i.issue_code, i.share_class, i.reference_price, i.last_price,
                  EXISTS (SELECT 1 FROM reported_trades r
                          WHERE r.seller_user_id = $3 AND r.report_id = $4) AS duplicate,
                  (SELECT l.user_id FROM certid_list l WHERE l.cert_id = $2 AND l.status = 'valid') AS listed_holder,
                  (SELECT c.acceptance_number FROM orders c
                    WHERE c.cert_id = $2 AND c.status = 'open' AND c.side = 'sell') AS committed_to
           FROM (VALUES (1)) AS one LEFT JOIN instruments i ON i.issue_code = $1""",
        report.issue_code,
        cert_id,
        report.seller_user_id,
        report.report_id,
    )
    instrument = (
        Instrument(row["issue_code"], row["share_class"], row["reference_price"], row["last_price"])
        if row["issue_code"] is not None
        else None
    )
    return ReportBooks(instrument, row["duplicate"], row["listed_holder"], row["committed_to"])


async def kept(
    connection: asyncpg.Connection, matching_number: int, report: TradeReport, cert_id: UUID, instruction: Sealed
) -> ReportedTrade:
    """The trade kept as instructed, its certificate held back from list merges (``in_transfer``)
    until settlement says how it ended."""
    row = await connection.fetchrow(
        f"""WITH held AS (UPDATE certid_list SET status = 'in_transfer' WHERE cert_id = $4)
            INSERT INTO reported_trades (matching_number, report_id, issue_code, cert_id, shares, price,
                                         seller_user_id, buyer_user_id, status, instruction_id, instruction_hash)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'transfer_requested', $9, $10)
            RETURNING {_COLUMNS}""",
        matching_number,
        report.report_id,
        report.issue_code,
        cert_id,
        report.quantity,
        report.price,
        report.seller_user_id,
        report.buyer_user_id,
        instruction.envelope.message_id,
        instruction.digest,
    )
    return ReportedTrade(**dict(row))


async def said(
    connection: asyncpg.Connection, matching_number: int, status: str, failure: str | None
) -> ReportedTrade | None:
    """Settlement's latest status of a reported trade, kept while the trade is unsettled (a status
    that arrives after its end changes nothing); None: no reported trade has that number."""
    row = await connection.fetchrow(
        f"""WITH said AS (
                UPDATE reported_trades SET settlement_status = $2, settlement_failure = $3
                WHERE matching_number = $1 AND status = 'transfer_requested' RETURNING {_COLUMNS})
            SELECT * FROM said
            UNION ALL
            SELECT {_COLUMNS} FROM reported_trades WHERE matching_number = $1 AND NOT EXISTS (SELECT 1 FROM said)""",
        matching_number,
        status,
        failure,
    )
    return ReportedTrade(**dict(row)) if row is not None else None


async def ended(
    connection: asyncpg.Connection,
    matching_number: int,
    status: str,
    name_transfer_number: int | None = None,
    new_cert_id: UUID | None = None,
) -> None:
    await connection.execute(
        """UPDATE reported_trades SET status = $2, name_transfer_number = $3, new_cert_id = $4, ended_at = now()
           WHERE matching_number = $1 AND status = 'transfer_requested'""",
        matching_number,
        status,
        name_transfer_number,
        new_cert_id,
    )


async def reported(connection: asyncpg.Connection, matching_number: int) -> ReportedTrade | None:
    row = await connection.fetchrow(
        f"SELECT {_COLUMNS} FROM reported_trades WHERE matching_number = $1", matching_number
    )
    return ReportedTrade(**dict(row)) if row is not None else None
