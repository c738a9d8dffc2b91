"""Settlement (seed 001 §2.5, messages 38 and the account inquiry): cash moves between accounts."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from schemas.catalogue import Message, message
from schemas.certificates import IssueCode
from schemas.identity import ParticipantId, Role
from schemas.money import AccountId, Amount, Currency, Price, Quantity
from schemas.sealed import SealedText
from schemas.trading import Side


@message("settlement.request", senders={Role.EXCHANGE}, recipients={Role.SETTLEMENT}, clear_accounts=True)
class SettlementRequest(Message):
    """The exchange asks for the cash leg of an executed trade (seed 001 message 38, S130).
    Retired with delivery versus payment: ``settlement.instruction`` replaced it."""

    matching_number: int = Field(gt=0, description="The order matching number (OMN) of the trade.")
    name_transfer_number: int = Field(gt=0)
    issue_code: IssueCode
    shares: Quantity
    price: Price
    amount: Amount = Field(gt=0, description="price × shares")
    currency: Currency = "JPY"
    buyer_user_id: ParticipantId
    buyer_account: AccountId
    seller_user_id: ParticipantId
    seller_account: AccountId


class SettlementFailure(StrEnum):
    UNKNOWN_ACCOUNT = "unknown_account"
    ACCOUNT_NOT_OWNED = "account_not_owned"
    CURRENCY_MISMATCH = "currency_mismatch"
    INSUFFICIENT_FUNDS = "insufficient_funds"
    AMOUNT_MISMATCH = "amount_mismatch"


@message(
    "settlement.notice", version=2, senders={Role.SETTLEMENT}, recipients={Role.INVESTOR, Role.BROKERAGE, Role.CUSTODY}
)
class SettlementNotice(Message):
    """What became of a trade's cash leg, told to each party about its own account only: the
    counterparty's account never leaves settlement (R-001-06)."""

    matching_number: int = Field(gt=0)
    side: Side = Field(
        description="The recipient's side of the trade: the buyer's account is debited, the seller's credited."
    )
    settled: bool
    amount: Amount
    currency: Currency
    account: AccountId = Field(description="The recipient's own settlement account.")
    failure: SettlementFailure | None = None
    detail: str | None = None
    entry_id: int | None = Field(default=None, description="The ledger entry, when settled.")


@message(
    "settlement.notice",
    senders={Role.SETTLEMENT},
    recipients={Role.INVESTOR, Role.EXCHANGE, Role.BROKERAGE, Role.CUSTODY},
    clear_accounts=True,
)
class SettlementNoticeV1(Message):
    """Version 1 of the notice named both accounts to both parties; settlement no longer sends it."""

    matching_number: int = Field(gt=0)
    settled: bool
    amount: Amount
    currency: Currency
    debited_account: AccountId
    credited_account: AccountId
    failure: SettlementFailure | None = None
    detail: str | None = None
    entry_id: int | None = Field(default=None, description="The ledger entry, when settled.")


@message("settlement.completed", senders={Role.SETTLEMENT})
class SettlementCompleted(Message):
    """Event for integrators: a trade's cash leg was posted in the ledger."""

    matching_number: int
    issue_code: IssueCode
    shares: int
    amount: Amount
    currency: Currency
    entry_id: int


@message("settlement.failed", senders={Role.SETTLEMENT})
class SettlementFailed(Message):
    """Event for integrators: a trade's cash leg could not be posted."""

    matching_number: int
    issue_code: IssueCode
    amount: Amount
    currency: Currency
    failure: SettlementFailure
    detail: str


@message("account.inquiry", senders={Role.INVESTOR}, recipients={Role.SETTLEMENT})
class AccountInquiry(Message):
    """An investor asks for its settlement account (seed 001 units 15 and 28, R-001-43)."""

    account: SealedText = Field(description="The account id sealed to the settlement agent's key (R-001-06).")
    entries: int = Field(default=20, ge=0, le=500, description="How many recent postings to include.")


class Posting(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    entry_id: int
    posted_at: datetime
    kind: str
    reference: str
    amount: Amount = Field(description="Positive credits the account, negative debits it.")
    balance_after: Amount


@message("account.statement", senders={Role.SETTLEMENT}, recipients={Role.INVESTOR})
class AccountStatement(Message):
    """The answer to an account inquiry: balance, deposits, withdrawals and recent postings."""

    inquiry_id: UUID
    account: AccountId
    found: bool
    currency: Currency = "JPY"
    balance: Amount = Decimal(0)
    deposits: Amount = Decimal(0)
    withdrawals: Amount = Decimal(0)
    postings: tuple[Posting, ...] = ()
