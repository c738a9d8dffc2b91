"""SQL for the issuer's own schema; records never leave this module."""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import asyncpg

from agents.issuer.domain import Offering
from agents.issuer.register import RegisterRecord
from broker.db import unnest_columns
from schemas.certificates import (
    ElectronicStockCertificate,
    IssuerSignature,
    ShareClass,
    SignedCertificate,
    TransferRestriction,
)
from schemas.issuance import CertIdEntry, CertificateIssuanceRequest
from schemas.lifecycle import Holding


class OfferingExists(Exception):
    """An offering with that issue code is already open."""


async def open_offering(connection: asyncpg.Connection, offering: Offering) -> None:
    try:
        await connection.execute(
            """INSERT INTO offerings (issue_code, company_name, incorporated_on, share_class,
                   par_value_per_share, currency, offer_price, shares_offered, shares_remaining,
                   minimum_lot, transfer_restriction, convertible_details,
                   certificate_validity_days, issuance_conditions)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9, $10, $11, $12, $13::jsonb)""",
            offering.issue_code,
            offering.company_name,
            offering.incorporated_on,
            offering.share_class.value,
            offering.par_value_per_share,
            offering.currency,
            offering.offer_price,
            offering.shares_offered,
            offering.minimum_lot,
            offering.transfer_restriction.value,
            offering.convertible_details,
            offering.certificate_validity_days,
            json.dumps(offering.issuance_conditions or {}),
        )
    except asyncpg.UniqueViolationError as exc:
        raise OfferingExists(offering.issue_code) from exc


async def offering_for_update(connection: asyncpg.Connection, issue_code: str) -> Offering | None:
    """The offering, locked until the transaction ends so allocations never race."""
    row = await connection.fetchrow("SELECT * FROM offerings WHERE issue_code = $1 FOR UPDATE", issue_code)
    return _offering(row) if row else None


async def offerings(connection: asyncpg.Connection) -> list[Offering]:
    rows = await connection.fetch("SELECT * FROM offerings ORDER BY issue_code")
    return [_offering(r) for r in rows]


def _offering(row: asyncpg.Record) -> Offering:
    return Offering(
        issue_code=row["issue_code"],
        company_name=row["company_name"],
        incorporated_on=row["incorporated_on"],
        share_class=ShareClass(row["share_class"]),
        offer_price=row["offer_price"],
        shares_offered=row["shares_offered"],
        shares_remaining=row["shares_remaining"],
        minimum_lot=row["minimum_lot"],
        par_value_per_share=row["par_value_per_share"],
        currency=row["currency"],
        transfer_restriction=TransferRestriction(row["transfer_restriction"]),
        convertible_details=row["convertible_details"],
        certificate_validity_days=row["certificate_validity_days"],
        issuance_conditions=json.loads(row["issuance_conditions"]),
        status=row["status"],
    )


@dataclass(frozen=True, slots=True)
class Allocation:
    certificate_sequence: int
    register_version: int


async def allocate(connection: asyncpg.Connection, issue_code: str, shares: int) -> Allocation:
    """Take shares from the offering and draw a certificate number and a register version."""
    row = await connection.fetchrow(
        """UPDATE offerings
           SET shares_remaining = shares_remaining - $2,
               next_certificate_number = next_certificate_number + 1,
               register_version = register_version + 1
           WHERE issue_code = $1
           RETURNING next_certificate_number - 1 AS sequence, register_version""",
        issue_code,
        shares,
    )
    return Allocation(row["sequence"], row["register_version"])


@dataclass(frozen=True, slots=True)
class TransferDraw:
    offering: Offering
    certificate_sequence: int
    register_version: int


async def draw_for_transfer(connection: asyncpg.Connection, old: RegisterRecord) -> TransferDraw | None:
    """S114 and the transfer's numbers: ``old`` retired (the row stays as history), and the
    certificate number (for the buyer's or the remainder's certificate) and register version
    drawn with the offering they are of, in one round trip (None: no offering). The retirement
    comes first, in its own statement, so that a record inserted afterwards may carry the old
    certificate number (one valid CertID per number, R-001-09)."""
    return (await draw_for_transfers(connection, [old]))[0]


async def draw_for_transfers(
    connection: asyncpg.Connection, olds: Sequence[RegisterRecord]
) -> list[TransferDraw | None]:
    """``draw_for_transfer`` for several transfers (of distinct CertIDs), in one round trip: each
    one's numbers, in order, as if drawn one after the other."""
    rows = await connection.fetch(
        """WITH retired AS (UPDATE register SET status = 'retired', retired_at = now() WHERE cert_id = ANY($2::uuid[])),
           drawn AS (SELECT issue_code, count(*) AS k FROM unnest($1::text[]) AS t (issue_code) GROUP BY issue_code)
           UPDATE offerings o
           SET next_certificate_number = o.next_certificate_number + drawn.k,
               register_version = o.register_version + drawn.k
           FROM drawn WHERE o.issue_code = drawn.issue_code
           RETURNING o.*, o.next_certificate_number - drawn.k AS first_sequence,
                     o.register_version - drawn.k AS first_version""",
        [old.issue_code for old in olds],
        [old.cert_id for old in olds],
    )
    found = {row["issue_code"]: row for row in rows}
    taken: dict[str, int] = {}
    draws: list[TransferDraw | None] = []
    for old in olds:
        row = found.get(old.issue_code)
        if row is None:
            draws.append(None)
            continue
        i = taken[old.issue_code] = taken.get(old.issue_code, -1) + 1
        draws.append(TransferDraw(_offering(row), row["first_sequence"] + i, row["first_version"] + i + 1))
    return draws


async def register(
    connection: asyncpg.Connection,
    certificate: ElectronicStockCertificate,
    request: CertificateIssuanceRequest,
    conditions: dict[str, Any],
) -> None:
    """Seed 001 S59: the new shareholder register (DB16) record."""
    await insert_record(
        connection,
        RegisterRecord(
            cert_id=certificate.cert_id,
            issue_code=certificate.issue_code,
            certificate_number=certificate.certificate_number,
            holder_user_id=certificate.holder_user_id,
            holder_name=certificate.holder_name,
            holder_address=request.holder_address,
            shares=certificate.shares,
            share_class=certificate.share_class,
            acquired_on=certificate.issued_on,
            issuance_conditions=conditions,
            dividend_method=request.dividend_delivery.method.value,
            dividend_account=request.dividend_delivery.account,
        ),
    )


_RECORD_COLUMNS = """cert_id, issue_code, certificate_number, holder_user_id, holder_name, holder_address,
                     shares, share_class, acquired_on, issuance_conditions, dividend_method,
                     dividend_account, status, committed_order, committed_by"""
_RECORD_NAMES = tuple(name.strip() for name in _RECORD_COLUMNS.split(","))
# The values of a record in the order of _RECORD_COLUMNS, as parameters $1..$15 of an insert.
_RECORD_VALUES = "$1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb, $11, $12, $13, $14, $15"


def _record_values(record: RegisterRecord) -> tuple[object, ...]:
    return (
        record.cert_id,
        record.issue_code,
        record.certificate_number,
        record.holder_user_id,
        record.holder_name,
        record.holder_address,
        record.shares,
        record.share_class.value,
        record.acquired_on,
        json.dumps(record.issuance_conditions),
        record.dividend_method,
        record.dividend_account,
        record.status,
        record.committed_order,
        record.committed_by,
    )


def record_columns(alias: str) -> str:
    """The register's columns of table alias ``alias``, each named ``<alias>_<column>``: for a
    read that joins the register to another table whose column names it shares."""
    return ", ".join(f"{alias}.{name} AS {alias}_{name}" for name in _RECORD_NAMES)


def record_of(row: asyncpg.Record, alias: str | None = None) -> RegisterRecord:
    """A register record from a row of ``_RECORD_COLUMNS`` (or of ``record_columns(alias)``)."""
    values = {name: row[f"{alias}_{name}" if alias else name] for name in _RECORD_NAMES}
    values["share_class"] = ShareClass(values["share_class"])
    values["issuance_conditions"] = json.loads(values["issuance_conditions"])
    return RegisterRecord(**values)


async def insert_record(connection: asyncpg.Connection, record: RegisterRecord) -> None:
    await connection.execute(
        f"INSERT INTO register ({_RECORD_COLUMNS}) VALUES ({_RECORD_VALUES})", *_record_values(record)
    )


async def record(connection: asyncpg.Connection, cert_id: UUID) -> RegisterRecord | None:
    """A register row, locked until the transaction ends."""
    row = await connection.fetchrow(f"SELECT {_RECORD_COLUMNS} FROM register WHERE cert_id = $1 FOR UPDATE", cert_id)
    return record_of(row) if row else None


async def records(connection: asyncpg.Connection, cert_ids: Sequence[UUID]) -> dict[UUID, RegisterRecord]:
    """Register rows by CertID (those that exist), locked until the transaction ends, in CertID
    order so that two transactions locking several cannot deadlock."""
    rows = await connection.fetch(
        f"SELECT {_RECORD_COLUMNS} FROM register WHERE cert_id = ANY($1::uuid[]) ORDER BY cert_id FOR UPDATE",
        list(cert_ids),
    )
    return {row["cert_id"]: record_of(row) for row in rows}


async def retire(connection: asyncpg.Connection, cert_id: UUID) -> None:
    """S114: the old CertID stops being valid; the row stays as history."""
    await connection.execute("UPDATE register SET status = 'retired', retired_at = now() WHERE cert_id = $1", cert_id)


async def next_register_version(connection: asyncpg.Connection, issue_code: str) -> int:
    version: int = await connection.fetchval(
        "UPDATE offerings SET register_version = register_version + 1 WHERE issue_code = $1 RETURNING register_version",
        issue_code,
    )
    return version


async def next_certificate_number(connection: asyncpg.Connection, issue_code: str) -> int:
    sequence: int = await connection.fetchval(
        "UPDATE offerings SET next_certificate_number = next_certificate_number + 1 WHERE issue_code = $1 "
        "RETURNING next_certificate_number - 1",
        issue_code,
    )
    return sequence


async def offering(connection: asyncpg.Connection, issue_code: str) -> Offering | None:
    return (await offerings_of(connection, [issue_code])).get(issue_code)


async def offerings_of(connection: asyncpg.Connection, issue_codes: Collection[str]) -> dict[str, Offering]:
    rows = await connection.fetch("SELECT * FROM offerings WHERE issue_code = ANY($1::text[])", list(issue_codes))
    return {row["issue_code"]: _offering(row) for row in rows}


@dataclass(frozen=True, slots=True)
class NameTransfer:
    """A name transfer to record (S115–S118): the transferee's new register record and the history row's facts."""

    buyer: RegisterRecord
    seller_user_id: str
    old_cert_id: UUID
    remainder_cert_id: UUID | None
    matching_number: int | None


async def record_transfer(
    connection: asyncpg.Connection,
    *,
    buyer: RegisterRecord,
    seller_user_id: str,
    old_cert_id: UUID,
    remainder_cert_id: UUID | None,
    matching_number: int | None,
) -> int:
    """S115–S118: the transferee registered under its new CertID, a name-transfer number, and a
    record in the history list 17, in one round trip. The old CertID must be retired already."""
    transfer = NameTransfer(buyer, seller_user_id, old_cert_id, remainder_cert_id, matching_number)
    return (await record_transfers(connection, [transfer]))[0]


async def record_transfers(connection: asyncpg.Connection, transfers: Sequence[NameTransfer]) -> list[int]:
    """``record_transfer`` for several transfers, in one round trip: each one's name-transfer
    number, in order (drawn in that order)."""
    records = list(zip(*(_record_values(t.buyer) for t in transfers), strict=True))
    rows = await connection.fetch(
        f"""WITH buyer AS (
                INSERT INTO register ({_RECORD_COLUMNS})
                SELECT {_RECORD_COLUMNS} FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[],
                    $6::text[], $7::bigint[], $8::text[], $9::date[], $10::jsonb[], $11::text[], $12::text[],
                    $13::text[], $14::bigint[], $15::text[]) AS r ({_RECORD_COLUMNS})
                RETURNING issue_code, cert_id, shares, holder_user_id),
            history AS (
                SELECT * FROM unnest($16::uuid[], $17::text[], $18::uuid[], $19::uuid[], $20::bigint[], $21::text[])
                    WITH ORDINALITY AS h (cert_id, seller_user_id, old_cert_id, remainder_cert_id, matching_number,
                                          kind, n))
            INSERT INTO name_transfers (name_transfer_number, issue_code, cert_id, shares, buyer_user_id,
                seller_user_id, old_cert_id, remainder_cert_id, matching_number, kind)
            SELECT nextval('name_transfer_numbers'), buyer.issue_code, buyer.cert_id, buyer.shares,
                   buyer.holder_user_id, h.seller_user_id, h.old_cert_id, h.remainder_cert_id, h.matching_number, h.kind
            FROM (SELECT * FROM history ORDER BY n) h JOIN buyer ON buyer.cert_id = h.cert_id
            ORDER BY h.n
            RETURNING name_transfer_number, cert_id""",
        *(list(column) for column in records),
        [t.buyer.cert_id for t in transfers],
        [t.seller_user_id for t in transfers],
        [t.old_cert_id for t in transfers],
        [t.remainder_cert_id for t in transfers],
        [t.matching_number for t in transfers],
        ["exchange" if t.matching_number is not None else "off_exchange" for t in transfers],
    )
    numbers = {row["cert_id"]: row["name_transfer_number"] for row in rows}
    return [numbers[t.buyer.cert_id] for t in transfers]


@dataclass(frozen=True, slots=True)
class TransferRecord:
    name_transfer_number: int
    cert_id: UUID
    buyer_user_id: str
    seller_user_id: str


@dataclass(frozen=True, slots=True)
class Transferred:
    """A name transfer with the register record of the CertID it created (locked) and the
    certificate issued for that CertID, if one was."""

    transfer: TransferRecord
    record: RegisterRecord
    signed: SignedCertificate | None


def _transfer_record(row: asyncpg.Record) -> TransferRecord:
    return TransferRecord(row["name_transfer_number"], row["cert_id"], row["buyer_user_id"], row["seller_user_id"])


async def transferred(connection: asyncpg.Connection, ntn: int) -> Transferred | None:
    """S145 for one name-transfer number (``transferred_set``)."""
    return (await transferred_set(connection, [ntn])).get(ntn)


async def transferred_set(connection: asyncpg.Connection, ntns: Sequence[int]) -> dict[int, Transferred]:
    """S145: the history list 17 searched by name-transfer numbers, each with the transferee's
    register record (locked until the transaction ends, in CertID order), then the certificate
    issued for it; by number, a number not found missing.

    The certificates are read in a statement of their own, after the locks: a request that waited
    for another request of the same NTN must see the certificate that one committed (a join would
    read it in the snapshot taken before the wait, and issue a second)."""
    rows = await connection.fetch(
        f"""SELECT n.name_transfer_number, n.cert_id, n.buyer_user_id, n.seller_user_id, {record_columns("r")}
            FROM name_transfers n JOIN register r ON r.cert_id = n.cert_id
            WHERE n.name_transfer_number = ANY($1::bigint[])
            ORDER BY r.cert_id
            FOR UPDATE OF r""",
        list(ntns),
    )
    transfers = [(_transfer_record(r), record_of(r, "r")) for r in rows]
    issued = await signed_set(connection, [transfer.cert_id for transfer, _ in transfers])
    return {t.name_transfer_number: Transferred(t, record, issued.get(t.cert_id)) for t, record in transfers}


async def complete_holder(
    connection: asyncpg.Connection, cert_id: UUID, name: str, address: str, method: str, account: str
) -> RegisterRecord:
    """S148 for one record (``complete_holders``)."""
    return (await complete_holders(connection, [(cert_id, name, address, method, account)]))[cert_id]


async def complete_holders(
    connection: asyncpg.Connection, rows: Sequence[tuple[UUID, str, str, str, str]]
) -> dict[UUID, RegisterRecord]:
    """S148: what each transferee adds to its register record — rows of (CertID, name, address,
    dividend method, dividend account) — in one statement; the records as they are then."""
    records = await connection.fetch(
        f"""UPDATE register SET holder_name = h.h_name, holder_address = h.h_address, dividend_method = h.h_method,
                dividend_account = h.h_account
            FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[])
                AS h (h_cert, h_name, h_address, h_method, h_account)
            WHERE cert_id = h.h_cert RETURNING {_RECORD_COLUMNS}""",
        *unnest_columns(rows, 5),
    )
    return {r["cert_id"]: record_of(r) for r in records}


async def release(connection: asyncpg.Connection, exchange: str, sell_order: int, seller: str) -> int:
    """The exchange closed the sell order: remainders committed to it are the holder's again."""
    return (await release_all(connection, [(exchange, sell_order, seller)]))[0]


async def release_all(connection: asyncpg.Connection, releases: Sequence[tuple[str, int, str]]) -> list[int]:
    """``release`` for each of ``releases`` (exchange, sell order, seller), in one statement; per
    release, in order, how many certificates it freed."""
    rows = await connection.fetch(RELEASE_ALL, *unnest_columns(releases, 3))
    return [int(r["freed"]) for r in rows]


# By the order that committed them (index register_committed, migration 0082).
RELEASE_ALL = """WITH input AS (
        SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[]) WITH ORDINALITY
            AS x (x_exchange, x_order, x_seller, n)),
    freed AS (
        UPDATE register SET committed_order = NULL, committed_by = NULL
        FROM input
        WHERE committed_by = x_exchange AND committed_order = x_order AND holder_user_id = x_seller
          AND cert_id NOT IN (SELECT cert_id FROM reservations WHERE status = 'reserved')
        RETURNING n)
    SELECT (SELECT count(*) FROM freed WHERE freed.n = input.n) AS freed FROM input ORDER BY n"""


async def record_signed(connection: asyncpg.Connection, cert_id: UUID, signed: SignedCertificate) -> None:
    await record_signed_all(connection, [(cert_id, signed)])


async def record_signed_all(connection: asyncpg.Connection, rows: Sequence[tuple[UUID, SignedCertificate]]) -> None:
    """Certificates issued, each kept byte for byte under its CertID, in one statement."""
    if not rows:
        return
    await connection.execute(
        """INSERT INTO issued_certificates (cert_id, content, signature, signer_certificate)
           SELECT * FROM unnest($1::uuid[], $2::bytea[], $3::bytea[], $4::bytea[])""",
        [cert_id for cert_id, _ in rows],
        [signed.content for _, signed in rows],
        [signed.issuer_signature.signature for _, signed in rows],
        [signed.issuer_signature.certificate for _, signed in rows],
    )


async def signed(connection: asyncpg.Connection, cert_id: UUID) -> SignedCertificate | None:
    """A certificate already issued for this CertID, byte for byte."""
    return (await signed_set(connection, [cert_id])).get(cert_id)


async def signed_set(connection: asyncpg.Connection, cert_ids: Sequence[UUID]) -> dict[UUID, SignedCertificate]:
    """The certificates already issued for these CertIDs, byte for byte, by CertID."""
    if not cert_ids:
        return {}
    rows = await connection.fetch(
        """SELECT cert_id, content, signature, signer_certificate FROM issued_certificates
           WHERE cert_id = ANY($1::uuid[]) AND signer_certificate IS NOT NULL""",
        list(cert_ids),
    )
    return {
        r["cert_id"]: SignedCertificate(
            content=r["content"],
            issuer_signature=IssuerSignature(certificate=r["signer_certificate"], signature=r["signature"]),
        )
        for r in rows
    }


async def record_request(
    connection: asyncpg.Connection,
    request_id: UUID,
    request: CertificateIssuanceRequest,
    *,
    outcome: str,
    reason: str | None = None,
    cert_id: UUID | None = None,
) -> None:
    await connection.execute(
        """INSERT INTO issuance_requests (request_id, user_id, issue_code, shares, outcome,
               reason, cert_id) VALUES ($1, $2, $3, $4, $5, $6, $7)""",
        request_id,
        request.user_id,
        request.issue_code,
        request.shares,
        outcome,
        reason,
        cert_id,
    )


@dataclass(frozen=True, slots=True)
class CertIdSnapshot:
    issue_code: str
    share_class: ShareClass
    version: int
    entries: tuple[CertIdEntry, ...]


async def certid_snapshots(connection: asyncpg.Connection) -> list[CertIdSnapshot]:
    """Seed 001 S61–S62: every issue's valid (CertID, holder) pairs at its register version."""
    issues = await connection.fetch(
        "SELECT issue_code, share_class, register_version FROM offerings WHERE register_version > 0 ORDER BY issue_code"
    )
    snapshots = []
    for issue in issues:
        rows = await connection.fetch(
            "SELECT cert_id, holder_user_id, shares FROM register "
            "WHERE issue_code = $1 AND status = 'valid' ORDER BY cert_id",
            issue["issue_code"],
        )
        entries = tuple(
            CertIdEntry(cert_id=r["cert_id"], user_id=r["holder_user_id"], shares=r["shares"]) for r in rows
        )
        snapshots.append(
            CertIdSnapshot(issue["issue_code"], ShareClass(issue["share_class"]), issue["register_version"], entries)
        )
    return snapshots


async def register_rows(connection: asyncpg.Connection, issue_code: str) -> list[dict[str, object]]:
    rows = await connection.fetch(
        """SELECT cert_id, certificate_number, holder_user_id, holder_name, shares, share_class,
                  acquired_on, dividend_method, status
           FROM register WHERE issue_code = $1 ORDER BY certificate_number, registered_at""",
        issue_code,
    )
    return [dict(r) for r in rows]


async def holdings(connection: asyncpg.Connection, user_id: str, issue_code: str | None) -> list[Holding]:
    """P4.2: the register searched by user id — the valid certificates and whether each was issued."""
    rows = await connection.fetch(
        """SELECT r.cert_id, r.issue_code, r.share_class, r.certificate_number, r.shares, r.committed_order,
                  i.cert_id IS NOT NULL AS issued
           FROM register r LEFT JOIN issued_certificates i USING (cert_id)
           WHERE r.holder_user_id = $1 AND r.status = 'valid' AND ($2::text IS NULL OR r.issue_code = $2)
           ORDER BY r.issue_code, r.certificate_number""",
        user_id,
        issue_code,
    )
    return [Holding(**dict(r)) for r in rows]


async def record_reissue(
    connection: asyncpg.Connection, request_id: UUID, user_id: str, kind: str, retired: list[UUID], created: list[UUID]
) -> None:
    await connection.execute(
        "INSERT INTO reissues (request_id, user_id, kind, retired, created) VALUES ($1, $2, $3, $4, $5)",
        request_id,
        user_id,
        kind,
        retired,
        created,
    )


async def history(connection: asyncpg.Connection, cert_id: UUID) -> list[dict[str, Any]]:
    """Every event in the life of the certificates connected to ``cert_id``: issuance, name
    transfers and reissues, oldest first, following CertIDs back and forth."""
    rows = await connection.fetch(
        """WITH RECURSIVE links(a, b) AS (
               SELECT old_cert_id, cert_id FROM name_transfers
               UNION ALL SELECT old_cert_id, remainder_cert_id FROM name_transfers WHERE remainder_cert_id IS NOT NULL
               UNION ALL SELECT o, n FROM reissues, unnest(retired) o, unnest(created) n
           ), family(id) AS (
               SELECT $1::uuid
               UNION SELECT CASE WHEN l.a = f.id THEN l.b ELSE l.a END FROM links l JOIN family f ON f.id IN (l.a, l.b)
           )
           SELECT * FROM (
               SELECT r.registered_at AS at, 'registered' AS event, r.cert_id, NULL::uuid AS from_cert_id,
                      r.holder_user_id AS holder, r.shares, r.certificate_number, r.status, NULL::bigint AS number
               FROM register r WHERE r.cert_id IN (SELECT id FROM family)
               UNION ALL
               SELECT t.transferred_at, 'name transfer (' || t.kind || ')', t.cert_id, t.old_cert_id, t.buyer_user_id,
                      t.shares, NULL, NULL, t.name_transfer_number
               FROM name_transfers t WHERE t.cert_id IN (SELECT id FROM family)
               UNION ALL
               SELECT x.reissued_at, 'reissue (' || x.kind || ')', n, o, x.user_id, NULL, NULL, NULL, x.reissue_number
               FROM reissues x, unnest(x.retired) o, unnest(x.created) n WHERE n IN (SELECT id FROM family)
           ) events ORDER BY at, event""",
        cert_id,
    )
    return [dict(r) for r in rows]
