"""SQL for the investor's own schema: the wallet and the request history."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import asyncpg

from schemas.certificates import ElectronicStockCertificate, IssuerSignature, SignedCertificate


@dataclass(frozen=True, slots=True)
class Request:
    request_id: UUID
    user_id: str
    kind: str
    issue_code: str
    shares: int
    status: str
    reason: str | None
    detail: str | None
    cert_id: UUID | None
    updated_at: datetime


async def record_request(
    connection: asyncpg.Connection,
    request_id: UUID,
    user_id: str,
    kind: str,
    issue_code: str,
    shares: int,
) -> None:
    await connection.execute(
        """INSERT INTO requests (request_id, user_id, kind, issue_code, shares)
           VALUES ($1, $2, $3, $4, $5)""",
        request_id,
        user_id,
        kind,
        issue_code,
        shares,
    )


async def record_requests(connection: asyncpg.Connection, rows: Sequence[tuple[UUID, str, str, str, int]]) -> None:
    """``record_request`` for each of ``rows`` (request id, user, kind, issue, shares), in one statement."""
    if rows:
        await connection.execute(
            """INSERT INTO requests (request_id, user_id, kind, issue_code, shares)
               SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::bigint[])""",
            *zip(*rows, strict=True),
        )


async def fulfil_request(
    connection: asyncpg.Connection, request_id: UUID, certificate: ElectronicStockCertificate
) -> bool:
    """Mark the pending request this certificate answers; False if there is none."""
    fulfilled = await connection.fetchval(
        """UPDATE requests SET status = 'fulfilled', cert_id = $2, updated_at = now()
           WHERE request_id = $1 AND status = 'sent' AND user_id = $3
             AND issue_code = $4 AND shares = $5
           RETURNING true""",
        request_id,
        certificate.cert_id,
        certificate.holder_user_id,
        certificate.issue_code,
        certificate.shares,
    )
    return bool(fulfilled)


async def refuse_request(
    connection: asyncpg.Connection, request_id: UUID, user_id: str, reason: str, detail: str
) -> bool:
    """Record the refusal of a pending request; False if there is none."""
    refused = await connection.fetchval(
        """UPDATE requests SET status = 'refused', reason = $3, detail = $4, updated_at = now()
           WHERE request_id = $1 AND user_id = $2 AND status = 'sent'
           RETURNING true""",
        request_id,
        user_id,
        reason,
        detail,
    )
    return bool(refused)


async def requests(connection: asyncpg.Connection, user_id: str) -> list[Request]:
    rows = await connection.fetch(
        """SELECT request_id, user_id, kind, issue_code, shares, status, reason, detail, cert_id,
                  updated_at
           FROM requests WHERE user_id = $1 ORDER BY created_at""",
        user_id,
    )
    return [Request(**dict(r)) for r in rows]


async def keep(
    connection: asyncpg.Connection, certificate: ElectronicStockCertificate, signed: SignedCertificate
) -> None:
    """Seed 001 R-001-18: store the certificate exactly as received."""
    await connection.execute(
        """INSERT INTO wallet (cert_id, holder_user_id, issue_code, certificate_number, shares,
               content, issuer_signature, issuer_certificate)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)""",
        certificate.cert_id,
        certificate.holder_user_id,
        certificate.issue_code,
        certificate.certificate_number,
        certificate.shares,
        signed.content,
        signed.issuer_signature.signature,
        signed.issuer_signature.certificate,
    )


async def held(connection: asyncpg.Connection, holder: str) -> list[SignedCertificate]:
    rows = await connection.fetch(
        """SELECT content, issuer_signature, issuer_certificate FROM wallet
           WHERE holder_user_id = $1 AND status = 'held' ORDER BY received_at""",
        holder,
    )
    return [
        SignedCertificate(
            content=r["content"],
            issuer_signature=IssuerSignature(certificate=r["issuer_certificate"], signature=r["issuer_signature"]),
        )
        for r in rows
    ]
