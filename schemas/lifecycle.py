"""The certificate lifecycle off the exchange (seed 001 Phases 3 and 4): hand-over between
investors, name transfer 41/42, holdings inquiry 44/45 and reissue 46."""

from __future__ import annotations

from enum import StrEnum
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.catalogue import Message, message
from schemas.certificates import EndorsedCertificate, IssueCode, ShareClass, SignedCertificate
from schemas.identity import ParticipantId, Role


@message("certificate.handover", senders={Role.INVESTOR, Role.CUSTODY}, recipients={Role.INVESTOR, Role.CUSTODY})
class CertificateHandover(Message):
    """P3.1: the transferor hands a certificate to the transferee, countersigned for it; the
    transferor's and the issuer's identity certificates travel inside the endorsed certificate."""

    handover_id: UUID
    certificate: EndorsedCertificate
    note: str = Field(default="", max_length=400)


@message("name_transfer.off_exchange", senders={Role.INVESTOR, Role.CUSTODY}, recipients={Role.ISSUER})
class OffExchangeTransferRequest(Message):
    """Name-transfer request 41 (Fig. 27): the transferee asks to be registered."""

    cert_id: UUID
    user_id: ParticipantId
    holder_name: str = Field(min_length=1, max_length=200)
    holder_address: str = Field(min_length=1, max_length=400)
    certificate: EndorsedCertificate


@message("name_transfer.registered", senders={Role.ISSUER}, recipients={Role.INVESTOR, Role.CUSTODY})
class OffExchangeTransferRegistered(Message):
    """Name-transfer response 42: the transferee is registered under a new CertID; it asks for the
    certificate with 43 quoting the name-transfer number."""

    request_id: UUID
    name_transfer_number: int
    new_cert_id: UUID


class LifecycleRefusal(StrEnum):
    CERTIFICATE_SIGNATURE_INVALID = "certificate_signature_invalid"
    ENDORSEMENT_INVALID = "endorsement_invalid"
    CONTENT_MISMATCH = "content_mismatch"
    NOT_REGISTERED = "not_registered"
    NOT_HOLDER = "not_holder"
    COMMITTED = "committed"
    SHARES_NOT_CONSERVED = "shares_not_conserved"
    MIXED_ISSUES = "mixed_issues"
    TRANSFER_RESTRICTED = "transfer_restricted"
    BAD_REQUEST = "bad_request"


@message("name_transfer.refused", senders={Role.ISSUER}, recipients={Role.INVESTOR, Role.CUSTODY})
class OffExchangeTransferRefused(Message):
    """E19: the issuer will not register the transfer; the register is unchanged."""

    request_id: UUID
    reason: LifecycleRefusal
    detail: str


@message("holdings.inquiry", senders={Role.INVESTOR, Role.CUSTODY}, recipients={Role.ISSUER})
class HoldingsInquiry(Message):
    """Holdings inquiry 44 (P4.1): what the register holds for this user."""

    user_id: ParticipantId
    issue_code: IssueCode | None = None


class Holding(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    cert_id: UUID
    issue_code: IssueCode
    share_class: ShareClass
    certificate_number: str
    shares: int
    issued: bool = Field(description="Whether a certificate was issued for this CertID yet.")
    committed_order: int | None = Field(default=None, description="The exchange order it is committed to.")


@message("holdings.statement", senders={Role.ISSUER}, recipients={Role.INVESTOR, Role.CUSTODY})
class HoldingsStatement(Message):
    """Holdings inquiry response 45 (P4.2)."""

    inquiry_id: UUID
    holdings: tuple[Holding, ...]


class ReissueKind(StrEnum):
    LOST = "lost"
    SPLIT = "split"
    MERGE = "merge"


@message("certificate.reissue", senders={Role.INVESTOR, Role.CUSTODY}, recipients={Role.ISSUER})
class ReissueRequest(Message):
    """Reissue request 46 (P4.3): replace a lost certificate, or split or merge certificates."""

    user_id: ParticipantId
    kind: ReissueKind
    cert_ids: tuple[UUID, ...] = Field(min_length=1, max_length=100)
    # For a split: the share count of each new certificate, summing to the old one's.
    split_into: tuple[int, ...] = ()

    @model_validator(mode="after")
    def _shape(self) -> ReissueRequest:
        if len(set(self.cert_ids)) != len(self.cert_ids):
            raise ValueError("a CertID is named twice")
        if self.kind is ReissueKind.LOST and len(self.cert_ids) != 1:
            raise ValueError("a lost certificate is reissued one at a time")
        if self.kind is ReissueKind.SPLIT and (len(self.cert_ids) != 1 or len(self.split_into) < 2):
            raise ValueError("a split names one certificate and at least two share counts")
        if self.kind is ReissueKind.MERGE and len(self.cert_ids) < 2:
            raise ValueError("a merge names at least two certificates")
        if self.kind is not ReissueKind.SPLIT and self.split_into:
            raise ValueError("only a split has share counts")
        if any(n <= 0 for n in self.split_into):
            raise ValueError("every part of a split has shares")
        return self


@message("certificate.reissued", senders={Role.ISSUER}, recipients={Role.INVESTOR, Role.CUSTODY})
class CertificatesReissued(Message):
    """P4.6: the new certificates; the old CertIDs are dead everywhere."""

    request_id: UUID
    retired: tuple[UUID, ...]
    certificates: tuple[SignedCertificate, ...]


@message("certificate.reissue_refused", senders={Role.ISSUER}, recipients={Role.INVESTOR, Role.CUSTODY})
class ReissueRefused(Message):
    """E20: no reissue; the register is unchanged."""

    request_id: UUID
    reason: LifecycleRefusal
    detail: str
