"""Securities-backed credit (seed 003): purchases, additional-credit inquiries, notices, default.

Seed 003 §8's catalogue (M1–M16) between the merchant (seller server 400), the card issuer
(FI server 300), the securities-backed line (HIHI server 200) and the purchaser (user
terminal 100). The custodian's side (holdings deltas, locks, sell on instruction) is in
``schemas.custody``. Amounts are integer yen (R-003-62).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from schemas.catalogue import Message, message
from schemas.certificates import IssueCode
from schemas.identity import ParticipantId, Role

Yen = Annotated[int, Field(ge=0, le=10**15)]
PositiveYen = Annotated[int, Field(gt=0, le=10**15)]
CardNumber = Annotated[str, StringConstraints(pattern=r"^[0-9][0-9-]{3,31}$")]
PurchaseId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PurchaseRefusal(StrEnum):
    """Why a card payment is refused; the line's reasons travel through as they are."""

    UNKNOWN_CARD = "unknown_card"
    DUPLICATE_PURCHASE = "duplicate_purchase"
    ADDITIONAL_CREDIT_REFUSED = "additional_credit_refused"


# -- merchant ↔ card issuer ↔ customer (M1–M4) --------------------------------------------------


@message("card.purchase_request", senders={Role.MERCHANT}, recipients={Role.CARD_ISSUER})
class PurchaseRequest(Message):
    """M2 (S1020/S1030, R-003-14): the merchant asks whether the card may pay ``amount``."""

    purchase_id: PurchaseId = Field(description="The merchant's own id; one answer per id.")
    card_number: CardNumber
    amount: PositiveYen
    description: str = Field(default="", max_length=200)


@message("card.purchase_answer", senders={Role.CARD_ISSUER}, recipients={Role.MERCHANT})
class PurchaseAnswer(Message):
    """M3 (S1110, R-003-16/38/39): card payment approved or refused."""

    purchase_id: PurchaseId
    approved: bool
    authorisation_id: UUID | None = None
    purchaser: ParticipantId | None = Field(default=None, description="Whom the merchant tells (R-003-17).")
    amount: Yen
    covered: Yen = Field(default=0, description="Within the remaining credit (or debit balance).")
    secured: Yen = Field(default=0, description="The shortfall the securities-backed line granted.")
    capture_by: datetime | None = Field(default=None, description="An approval not captured by then lapses.")
    reason: str | None = None
    detail: str | None = None


@message("card.payment_answer", senders={Role.MERCHANT}, recipients={Role.INVESTOR})
class CardPaymentAnswer(Message):
    """M4 (S1120/S1130, R-003-17): the merchant tells its customer whether the card paid."""

    purchase_id: PurchaseId
    merchant: ParticipantId
    amount: Yen
    approved: bool
    reason: str | None = None


@message("card.capture", senders={Role.MERCHANT}, recipients={Role.CARD_ISSUER})
class CapturePurchase(Message):
    """The merchant delivered: the card issuer pays it the full price (R-003-42)."""

    purchase_id: PurchaseId
    settlement_account: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9:._-]{1,63}$")]


@message("card.capture_answer", senders={Role.CARD_ISSUER}, recipients={Role.MERCHANT})
class CaptureAnswer(Message):
    purchase_id: PurchaseId
    captured: bool
    amount: Yen = 0
    reason: str | None = None


# -- card issuer ↔ line (M5, M8, M10, M12, M13) -------------------------------------------------


@message("credit.additional_inquiry", senders={Role.CARD_ISSUER}, recipients={Role.CREDIT})
class AdditionalCreditInquiry(Message):
    """M5 (S1050/S1060, R-003-19): may the line grant ``shortfall`` for this purchaser?"""

    obligation_id: UUID = Field(description="The card issuer's authorisation; the line's obligation id.")
    purchaser: ParticipantId
    card_number: CardNumber
    shortfall: PositiveYen


@message("credit.decision", senders={Role.CREDIT}, recipients={Role.CARD_ISSUER})
class AdditionalCreditDecision(Message):
    """M8 (S1090/S1100, R-003-35/37): sent only after every selected position is locked."""

    obligation_id: UUID
    approved: bool
    shortfall: Yen
    accumulated: Yen = Field(default=0, description="S of F5: the selected positions' credit value.")
    grantable: Yen = Field(default=0, description="DB 610: what the unlocked holdings support.")
    reason: str | None = None
    detail: str | None = None


@message("credit.obligation_lapsed", senders={Role.CARD_ISSUER}, recipients={Role.CREDIT})
class ObligationLapsed(Message):
    """An approved purchase was never captured: nothing is owed, the collateral is free."""

    obligation_id: UUID


@message("credit.repayment", senders={Role.CARD_ISSUER}, recipients={Role.CREDIT})
class RepaymentReported(Message):
    """M10 (S7020, S8000/S8010, R-003-46): a withdrawal succeeded; ``remaining`` is still owed."""

    obligation_id: UUID
    purchaser: ParticipantId
    amount: PositiveYen
    remaining: Yen


@message("credit.withdrawal_failed", senders={Role.CARD_ISSUER}, recipients={Role.CREDIT})
class WithdrawalFailed(Message):
    """M12 (S9000–S9020, R-003-50): the purchaser did not pay; ``shortage`` is overdue."""

    obligation_id: UUID
    purchaser: ParticipantId
    shortage: PositiveYen
    pay_to_account: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9:._-]{1,63}$")]


@message("credit.shortage_paid", senders={Role.CREDIT}, recipients={Role.CARD_ISSUER})
class ShortagePaid(Message):
    """M13 (S9030/S9040, R-003-51): the line paid the shortage on the purchaser's behalf."""

    obligation_id: UUID
    amount: PositiveYen
    entry_reference: UUID


# -- line → purchaser (M9, M11, M16) ------------------------------------------------------------


class CollateralPosition(_Frozen):
    custodian: ParticipantId
    issue_code: IssueCode
    quantity: int = Field(ge=0)
    price: Decimal
    price_source: str
    price_as_of: datetime
    price_age_seconds: int
    market_value: Yen
    coefficient: Decimal
    credit_value: Yen


@message("credit.collateral_statement", senders={Role.CREDIT}, recipients={Role.INVESTOR})
class CollateralStatement(Message):
    """M9 (S1140/S1150, R-003-40): the assets taken as collateral for an obligation."""

    obligation_id: UUID
    shortfall: Yen
    method: str
    grantable: Yen
    positions: tuple[CollateralPosition, ...]


@message("credit.collateral_released", senders={Role.CREDIT}, recipients={Role.INVESTOR})
class CollateralReleased(Message):
    """M11 (S8030/S8040, R-003-49): the collateral on these positions was released."""

    obligation_id: UUID
    reason: str
    positions: tuple[CollateralPosition, ...]


@message("credit.assets_sold", senders={Role.CREDIT}, recipients={Role.INVESTOR})
class AssetsSold(Message):
    """M16 (S9120/S9130, R-003-57/58): the locked positions were sold; the debt is extinguished
    up to the proceeds; any surplus is returned, any deficit still owed."""

    obligation_id: UUID
    positions: tuple[CollateralPosition, ...]
    advanced: Yen
    proceeds: Yen
    surplus_returned: Yen
    deficit: Yen
