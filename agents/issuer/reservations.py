"""SQL for the issuer's DvP reservations (migration 0021); records never leave this module."""

from __future__ import annotations

from collections.abc import Sequence
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
    return (await reservations(connection, [instruction])).get(instruction)


async def reservations(connection: asyncpg.Connection, instructions: Sequence[int]) -> dict[int, Reservation]:
    """The instructions' reservations (those there are), locked, in one statement."""
    rows = await connection.fetch(
        "SELECT * FROM reservations WHERE instruction = ANY($1::bigint[]) ORDER BY instruction FOR UPDATE",
        list(instructions),
    )
    return {row["instruction"]: _reservation(row) for row in rows}


async def reservation_with_record(
    connection: asyncpg.Connection, instruction: int
) -> tuple[Reservation, RegisterRecord] | None:
    """The reservation and the register record of its CertID, both locked, in one round trip."""
    return (await reservations_with_records(connection, [instruction])).get(instruction)


async def reservations_with_records(
    connection: asyncpg.Connection, instructions: Sequence[int]
) -> dict[int, tuple[Reservation, RegisterRecord]]:
    """The instructions' reservations (those there are), each with the register record of its
    CertID, all locked, in one round trip."""
    rows = await connection.fetch(
        f"""SELECT v.*, {repo.record_columns("r")} FROM reservations v JOIN register r ON r.cert_id = v.cert_id
            WHERE v.instruction = ANY($1::bigint[]) ORDER BY v.instruction FOR UPDATE OF v, r""",
        list(instructions),
    )
    return {row["instruction"]: (_reservation(row), repo.record_of(row, "r")) for row in rows}


def _reservation(row: asyncpg.Record) -> Reservation:
    return Reservation(
        row["instruction"],
        row["attempt"],
        row["cert_id"],
        SecuritiesReserve.model_validate_json(row["request"]),
        row["status"],
        CertificateDelivery.model_validate_json(row["delivery"]) if row["delivery"] else None,
    )


@dataclass(frozen=True, slots=True)
class Reserving:
    """A reservation to record: the request, its CertID's register record (locked), and the
    exchange order the CertID is committed to while reserved."""

    request: SecuritiesReserve
    record: RegisterRecord
    exchange: str
    order: int


async def reserve(
    connection: asyncpg.Connection, request: SecuritiesReserve, record: RegisterRecord, exchange: str, order: int
) -> int | None:
    """Record the reservation and commit the CertID to the sell order, remembering what it was
    before, in one round trip — unless another instruction holds the CertID reserved: then
    nothing is written and that instruction's number is returned. ``record`` must be locked."""
    return (await reserve_all(connection, [Reserving(request, record, exchange, order)])).get(request.instruction)


async def reserve_all(connection: asyncpg.Connection, reserving: Sequence[Reserving]) -> dict[int, int]:
    """``reserve`` for several instructions of distinct CertIDs, in one statement: by instruction,
    the other instruction that holds its CertID reserved, for those refused (nothing written)."""
    if not reserving:
        return {}
    rows = await connection.fetch(
        """WITH v AS (
               SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::uuid[], $4::bigint[], $5::jsonb[],
                                    $6::bigint[], $7::text[], $8::text[], $9::bigint[])
               AS v (instruction, attempt, cert_id, shares, request, previous_order, previous_by, exchange,
                     sell_order)),
           other AS (
               SELECT DISTINCT ON (v.instruction) v.instruction, r.instruction AS other
               FROM v JOIN reservations r ON r.cert_id = v.cert_id AND r.status = 'reserved'
                   AND r.instruction <> v.instruction
               ORDER BY v.instruction, r.instruction),
           free AS (SELECT * FROM v WHERE v.instruction NOT IN (SELECT instruction FROM other)),
           kept AS (
               UPDATE register g SET committed_by = free.exchange, committed_order = free.sell_order
               FROM free WHERE g.cert_id = free.cert_id),
           saved AS (
               INSERT INTO reservations (instruction, attempt, cert_id, shares, request, previous_order,
                   previous_by, status)
               SELECT instruction, attempt, cert_id, shares, request, previous_order, previous_by, 'reserved'
               FROM free
               ON CONFLICT (instruction) DO UPDATE SET attempt = excluded.attempt, cert_id = excluded.cert_id,
                   shares = excluded.shares, request = excluded.request, previous_order = excluded.previous_order,
                   previous_by = excluded.previous_by, status = 'reserved', reserved_at = now(), ended_at = NULL)
           SELECT instruction, other FROM other""",
        [r.request.instruction for r in reserving],
        [r.request.attempt for r in reserving],
        [r.record.cert_id for r in reserving],
        [r.request.quantity for r in reserving],
        [r.request.model_dump_json() for r in reserving],
        [r.record.committed_order for r in reserving],
        [r.record.committed_by for r in reserving],
        [r.exchange for r in reserving],
        [r.order for r in reserving],
    )
    return {row["instruction"]: row["other"] for row in rows}


async def committed(connection: asyncpg.Connection, instruction: int, delivery: CertificateDelivery) -> None:
    await committed_all(connection, [(instruction, delivery)])


async def committed_all(connection: asyncpg.Connection, deliveries: Sequence[tuple[int, CertificateDelivery]]) -> None:
    """Each instruction's reservation committed with what its commit delivered, in one statement."""
    if not deliveries:
        return
    await connection.execute(
        """UPDATE reservations v SET status = 'committed', ended_at = now(), name_transfer_number = d.ntn,
               delivery = d.delivery
           FROM unnest($1::bigint[], $2::bigint[], $3::jsonb[]) AS d (instruction, ntn, delivery)
           WHERE v.instruction = d.instruction""",
        [instruction for instruction, _ in deliveries],
        [delivery.name_transfer_number for _, delivery in deliveries],
        [delivery.model_dump_json() for _, delivery in deliveries],
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
