"""The electronic stock certificate (seed 001 §3.2, Fig. 6) and its signed form.

An ESC travels as a ``SignedCertificate``: the exact JSON bytes of the certificate
(``content``) and the issuing company's signature over them, made by the issuing agent
(seed 001 ¶0021). Verifying the bytes before parsing them means a certificate whose bytes
were altered is refused whatever the alteration.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from schemas.binary import Binary
from schemas.identity import ParticipantId
from schemas.money import Quantity

IssueCode = Annotated[str, StringConstraints(pattern=r"^[A-Z0-9][A-Z0-9._-]{0,31}$")]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]


class ShareClass(StrEnum):
    """Seed 001 Fig. 6 field 11."""

    COMMON = "common"
    PREFERRED = "preferred"
    SUBORDINATED = "subordinated"
    CONVERTIBLE = "convertible"


class TransferRestriction(StrEnum):
    """Seed 001 Fig. 6 field 13: may the holder transfer the shares, and how."""

    NONE = "none"
    BOARD_APPROVAL_REQUIRED = "board_approval_required"
    NOT_TRANSFERABLE = "not_transferable"


class ElectronicStockCertificate(BaseModel):
    """Every field of seed 001 §3.2 (R-001-08), plus the issue code and issuer id used for routing."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    company_name: str = Field(min_length=1, max_length=200)  # 1
    incorporated_on: date  # 2
    certificate_number: str = Field(min_length=1, max_length=40)  # 3
    cert_id: UUID  # 4: changes whenever the holder changes, and on reissue
    shares: Quantity  # 5
    par_value_per_share: Decimal | None = Field(default=None, ge=0)  # 6: None for no-par shares
    currency: Currency = "JPY"
    issued_on: date  # 7
    expires_on: date  # 8
    holder_name: str = Field(min_length=1, max_length=200)  # 9
    holder_user_id: ParticipantId  # 10
    share_class: ShareClass  # 11
    convertible_details: str | None = None  # 12
    transfer_restriction: TransferRestriction  # 13
    signature_algorithm: Literal["Ed25519"] = "Ed25519"  # 14
    issuing_agent_name: str  # 15
    issuing_agent_address: str  # 16
    issue_code: IssueCode
    issuing_agent_id: ParticipantId


class IssuerSignature(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    algorithm: Literal["Ed25519"] = "Ed25519"
    certificate: Binary = Field(description="The issuing agent's identity certificate, DER.")
    signature: Binary = Field(description="Signature over the certificate's content bytes.")


class SignedCertificate(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    content: Binary = Field(description="JSON of an ElectronicStockCertificate, exactly as signed.")
    issuer_signature: IssuerSignature


# trade_report: a buyer's consent to a trade reported off the order book (agents/exchange/reports.py).
EndorsementPurpose = Literal["sell_order", "name_transfer", "transfer", "trade_report"]


class Endorsement(BaseModel):
    """A countersignature added by each party that passes a certificate on (seed 001 §5.2).

    It signs the certificate's content, the issuer's signature and every earlier endorsement,
    bound to a purpose and a context (the sell order, the name transfer, the transferee) so
    it cannot be lifted onto another use.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    purpose: EndorsementPurpose
    context: str = Field(min_length=1, max_length=200)
    certificate: Binary = Field(description="The endorser's identity certificate, DER.")
    signature: Binary


class EndorsedCertificate(BaseModel):
    """A stock certificate with the countersignatures of those who passed it on, oldest first."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    certificate: SignedCertificate
    endorsements: tuple[Endorsement, ...] = ()
