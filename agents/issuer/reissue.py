"""Reissue decisions (seed 001 Phase 4, P4.4–P4.5, R-001-55/56), free of I/O.

A lost certificate gets a new CertID under its old number. A split gives the first part the
old number and the others new ones; a merge gives the one new certificate a new number. The
share count is conserved, and only valid certificates of the requester that no exchange order
holds may be reissued.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from uuid import UUID, uuid4

from agents.issuer.register import RegisterRecord
from schemas.lifecycle import LifecycleRefusal, ReissueKind, ReissueRequest

# A split makes at most as many certificates as a merge may name (``ReissueRequest.cert_ids``):
# its answer carries every new certificate, signed, about 1.5 KB each, and must stay one message
# well inside ``KABUTO_MAX_MESSAGE_BYTES`` (B97; the released schema leaves ``split_into`` unbounded).
MAX_SPLIT_PARTS = 100


@dataclass(frozen=True, slots=True)
class Refused(Exception):
    reason: LifecycleRefusal
    detail: str


def check_holdings(user_id: str, cert_ids: Sequence[UUID], records: Sequence[RegisterRecord | None]) -> None:
    """Every named certificate is valid, held by ``user_id`` and not committed to an exchange order."""
    for cert_id, record in zip(cert_ids, records, strict=True):
        if record is None or record.status != "valid":
            raise Refused(LifecycleRefusal.NOT_REGISTERED, f"CertID {cert_id} is not valid in the register")
        if record.holder_user_id != user_id:
            raise Refused(LifecycleRefusal.NOT_HOLDER, f"CertID {cert_id} is not registered to {user_id}")
        if record.committed_order is not None:
            raise Refused(
                LifecycleRefusal.COMMITTED, f"CertID {cert_id} is committed to exchange order {record.committed_order}"
            )


def check_request(request: ReissueRequest, records: Sequence[RegisterRecord]) -> int:
    """Refuse what cannot be reissued; return how many new certificate numbers the reissue needs."""
    first = records[0]
    if len(request.split_into) > MAX_SPLIT_PARTS:
        raise Refused(
            LifecycleRefusal.BAD_REQUEST,
            f"a split makes at most {MAX_SPLIT_PARTS} certificates, not {len(request.split_into)}",
        )
    if request.kind is ReissueKind.SPLIT and sum(request.split_into) != first.shares:
        raise Refused(
            LifecycleRefusal.SHARES_NOT_CONSERVED,
            f"parts {list(request.split_into)} do not add up to {first.shares} shares",
        )
    if request.kind is ReissueKind.MERGE and len({(r.issue_code, r.share_class) for r in records}) != 1:
        raise Refused(LifecycleRefusal.MIXED_ISSUES, "only certificates of one issue and class merge")
    return {ReissueKind.LOST: 0, ReissueKind.SPLIT: len(request.split_into) - 1, ReissueKind.MERGE: 1}[request.kind]


def plan(
    request: ReissueRequest,
    records: Sequence[RegisterRecord],
    new_number: Callable[[], str],
    new_id: Callable[[], UUID] = uuid4,
) -> list[RegisterRecord]:
    """The register records that replace ``records`` (after ``check_request``)."""
    check_request(request, records)
    first = records[0]
    match request.kind:
        case ReissueKind.LOST:
            return [replace(first, cert_id=new_id())]
        case ReissueKind.SPLIT:
            numbers = [first.certificate_number, *(new_number() for _ in request.split_into[1:])]
            return [
                replace(first, cert_id=new_id(), shares=n, certificate_number=number)
                for n, number in zip(request.split_into, numbers, strict=True)
            ]
        case ReissueKind.MERGE:
            return [
                replace(
                    first,
                    cert_id=new_id(),
                    shares=sum(r.shares for r in records),
                    certificate_number=new_number(),
                    acquired_on=min(r.acquired_on for r in records),
                )
            ]
    raise Refused(LifecycleRefusal.BAD_REQUEST, f"unknown reissue kind {request.kind}")
