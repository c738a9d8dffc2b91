"""SQL for the investor's hand-overs and holdings statements; records never leave this module."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

import asyncpg

from schemas.certificates import EndorsedCertificate


@dataclass(frozen=True, slots=True)
class Handover:
    handover_id: UUID
    transferee: str
    transferor: str
    cert_id: UUID | None
    issue_code: str | None
    shares: int | None
    certificate: EndorsedCertificate
    status: str
    reason: str | None
    holder_name: str | None
    holder_address: str | None
    dividend_method: str | None
    dividend_account: str | None
    request_id: UUID | None


async def record_handover(
    connection: asyncpg.Connection,
    handover_id: UUID,
    transferee: str,
    transferor: str,
    certificate: EndorsedCertificate,
    *,
    status: str,
    reason: str | None = None,
    facts: tuple[UUID, str, int] | None = None,
) -> None:
    cert_id, issue_code, shares = facts or (None, None, None)
    await connection.execute(
        """INSERT INTO handovers (handover_id, transferee, transferor, cert_id, issue_code, shares, certificate,
               status, reason) VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8, $9)
           ON CONFLICT (handover_id) DO NOTHING""",
        handover_id,
        transferee,
        transferor,
        cert_id,
        issue_code,
        shares,
        certificate.model_dump_json(),
        status,
        reason,
    )


def _handover(row: asyncpg.Record) -> Handover:
    values = dict(row)
    values["certificate"] = EndorsedCertificate.model_validate_json(values["certificate"])
    return Handover(**values)


_COLUMNS = """handover_id, transferee, transferor, cert_id, issue_code, shares, certificate, status, reason,
              holder_name, holder_address, dividend_method, dividend_account, request_id"""


async def handover(connection: asyncpg.Connection, transferee: str, handover_id: UUID) -> Handover | None:
    row = await connection.fetchrow(
        f"SELECT {_COLUMNS} FROM handovers WHERE handover_id = $1 AND transferee = $2 FOR UPDATE",
        handover_id,
        transferee,
    )
    return _handover(row) if row else None


async def handover_by_request(connection: asyncpg.Connection, request_id: UUID) -> Handover | None:
    row = await connection.fetchrow(f"SELECT {_COLUMNS} FROM handovers WHERE request_id = $1 FOR UPDATE", request_id)
    return _handover(row) if row else None


async def handovers(connection: asyncpg.Connection, transferee: str) -> list[Handover]:
    rows = await connection.fetch(
        f"SELECT {_COLUMNS} FROM handovers WHERE transferee = $1 ORDER BY received_at", transferee
    )
    return [_handover(r) for r in rows]


async def claimed(
    connection: asyncpg.Connection,
    handover_id: UUID,
    request_id: UUID,
    name: str,
    address: str,
    method: str,
    account: str,
) -> None:
    await connection.execute(
        """UPDATE handovers SET status = 'claimed', request_id = $2, holder_name = $3, holder_address = $4,
               dividend_method = $5, dividend_account = $6 WHERE handover_id = $1""",
        handover_id,
        request_id,
        name,
        address,
        method,
        account,
    )


async def handover_status(connection: asyncpg.Connection, handover_id: UUID, status: str, reason: str | None) -> None:
    await connection.execute(
        "UPDATE handovers SET status = $2, reason = $3 WHERE handover_id = $1", handover_id, status, reason
    )


async def record_holdings(connection: asyncpg.Connection, user_id: str, statement: str) -> None:
    await connection.execute(
        """INSERT INTO holdings_statements (user_id, statement) VALUES ($1, $2::jsonb)
           ON CONFLICT (user_id) DO UPDATE SET statement = excluded.statement, received_at = now()""",
        user_id,
        statement,
    )


async def holdings(connection: asyncpg.Connection, user_id: str) -> str | None:
    text: str | None = await connection.fetchval(
        "SELECT statement FROM holdings_statements WHERE user_id = $1", user_id
    )
    return text


async def mark_handed_over(connection: asyncpg.Connection, holder: str, cert_id: UUID) -> bool:
    done = await connection.fetchval(
        """UPDATE wallet SET status = 'handed_over' WHERE cert_id = $1 AND holder_user_id = $2
               AND status = 'held' AND committed_order IS NULL RETURNING true""",
        cert_id,
        holder,
    )
    return bool(done)


async def settle_request(
    connection: asyncpg.Connection,
    request_id: UUID,
    user_id: str,
    status: str,
    reason: str | None = None,
    detail: str | None = None,
    cert_id: UUID | None = None,
) -> bool:
    """Mark a pending request fulfilled or refused; False if there is none."""
    done = await connection.fetchval(
        """UPDATE requests SET status = $3, reason = $4, detail = $5, cert_id = coalesce($6, cert_id),
               updated_at = now()
           WHERE request_id = $1 AND user_id = $2 AND status = 'sent' RETURNING true""",
        request_id,
        user_id,
        status,
        reason,
        detail,
        cert_id,
    )
    return bool(done)
