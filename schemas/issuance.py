"""Certificate issuance (seed 001 Phase 1): request 32, the issued ESC, refusals, CertID lists."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.catalogue import Message, message
from schemas.certificates import IssueCode, ShareClass, SignedCertificate
from schemas.identity import ParticipantId, Role
from schemas.money import Quantity
from schemas.sealed import SealedText


class DividendMethod(StrEnum):
    BANK_TRANSFER = "bank_transfer"
    SETTLEMENT_ACCOUNT = "settlement_account"
    POSTAL_ORDER = "postal_order"


class DividendDelivery(BaseModel):
    """Seed 001 Fig. 5 field 5: how dividends reach the holder, with the account to use sealed to
    the settlement agent's key (R-001-06, R-001-44). The issuer keeps the box in its register."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    method: DividendMethod
    account: SealedText = Field(
        description="Sealed to the settlement agent's key, context dividend_delivery/account/<holder>."
    )


class DividendDeliveryV1(BaseModel):
    """The dividend delivery of version 1 messages: the account in clear."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    method: DividendMethod
    account: str = Field(min_length=1, max_length=200)


class _IssuanceRequest(Message):
    user_id: ParticipantId
    holder_name: str = Field(min_length=1, max_length=200)
    holder_address: str = Field(min_length=1, max_length=400)
    issue_code: IssueCode
    share_class: ShareClass
    shares: Quantity


@message("certificate.issuance.request", version=2, senders={Role.INVESTOR}, recipients={Role.ISSUER})
class CertificateIssuanceRequest(_IssuanceRequest):
    """An investor asks for certificates of a new share issue (seed 001 message 32, Fig. 5); its
    dividend account is sealed to the settlement agent's key (R-001-06)."""

    dividend_delivery: DividendDelivery


@message("certificate.issuance.request", senders={Role.INVESTOR}, recipients={Role.ISSUER}, clear_accounts=True)
class CertificateIssuanceRequestV1(_IssuanceRequest):
    """Message 32 with the dividend account in clear (version 1); refused after the cut-over."""

    dividend_delivery: DividendDeliveryV1


@message("certificate.issued", senders={Role.ISSUER}, recipients={Role.INVESTOR, Role.BROKERAGE, Role.CUSTODY})
class CertificateIssued(Message):
    """The issuer delivers a signed electronic stock certificate (seed 001 S60)."""

    request_id: UUID
    certificate: SignedCertificate


class IssuanceRefusal(StrEnum):
    UNKNOWN_ISSUE = "unknown_issue"
    OFFERING_CLOSED = "offering_closed"
    SHARE_CLASS_MISMATCH = "share_class_mismatch"
    INSUFFICIENT_SHARES = "insufficient_shares"
    BELOW_MINIMUM_LOT = "below_minimum_lot"
    NOT_A_LOT_MULTIPLE = "not_a_lot_multiple"
    HOLDER_MISMATCH = "holder_mismatch"
    ACCOUNT_USAGE_LIMIT_EXCEEDED = "account_usage_limit_exceeded"
    NO_CERTIFICATE_POLICY = "no_certificate_policy"
    UNKNOWN_TRANSFER = "unknown_transfer"


@message(
    "certificate.issuance.refused", senders={Role.ISSUER}, recipients={Role.INVESTOR, Role.BROKERAGE, Role.CUSTODY}
)
class CertificateIssuanceRefused(Message):
    """The issuer's error notification for a request it will not satisfy (seed 001 S54, S57)."""

    request_id: UUID
    reason: IssuanceRefusal
    detail: str


class CertIdEntry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    cert_id: UUID
    user_id: ParticipantId
    shares: Quantity


@message("certid_list.updated", senders={Role.ISSUER}, recipients={Role.EXCHANGE})
class CertIdListUpdated(Message):
    """The CertID list of one issue (seed 001 Fig. 8, S61–S63): a full snapshot or a change.

    ``version`` rises with every change to the issue's register; a receiver applies each
    entry only if it is newer than what it holds, so lists may arrive late or twice. A large
    snapshot comes in parts, each the whole list for the CertIDs above ``after`` and up to
    ``through`` (None: no bound), so each part is applied on its own.
    """

    list_id: UUID
    issue_code: IssueCode
    share_class: ShareClass
    version: int = Field(ge=1)
    kind: Literal["snapshot", "change"]
    valid: tuple[CertIdEntry, ...] = ()
    retired: tuple[UUID, ...] = ()
    after: UUID | None = Field(default=None, description="A snapshot part covers the CertIDs above this one.")
    through: UUID | None = Field(default=None, description="A snapshot part covers the CertIDs up to this one.")

    @model_validator(mode="after")
    def _bounded_snapshot(self) -> CertIdListUpdated:
        if self.kind == "change" and (self.after is not None or self.through is not None):
            raise ValueError("only a snapshot has bounds (after, through)")
        if self.after is not None and self.through is not None and self.after >= self.through:
            raise ValueError("after must come before through")
        for entry in self.valid:
            if not self.covers(entry.cert_id):
                raise ValueError(f"CertID {entry.cert_id} lies outside the part's bounds")
        return self

    def covers(self, cert_id: UUID) -> bool:
        """Whether ``cert_id`` lies within this list's bounds (a list without bounds covers all)."""
        return (self.after is None or cert_id > self.after) and (self.through is None or cert_id <= self.through)


@message("certificate.issuance.completed", senders={Role.ISSUER})
class CertificateIssuanceCompleted(Message):
    """Event for integrators: a certificate was issued and registered."""

    issue_code: IssueCode
    cert_id: UUID
    certificate_number: str
    holder_user_id: ParticipantId
    shares: int
