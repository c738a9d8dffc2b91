"""SQL for the issuer's own schema; records never leave this module."""

from __future__ import annotations

import json
from dataclasses import dataclass
from uuid import UUID

import asyncpg

from agents.issuer.domain import Offering
from schemas.certificates import (
    ElectronicStockCertificate,
    ShareClass,
    SignedCertificate,
    TransferRestriction,
)
from schemas.issuance import CertIdEntry, CertificateIssuanceRequest


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


async def register(
    connection: asyncpg.Connection,
    certificate: ElectronicStockCertificate,
    request: CertificateIssuanceRequest,
    conditions: dict[str, object],
) -> None:
    """Seed 001 S59: the new shareholder register (DB16) record."""
    await connection.execute(
        """INSERT INTO register (cert_id, issue_code, certificate_number, holder_user_id,
               holder_name, holder_address, shares, share_class, acquired_on,
               issuance_conditions, dividend_method, dividend_account)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb, $11, $12)""",
        certificate.cert_id,
        certificate.issue_code,
        certificate.certificate_number,
        certificate.holder_user_id,
        certificate.holder_name,
        request.holder_address,
        certificate.shares,
        certificate.share_class.value,
        certificate.issued_on,
        json.dumps(conditions),
        request.dividend_delivery.method.value,
        request.dividend_delivery.account,
    )


async def record_signed(connection: asyncpg.Connection, cert_id: UUID, signed: SignedCertificate) -> None:
    await connection.execute(
        "INSERT INTO issued_certificates (cert_id, content, signature) VALUES ($1, $2, $3)",
        cert_id,
        signed.content,
        signed.issuer_signature.signature,
    )


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
        "SELECT issue_code, share_class, register_version FROM offerings "
        "WHERE register_version > 0 ORDER BY issue_code"
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
            CertIdSnapshot(
                issue["issue_code"], ShareClass(issue["share_class"]), issue["register_version"], entries
            )
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
