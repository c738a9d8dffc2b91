"""SQL for the issuer's DvP reservations (migration 0021); records never leave this module."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

import asyncpg

from agents.issuer import repo
from agents.issuer.register import RegisterRecord
from schemas.dvp import CertificateDelivery, SecuritiesReserve


@dataclass(frozen=True, slots=True)
class Reservation:
    instruction: int
    attempt: int
    cert_id: UUID
    request: SecuritiesReserve
    status: str
    delivery: CertificateDelivery | None


async def reservation(connection: asyncpg.Connection, instruction: int) -> Reservation | None:
    row = await connection.fetchrow("SELECT * FROM reservations WHERE instruction = $1 FOR UPDATE", instruction)
    return _reservation(row) if row else None


async def reservation_with_record(
    connection: asyncpg.Connection, instruction: int
) -> tuple[Reservation, RegisterRecord] | None:
    """The reservation and the register record of its CertID, both locked, in one round trip."""
    row = await connection.fetchrow(
        f"""SELECT v.*, {repo.record_columns("r")} FROM reservations v JOIN register r ON r.cert_id = v.cert_id
            WHERE v.instruction = $1 FOR UPDATE OF v, r""",
        instruction,
    )
    return (_reservation(row), repo.record_of(row, "r")) if row else None


def _reservation(row: asyncpg.Record) -> Reservation:
    return Reservation(
        row["instruction"],
        row["attempt"],
        row["cert_id"],
        SecuritiesReserve.model_validate_json(row["request"]),
        row["status"],
        CertificateDelivery.model_validate_json(row["delivery"]) if row["delivery"] else None,
    )


async def reserve(
    connection: asyncpg.Connection, request: SecuritiesReserve, record: RegisterRecord, exchange: str, order: int
) -> int | None:
    """Record the reservation and commit the CertID to the sell order, remembering what it was
    before, in one round trip — unless another instruction holds the CertID reserved: then
    nothing is written and that instruction's number is returned. ``record`` must be locked."""
    other: int | None = await connection.fetchval(
        """WITH other AS (
               SELECT instruction FROM reservations
               WHERE cert_id = $3 AND status = 'reserved' AND instruction <> $1 LIMIT 1),
           kept AS (
               UPDATE register SET committed_by = $8, committed_order = $9
               WHERE cert_id = $3 AND NOT EXISTS (SELECT FROM other)),
           saved AS (
               INSERT INTO reservations (instruction, attempt, cert_id, shares, request, previous_order,
                   previous_by, status)
               SELECT $1::bigint, $2::bigint, $3::uuid, $4::bigint, $5::jsonb, $6::bigint, $7::text, 'reserved'
               WHERE NOT EXISTS (SELECT FROM other)
               ON CONFLICT (instruction) DO UPDATE SET attempt = $2, cert_id = $3, shares = $4, request = $5,
                   previous_order = $6, previous_by = $7, status = 'reserved', reserved_at = now(),
                   ended_at = NULL)
           SELECT instruction FROM other""",
        request.instruction,
        request.attempt,
        record.cert_id,
        request.quantity,
        request.model_dump_json(),
        record.committed_order,
        record.committed_by,
        exchange,
        order,
    )
    return other


async def committed(connection: asyncpg.Connection, instruction: int, delivery: CertificateDelivery) -> None:
    await connection.execute(
        """UPDATE reservations SET status = 'committed', ended_at = now(), name_transfer_number = $2, delivery = $3
           WHERE instruction = $1""",
        instruction,
        delivery.name_transfer_number,
        delivery.model_dump_json(),
    )


async def release(connection: asyncpg.Connection, instruction: int) -> bool:
    """Unlock: the CertID is committed as it was before the reservation; False if nothing was reserved."""
    cert_id = await connection.fetchval(
        """UPDATE reservations SET status = 'released', ended_at = now()
           WHERE instruction = $1 AND status = 'reserved' RETURNING cert_id""",
        instruction,
    )
    if cert_id is None:
        return False
    await connection.execute(
        """UPDATE register r SET committed_order = v.previous_order, committed_by = v.previous_by
           FROM reservations v WHERE v.instruction = $1 AND r.cert_id = v.cert_id AND r.status = 'valid'""",
        instruction,
    )
    return True
