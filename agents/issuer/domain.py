"""The issuer's decisions, free of I/O: examining an issuance request and drawing up the certificate."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

from schemas.certificates import ElectronicStockCertificate, ShareClass, TransferRestriction
from schemas.identity import Participant
from schemas.issuance import CertIdEntry, CertificateIssuanceRequest, IssuanceRefusal


@dataclass(frozen=True, slots=True)
class Offering:
    """A company's new-share offering as the issuer presents it (seed 001 Phase 1.1, R-001-14)."""

    issue_code: str
    company_name: str
    incorporated_on: date
    share_class: ShareClass
    offer_price: Decimal
    shares_offered: int
    shares_remaining: int
    minimum_lot: int = 1
    par_value_per_share: Decimal | None = None
    currency: str = "JPY"
    transfer_restriction: TransferRestriction = TransferRestriction.NONE
    convertible_details: str | None = None
    certificate_validity_days: int = 3650
    issuance_conditions: dict[str, Any] | None = None
    status: str = "open"


@dataclass(frozen=True, slots=True)
class IssuingAgent:
    """Seed 001 Fig. 6 fields 15–16, and the participant that signs."""

    user_id: str
    name: str
    address: str


def issuing_agent(user_id: str) -> IssuingAgent:
    return IssuingAgent(user_id, f"Kabuto Issuing Agent ({user_id})", f"kabuto:{user_id}")


@dataclass(frozen=True, slots=True)
class Refusal:
    reason: IssuanceRefusal
    detail: str


def examine(request: CertificateIssuanceRequest, requester: Participant, offering: Offering | None) -> Refusal | None:
    """Seed 001 S55–S56: check the request's contents and the requester's certificate policy."""
    if request.user_id != requester.user_id:
        return Refusal(
            IssuanceRefusal.HOLDER_MISMATCH,
            f"request names user {request.user_id} but was signed by {requester.user_id}",
        )
    if offering is None:
        return Refusal(IssuanceRefusal.UNKNOWN_ISSUE, f"no offering {request.issue_code}")
    return _check_offering(request, offering) or _check_policy(request, requester, offering)


def _check_offering(request: CertificateIssuanceRequest, offering: Offering) -> Refusal | None:
    if offering.status != "open":
        return Refusal(IssuanceRefusal.OFFERING_CLOSED, f"offering {offering.issue_code} is closed")
    if request.share_class is not offering.share_class:
        return Refusal(
            IssuanceRefusal.SHARE_CLASS_MISMATCH,
            f"{offering.issue_code} offers {offering.share_class.value} shares, not {request.share_class.value}",
        )
    if request.shares < offering.minimum_lot:
        return Refusal(
            IssuanceRefusal.BELOW_MINIMUM_LOT,
            f"{request.shares} shares is below the lot of {offering.minimum_lot}",
        )
    if request.shares % offering.minimum_lot:
        return Refusal(
            IssuanceRefusal.NOT_A_LOT_MULTIPLE,
            f"{request.shares} shares is not a multiple of the lot of {offering.minimum_lot}",
        )
    if request.shares > offering.shares_remaining:
        return Refusal(
            IssuanceRefusal.INSUFFICIENT_SHARES,
            f"{request.shares} shares asked, {offering.shares_remaining} remain",
        )
    return None


def _check_policy(request: CertificateIssuanceRequest, requester: Participant, offering: Offering) -> Refusal | None:
    policy = requester.policy
    if policy is None:
        return Refusal(IssuanceRefusal.NO_CERTIFICATE_POLICY, "the identity certificate carries no policy")
    if policy.currency != offering.currency:
        return Refusal(
            IssuanceRefusal.ACCOUNT_USAGE_LIMIT_EXCEEDED,
            f"the account usage limit is in {policy.currency}, the offering in {offering.currency}",
        )
    amount = offering.offer_price * request.shares
    if amount > policy.account_usage_limit:
        return Refusal(
            IssuanceRefusal.ACCOUNT_USAGE_LIMIT_EXCEEDED,
            f"{amount} {offering.currency} exceeds the account usage limit of "
            f"{policy.account_usage_limit} {policy.currency}",
        )
    return None


def certificate_number(issue_code: str, sequence: int) -> str:
    """The conventional certificate number (seed 001 Fig. 6 field 3); stays with the certificate."""
    return f"{issue_code}-{sequence:08d}"


def new_certificate(
    offering: Offering,
    request: CertificateIssuanceRequest,
    *,
    cert_id: UUID,
    number: str,
    today: date,
    agent: IssuingAgent,
) -> ElectronicStockCertificate:
    """Seed 001 S58: the certificate with every field of Fig. 6."""
    return certificate(
        offering,
        cert_id=cert_id,
        number=number,
        shares=request.shares,
        holder_name=request.holder_name,
        holder_user_id=request.user_id,
        today=today,
        agent=agent,
    )


def certificate(
    offering: Offering,
    *,
    cert_id: UUID,
    number: str,
    shares: int,
    holder_name: str,
    holder_user_id: str,
    today: date,
    agent: IssuingAgent,
) -> ElectronicStockCertificate:
    """A certificate of ``offering`` drawn up today for a holder (Fig. 6, R-001-08)."""
    return ElectronicStockCertificate(
        company_name=offering.company_name,
        incorporated_on=offering.incorporated_on,
        certificate_number=number,
        cert_id=cert_id,
        shares=shares,
        par_value_per_share=offering.par_value_per_share,
        currency=offering.currency,
        issued_on=today,
        expires_on=today + timedelta(days=offering.certificate_validity_days),
        holder_name=holder_name,
        holder_user_id=holder_user_id,
        share_class=offering.share_class,
        convertible_details=offering.convertible_details,
        transfer_restriction=offering.transfer_restriction,
        issuing_agent_name=agent.name,
        issuing_agent_address=agent.address,
        issue_code=offering.issue_code,
        issuing_agent_id=agent.user_id,
    )


# A snapshot part's CertIDs at most: a part of this many entries is about 190 KB of JSON, well
# under the size any agent takes by default (KABUTO_MAX_MESSAGE_BYTES, 1 MiB).
SNAPSHOT_PART = 2_000
# An entry's most bytes in a part (a CertID, the longest participant id, the largest quantity,
# the JSON around them), and what a message needs besides its entries (envelope, headers).
_ENTRY_MOST_BYTES, _MESSAGE_BESIDES = 200, 16 * 1024


def snapshot_part_size(max_message_bytes: int) -> int:
    """How many CertIDs a snapshot part holds, so that it fits ``max_message_bytes`` (found by
    review: a fixed 2,000 was refused again under a limit set below about 300 KB)."""
    return max(1, min(SNAPSHOT_PART, (max_message_bytes - _MESSAGE_BESIDES) // _ENTRY_MOST_BYTES))


@dataclass(frozen=True, slots=True)
class SnapshotPart:
    """The CertIDs of one issue above ``after`` and up to ``through`` (None: no bound)."""

    after: UUID | None
    through: UUID | None
    entries: tuple[CertIdEntry, ...]


def snapshot_parts(entries: Sequence[CertIdEntry], most: int) -> list[SnapshotPart]:
    """A full CertID list cut into parts of ``most`` entries at most, in CertID order, whose
    bounds leave no gap: the first has no lower bound, the last no upper one (seed 001 S61–S62:
    the list stays whole, each part is whole for its range). An empty list is one part."""
    ordered = sorted(entries, key=lambda entry: entry.cert_id)
    parts = []
    after: UUID | None = None
    for start in range(0, max(len(ordered), 1), most):
        chunk = tuple(ordered[start : start + most])
        last = start + most >= len(ordered)
        through = None if last else chunk[-1].cert_id
        parts.append(SnapshotPart(after, through, chunk))
        after = through
    return parts
