"""SQL for the certificates custody holds as holder of record (its vault), the deposits that
bring them in and the withdrawals that take them out."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import asyncpg

from schemas.certificates import EndorsedCertificate, SignedCertificate


@dataclass(frozen=True, slots=True)
class VaultCertificate:
    cert_id: UUID
    issue_code: str
    shares: int
    signed: SignedCertificate | None
    status: str


@dataclass(frozen=True, slots=True)
class Deposit:
    handover_id: UUID
    transferor: str
    certificate: EndorsedCertificate
    cert_id: UUID | None
    issue_code: str | None
    shares: int | None
    account_id: str | None
    status: str
    reason: str | None
    new_cert_id: UUID | None = None


@dataclass(frozen=True, slots=True)
class Withdrawal:
    withdrawal_id: UUID
    account_id: str
    client: str
    issue_code: str
    quantity: int
    status: str
    cert_id: UUID | None
    updated_at: datetime


# --- vault ----------------------------------------------------------------------------------


def _vault(row: asyncpg.Record) -> VaultCertificate:
    signed = SignedCertificate.model_validate_json(row["signed"]) if row["signed"] else None
    return VaultCertificate(row["cert_id"], row["issue_code"], row["shares"], signed, row["status"])


async def add(
    conn: asyncpg.Connection, cert_id: UUID, issue: str, shares: int, signed: SignedCertificate | None = None
) -> None:
    await conn.execute(
        """INSERT INTO vault (cert_id, issue_code, shares, signed) VALUES ($1, $2, $3, $4)
           ON CONFLICT (cert_id) DO NOTHING""",
        cert_id,
        issue,
        shares,
        signed.model_dump_json() if signed else None,
    )


async def set_signed(conn: asyncpg.Connection, cert_id: UUID, signed: SignedCertificate) -> None:
    await conn.execute("UPDATE vault SET signed = $2 WHERE cert_id = $1", cert_id, signed.model_dump_json())


async def usable(conn: asyncpg.Connection, issue: str) -> list[VaultCertificate]:
    """Free certificates of an issue whose signed copy has arrived, smallest first, locked."""
    rows = await conn.fetch(
        """SELECT * FROM vault WHERE issue_code = $1 AND status = 'held' AND signed IS NOT NULL
           ORDER BY shares, cert_id FOR UPDATE""",
        issue,
    )
    return [_vault(r) for r in rows]


async def certificate(conn: asyncpg.Connection, cert_id: UUID) -> VaultCertificate | None:
    row = await conn.fetchrow("SELECT * FROM vault WHERE cert_id = $1", cert_id)
    return _vault(row) if row else None


async def mark(conn: asyncpg.Connection, cert_ids: list[UUID], status: str, busy_with: str | None = None) -> None:
    await conn.execute(
        "UPDATE vault SET status = $2, busy_with = $3 WHERE cert_id = ANY($1::uuid[])", cert_ids, status, busy_with
    )


async def holdings(conn: asyncpg.Connection) -> list[tuple[str, int]]:
    rows = await conn.fetch(
        "SELECT issue_code, sum(shares) AS shares FROM vault WHERE status <> 'gone' GROUP BY 1 ORDER BY 1"
    )
    return [(r["issue_code"], int(r["shares"])) for r in rows]


# --- deposits -------------------------------------------------------------------------------


def _deposit(row: asyncpg.Record) -> Deposit:
    return Deposit(
        row["handover_id"],
        row["transferor"],
        EndorsedCertificate.model_validate_json(row["certificate"]),
        row["cert_id"],
        row["issue_code"],
        row["shares"],
        row["account_id"],
        row["status"],
        row["reason"],
        row["new_cert_id"],
    )


async def record_handover(conn: asyncpg.Connection, d: Deposit, now: datetime) -> bool:
    done = await conn.fetchval(
        """INSERT INTO deposits (handover_id, transferor, certificate, cert_id, issue_code, shares, status,
               reason, received_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)
           ON CONFLICT DO NOTHING RETURNING true""",
        d.handover_id,
        d.transferor,
        d.certificate.model_dump_json(),
        d.cert_id,
        d.issue_code,
        d.shares,
        d.status,
        d.reason,
        now,
    )
    return bool(done)


async def deposit(conn: asyncpg.Connection, handover_id: UUID) -> Deposit | None:
    row = await conn.fetchrow("SELECT * FROM deposits WHERE handover_id = $1 FOR UPDATE", handover_id)
    return _deposit(row) if row else None


async def deposit_by(conn: asyncpg.Connection, column: str, request_id: UUID) -> Deposit | None:
    assert column in ("transfer_request_id", "certificate_request_id")
    row = await conn.fetchrow(f"SELECT * FROM deposits WHERE {column} = $1 FOR UPDATE", request_id)
    return _deposit(row) if row else None


async def update_deposit(conn: asyncpg.Connection, handover_id: UUID, now: datetime, **fields: object) -> None:
    allowed = {"status", "reason", "account_id", "transfer_request_id", "certificate_request_id", "new_cert_id"}
    assert set(fields) <= allowed
    sets = ", ".join(f"{name} = ${n}" for n, name in enumerate(fields, start=3))
    await conn.execute(
        f"UPDATE deposits SET updated_at = $2, {sets} WHERE handover_id = $1",
        handover_id,
        now,
        *fields.values(),
    )


async def deposits(conn: asyncpg.Connection) -> list[Deposit]:
    return [_deposit(r) for r in await conn.fetch("SELECT * FROM deposits ORDER BY received_at")]


# --- withdrawals ----------------------------------------------------------------------------


def _withdrawal(row: asyncpg.Record) -> Withdrawal:
    return Withdrawal(
        row["withdrawal_id"],
        row["account_id"],
        row["client"],
        row["issue_code"],
        row["quantity"],
        row["status"],
        row["cert_id"],
        row["updated_at"],
    )


async def insert_withdrawal(conn: asyncpg.Connection, w: Withdrawal) -> None:
    await conn.execute(
        """INSERT INTO withdrawals (withdrawal_id, account_id, client, issue_code, quantity, status,
               requested_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7)""",
        w.withdrawal_id,
        w.account_id,
        w.client,
        w.issue_code,
        w.quantity,
        w.status,
        w.updated_at,
    )


async def withdrawal_by_reissue(conn: asyncpg.Connection, request_id: UUID) -> Withdrawal | None:
    row = await conn.fetchrow("SELECT * FROM withdrawals WHERE reissue_request_id = $1 FOR UPDATE", request_id)
    return _withdrawal(row) if row else None


async def update_withdrawal(conn: asyncpg.Connection, withdrawal_id: UUID, now: datetime, **fields: object) -> None:
    allowed = {"status", "cert_id", "reissue_request_id", "reason"}
    assert set(fields) <= allowed
    sets = ", ".join(f"{name} = ${n}" for n, name in enumerate(fields, start=3))
    await conn.execute(
        f"UPDATE withdrawals SET updated_at = $2, {sets} WHERE withdrawal_id = $1",
        withdrawal_id,
        now,
        *fields.values(),
    )


async def withdrawals(conn: asyncpg.Connection, status: str | None = None) -> list[Withdrawal]:
    rows = await conn.fetch(
        "SELECT * FROM withdrawals WHERE $1::text IS NULL OR status = $1 ORDER BY requested_at FOR UPDATE", status
    )
    return [_withdrawal(r) for r in rows]


async def record_inquiry(conn: asyncpg.Connection, inquiry_id: UUID, now: datetime) -> None:
    await conn.execute("INSERT INTO register_inquiries (inquiry_id, sent_at) VALUES ($1, $2)", inquiry_id, now)


async def inquiry_sent_at(conn: asyncpg.Connection, inquiry_id: UUID) -> datetime | None:
    value: datetime | None = await conn.fetchval(
        "SELECT sent_at FROM register_inquiries WHERE inquiry_id = $1", inquiry_id
    )
    return value


async def free(conn: asyncpg.Connection, busy_with: str) -> None:
    await conn.execute(
        "UPDATE vault SET status = 'held', busy_with = NULL WHERE busy_with = $1 AND status = 'busy'", busy_with
    )
