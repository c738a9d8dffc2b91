"""The investor's decisions, free of I/O: is a delivered certificate one this wallet may keep?
What it fills in for its dividends, and what a refusal makes of a standing cover."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from enum import StrEnum

from broker.stock_certificates import CertificateInvalid, expired
from schemas.certificates import ElectronicStockCertificate
from schemas.dvp import StandingCoverRefusal
from schemas.issuance import DividendMethod


@dataclass(frozen=True, slots=True)
class Dividend:
    """How an investor wants its dividends (seed 001 Fig. 5 field 5), as it fills it in: the
    account in clear here, sealed to the settlement agent whenever a message carries it (R-001-44)."""

    method: DividendMethod
    account: str


def check_delivered(certificate: ElectronicStockCertificate, *, holder: str, delivered_by: str, today: date) -> None:
    """A verified certificate must name this wallet's holder, come from its issuer, and be in date."""
    if certificate.holder_user_id != holder:
        raise CertificateInvalid(
            f"certificate {certificate.cert_id} is held by {certificate.holder_user_id}, not {holder}"
        )
    if certificate.issuing_agent_id != delivered_by:
        raise CertificateInvalid(f"certificate of {certificate.issuing_agent_id} delivered by {delivered_by}")
    if expired(certificate, today):
        raise CertificateInvalid(f"certificate {certificate.cert_id} expired {certificate.expires_on}")


class CoverStatus(StrEnum):
    """A hosted investor's standing cover (docs/dvp.md, "Standing cover"), as its answers left it."""

    REQUESTED = "requested"
    ACTIVE = "active"  # buy orders on its account carry its box, and draw on it
    REFUSED = "refused"
    CLOSING = "closing"  # no new draws; closed once nothing drawn on it is live
    CLOSED = "closed"


def after_refusal(status: CoverStatus, reason: StandingCoverRefusal) -> CoverStatus | None:
    """What ``standing_cover.refused`` makes of a cover in ``status``; None if nothing of ours
    waited for a refusal.

    A requested cover was not opened. Otherwise a close was refused, and the exchange refuses a
    close only of a cover it does not know (``unknown_cover``) or that is not active there
    (``not_active``): as this agent closes only active covers, once, either means the exchange's
    record differs from ours. A cover the exchange does not know will never be closed, so it is
    marked refused and its account is free for another; one that is not active there is already
    closing or closed, and its ``standing_cover.closed`` settles it, so it stays as it is."""
    if status is CoverStatus.REQUESTED:
        return CoverStatus.REFUSED
    if status is CoverStatus.CLOSING and reason is StandingCoverRefusal.UNKNOWN_COVER:
        return CoverStatus.REFUSED
    if status in (CoverStatus.CLOSING, CoverStatus.CLOSED):
        return status
    return None
