"""The shareholder register's decisions for a name transfer (seed 001 S108–S118), free of I/O.

A transfer retires the presented CertID and registers the transferee under a new one. A
partial sale (fewer shares than the certificate) also registers the seller's remainder under
a new CertID: the remainder keeps the certificate number, the buyer's shares get a new one;
a whole certificate sold carries its number over to the buyer (R-001-09).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date
from typing import Any
from uuid import UUID

from schemas.certificates import ElectronicStockCertificate, ShareClass
from schemas.trading import NameTransferRequest, TransferRefusal


@dataclass(frozen=True, slots=True)
class RegisterRecord:
    """One row of the shareholder register DB16 (seed 001 Fig. 7)."""

    cert_id: UUID
    issue_code: str
    certificate_number: str
    holder_user_id: str
    holder_name: str
    holder_address: str
    shares: int
    share_class: ShareClass
    acquired_on: date
    issuance_conditions: dict[str, Any]
    dividend_method: str | None = None
    dividend_account: str | None = None  # sealed to settlement (R-001-44): the issuer cannot read it
    status: str = "valid"
    committed_order: int | None = None
    committed_by: str | None = None


@dataclass(frozen=True, slots=True)
class TransferRefused(Exception):
    reason: TransferRefusal
    detail: str


def check_transfer(
    request: NameTransferRequest, certificate: ElectronicStockCertificate, record: RegisterRecord | None
) -> None:
    """S108–S113: the request matches the certificate, and the certificate the register."""
    if request.cert_id != certificate.cert_id or request.issue_code != certificate.issue_code:
        raise TransferRefused(
            TransferRefusal.CONTENT_MISMATCH,
            f"request is for {request.issue_code} {request.cert_id}, certificate is "
            f"{certificate.issue_code} {certificate.cert_id}",
        )
    if request.shares > certificate.shares:
        raise TransferRefused(
            TransferRefusal.QUANTITY_EXCEEDS_CERTIFICATE,
            f"{request.shares} shares asked of a certificate of {certificate.shares}",
        )
    if request.seller_user_id != certificate.holder_user_id:
        raise TransferRefused(
            TransferRefusal.CONTENT_MISMATCH,
            f"seller {request.seller_user_id} does not hold the certificate ({certificate.holder_user_id})",
        )
    if (
        record is None
        or record.status != "valid"
        or record.holder_user_id != certificate.holder_user_id
        or record.shares != certificate.shares
    ):
        raise TransferRefused(
            TransferRefusal.NOT_REGISTERED,
            f"CertID {certificate.cert_id} of {certificate.holder_user_id} is not valid in the register",
        )


def committed_to(record: RegisterRecord, exchange: str, sell_order: int) -> bool:
    """Is this certificate a remainder the seller already committed to this exchange order?"""
    return record.committed_by == exchange and record.committed_order == sell_order


@dataclass(frozen=True, slots=True)
class Transfer:
    buyer: RegisterRecord
    remainder: RegisterRecord | None


def transfer(
    old: RegisterRecord,
    *,
    shares: int,
    buyer_user_id: str,
    buyer_name: str,
    buyer_address: str,
    buyer_cert_id: UUID,
    remainder_cert_id: UUID,
    new_number: str,
    today: date,
    commit_remainder: tuple[str, int] | None,
) -> Transfer:
    """S114–S116: the buyer's record (no dividend method yet) and, after a partial sale, the
    seller's remainder, committed to the sell order when it still has shares to sell."""
    partial = shares < old.shares
    buyer = replace(
        old,
        cert_id=buyer_cert_id,
        certificate_number=new_number if partial else old.certificate_number,
        holder_user_id=buyer_user_id,
        holder_name=buyer_name,
        holder_address=buyer_address,
        shares=shares,
        acquired_on=today,
        dividend_method=None,
        dividend_account=None,
        committed_order=None,
        committed_by=None,
    )
    if not partial:
        return Transfer(buyer, None)
    committed_by, committed_order = commit_remainder or (None, None)
    remainder = replace(
        old,
        cert_id=remainder_cert_id,
        shares=old.shares - shares,
        committed_by=committed_by,
        committed_order=committed_order,
    )
    return Transfer(buyer, remainder)
