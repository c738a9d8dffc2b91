"""SQL for the investor's own schema: the wallet and the request history."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import asyncpg

from broker.db import Writes, unnest_columns
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
    await record_requests(connection, [(request_id, user_id, kind, issue_code, shares)])


async def record_requests(connection: asyncpg.Connection, rows: Sequence[tuple[UUID, str, str, str, int]]) -> None:
    """``record_request`` for each of ``rows`` (request id, user, kind, issue, shares), in one statement."""
    if rows:
        await requests_recorded(rows).execute(connection)


def requests_recorded(rows: Sequence[tuple[UUID, str, str, str, int]]) -> Writes:
    """``record_requests``' rows as writes that can ride in another statement: requests under ids
    made for them (their messages' ids), which nothing can name before those messages leave."""
    return Writes(
        """requested AS (
               INSERT INTO requests (request_id, user_id, kind, issue_code, shares)
               SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::bigint[]))""",
        tuple(unnest_columns(rows, 5)),
        what="requests recorded",
        appends=True,
    )


async def fulfil_request(
    connection: asyncpg.Connection, request_id: UUID, certificate: ElectronicStockCertificate
) -> bool:
    """Mark the pending request this certificate answers; False if there is none."""
    return (await fulfil_requests(connection, [(request_id, certificate)]))[0]


async def fulfil_requests(
    connection: asyncpg.Connection, answers: Sequence[tuple[UUID, ElectronicStockCertificate]]
) -> list[bool]:
    """Mark the pending request each certificate answers, in one statement; per certificate, in
    order, False if there is none (its request unknown, answered, another user's, another
    issue's or another size)."""
    rows = await connection.fetch(
        """WITH input AS (
               SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::bigint[]) WITH ORDINALITY
                   AS d (d_request, d_cert, d_user, d_issue, d_shares, n)),
           fulfilled AS (
               UPDATE requests SET status = 'fulfilled', cert_id = d_cert, updated_at = now()
               FROM input
               WHERE request_id = d_request AND status = 'sent' AND user_id = d_user
                 AND issue_code = d_issue AND shares = d_shares
               RETURNING n)
           SELECT EXISTS (SELECT FROM fulfilled WHERE fulfilled.n = input.n) AS done FROM input ORDER BY n""",
        *unnest_columns(
            [(request_id, c.cert_id, c.holder_user_id, c.issue_code, c.shares) for request_id, c in answers],
            5,
        ),
    )
    return [r["done"] for r in rows]


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
    await keep_all(connection, [(certificate, signed)])


async def keep_all(
    connection: asyncpg.Connection, certificates: Sequence[tuple[ElectronicStockCertificate, SignedCertificate]]
) -> None:
    """``keep`` for each certificate, in one statement."""
    if not certificates:
        return
    await connection.execute(
        """INSERT INTO wallet (cert_id, holder_user_id, issue_code, certificate_number, shares,
               content, issuer_signature, issuer_certificate)
           SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::bytea[],
                                $7::bytea[], $8::bytea[])""",
        *unnest_columns(
            [
                (
                    c.cert_id,
                    c.holder_user_id,
                    c.issue_code,
                    c.certificate_number,
                    c.shares,
                    signed.content,
                    signed.issuer_signature.signature,
                    signed.issuer_signature.certificate,
                )
                for c, signed in certificates
            ],
            8,
        ),
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
