"""Delivery versus payment (issue 11, flow 4; protocol in docs/dvp.md).

Three message families: the **cover** a buy order needs before the exchange books it; the
**settlement instruction** the exchange sends for every execution, with its ISO 20022-style
status; and the **securities leg** settlement drives at the agent that holds the securities —
the issuer for certificate trades, custody for book-entry trades. The securities-leg messages
are the same for both; only the leg's ``kind`` differs, so a securities-leg agent answers
``securities.reserve``, ``securities.commit`` and ``securities.release`` and nothing else.
An instruction is identified by the exchange's order matching number (OMN).
"""

from __future__ import annotations

from datetime import date
from enum import StrEnum
from typing import Annotated, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from schemas.catalogue import Message, message
from schemas.certificates import EndorsedCertificate, IssueCode, ShareClass, SignedCertificate
from schemas.identity import ParticipantId, Role
from schemas.money import AccountId, Amount, Currency, Price
from schemas.sealed import SealedText
from schemas.trading import Side


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DvpReason(StrEnum):
    """Why an instruction or a cover is not (yet) settled; ISO 20022 reason codes in words."""

    LACK_OF_CASH = "lack_of_cash"
    LACK_OF_SECURITIES = "lack_of_securities"
    SECURITIES_INVALID = "securities_invalid"
    UNKNOWN_ACCOUNT = "unknown_account"
    ACCOUNT_NOT_OWNED = "account_not_owned"
    CURRENCY_MISMATCH = "currency_mismatch"
    AMOUNT_MISMATCH = "amount_mismatch"
    CANCELLED_BY_PARTY = "cancelled_by_party"
    PAST_CUT_OFF = "past_cut_off"
    AWAITING_SETTLEMENT_DATE = "awaiting_settlement_date"
    NOT_MANDATED = "not_mandated"
    UNKNOWN_INSTRUCTION = "unknown_instruction"
    NOTICE_MISMATCH = "notice_mismatch"
    NOT_CANCELLABLE = "not_cancellable"
    # An account box that does not open with settlement's key (R-001-06): sealed for another
    # field, another party or another key.
    SEALED_FIELD_INVALID = "sealed_field_invalid"


class ProcessingStatus(StrEnum):
    RECEIVED = "received"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    CANCELLED = "cancelled"


class MatchingStatus(StrEnum):
    MATCHED = "matched"
    UNMATCHED = "unmatched"


class SettlementStatus(StrEnum):
    PENDING = "pending"
    PARTIALLY_SETTLED = "partially_settled"
    SETTLED = "settled"
    FAILED = "failed"


# -- cover at order entry ------------------------------------------------------------------------


class CoverRefusal(StrEnum):
    UNKNOWN_ACCOUNT = "unknown_account"
    ACCOUNT_NOT_OWNED = "account_not_owned"
    INSUFFICIENT_FUNDS = "insufficient_funds"
    CURRENCY_MISMATCH = "currency_mismatch"
    DUPLICATE_COVER = "duplicate_cover"
    SEALED_FIELD_INVALID = "sealed_field_invalid"


class _CoverFields(Message):
    cover_id: UUID
    user_id: ParticipantId
    client_order_id: str = Field(max_length=64)
    quantity: int = Field(gt=0)
    unit_price: Price = Field(description="The worst price per share this order can pay.")
    amount: Amount = Field(gt=0, description="quantity × unit_price")
    currency: Currency = "JPY"


@message("settlement.cover.request", version=2, senders={Role.EXCHANGE}, recipients={Role.SETTLEMENT})
class CoverRequest(_CoverFields):
    """Hold a buy order's worst case (quantity × limit, or × the day's upper limit for a market
    order) on the buyer's own account, before the exchange books the order. The account is the
    box the buyer sealed in its order, forwarded unopened."""

    account: SealedText = Field(description="The order's sealed settlement account, context order.submit/…/<user_id>.")


@message("settlement.cover.request", senders={Role.EXCHANGE}, recipients={Role.SETTLEMENT}, clear_accounts=True)
class CoverRequestV1(_CoverFields):
    """A cover request with the buyer's account in clear (version 1); refused after the cut-over."""

    account: AccountId


@message("settlement.cover.granted", senders={Role.SETTLEMENT}, recipients={Role.EXCHANGE}, answer=True)
class CoverGranted(Message):
    cover_id: UUID
    amount: Amount


@message("settlement.cover.refused", senders={Role.SETTLEMENT}, recipients={Role.EXCHANGE}, answer=True)
class CoverRefused(Message):
    cover_id: UUID
    reason: CoverRefusal
    detail: str


@message("settlement.cover.release", senders={Role.EXCHANGE}, recipients={Role.SETTLEMENT})
class CoverRelease(Message):
    """The buy order is closed and none of its instructions is open: free what is left of its cover."""

    cover_id: UUID


# -- standing cover (docs/dvp.md, "Standing cover") -------------------------------------------


class StandingCoverRefusal(StrEnum):
    """Why a standing cover was not opened or closed: settlement's cover reasons and the exchange's own."""

    UNKNOWN_ACCOUNT = "unknown_account"
    ACCOUNT_NOT_OWNED = "account_not_owned"
    INSUFFICIENT_FUNDS = "insufficient_funds"
    CURRENCY_MISMATCH = "currency_mismatch"
    DUPLICATE_COVER = "duplicate_cover"
    SEALED_FIELD_INVALID = "sealed_field_invalid"
    USER_MISMATCH = "user_mismatch"
    STANDING_COVER_EXISTS = "standing_cover_exists"
    UNKNOWN_COVER = "unknown_cover"
    NOT_ACTIVE = "not_active"


_BUYERS = {Role.INVESTOR, Role.BROKERAGE}


@message("standing_cover.open", senders=_BUYERS, recipients={Role.EXCHANGE})
class OpenStandingCover(Message):
    """Set cash aside once for buy orders: settlement holds ``amount`` on the account, and every
    buy order sealed with the same account box draws its worst case on it at acceptance, so the
    exchange books it in the hop that receives it (no per-order cover request)."""

    cover_id: UUID
    user_id: ParticipantId
    account: SealedText = Field(
        description="The settlement account sealed to settlement, context order.submit/settlement_account/<user_id>: "
        "the very box the buyer's orders carry (orders with another box take a per-order cover)."
    )
    amount: Amount = Field(gt=0)
    currency: Currency = "JPY"


@message("settlement.standing_cover.request", senders={Role.EXCHANGE}, recipients={Role.SETTLEMENT})
class StandingCoverRequest(Message):
    """Hold ``amount`` on the buyer's own account as a standing cover; answered with
    ``settlement.cover.granted`` or ``settlement.cover.refused`` under the same cover id."""

    cover_id: UUID
    user_id: ParticipantId
    account: SealedText = Field(description="The buyer's sealed box, forwarded unopened.")
    amount: Amount = Field(gt=0)
    currency: Currency = "JPY"


@message("standing_cover.opened", senders={Role.EXCHANGE}, recipients=_BUYERS)
class StandingCoverOpened(Message):
    """Settlement holds the amount; buy orders with the cover's box now draw on it."""

    cover_id: UUID
    amount: Amount


@message("standing_cover.refused", senders={Role.EXCHANGE}, recipients=_BUYERS)
class StandingCoverRefused(Message):
    """The open or the close was refused; nothing changed."""

    cover_id: UUID
    reason: StandingCoverRefusal
    detail: str


@message("standing_cover.close", senders=_BUYERS, recipients={Role.EXCHANGE})
class CloseStandingCover(Message):
    """Stop drawing on the cover; it is released once no order drawn on it is open and no trade
    of one is unsettled (resting orders keep it until they end)."""

    cover_id: UUID


@message("standing_cover.closed", senders={Role.EXCHANGE}, recipients=_BUYERS)
class StandingCoverClosed(Message):
    """The cover is released: settlement frees what was not spent."""

    cover_id: UUID
    amount: Amount
    spent: Amount = Field(description="What the settled trades drawn on it paid.")


# -- the securities leg --------------------------------------------------------------------------


class CertificateLeg(_Frozen):
    """A name transfer at the issuer: the certificate countersigned by the seller for its order and
    by the exchange for ``omn:<matching number>`` (seed 001 S95), so only the exchange's trade moves it."""

    kind: Literal["certificate"] = "certificate"
    agent: ParticipantId = Field(description="The issuing agent that keeps the register.")
    exchange_id: ParticipantId
    cert_id: UUID
    share_class: ShareClass
    certificate: EndorsedCertificate
    buyer_name: str = Field(max_length=200)
    buyer_address: str = Field(max_length=400)
    seller_order: int = Field(gt=0, description="The sell order's acceptance number.")
    seller_order_open: bool = Field(description="The sell order has shares left: the remainder stays committed to it.")


class BookEntryLeg(_Frozen):
    """A position move at custody, from the seller's safekeeping account to the buyer's."""

    kind: Literal["book_entry"] = "book_entry"
    agent: ParticipantId = Field(description="The custodian that keeps both safekeeping accounts.")
    deliverer_account: str = Field(min_length=1, max_length=64)
    receiver_account: str = Field(min_length=1, max_length=64)


SecuritiesLeg = Annotated[CertificateLeg | BookEntryLeg, Field(discriminator="kind")]


class CertificateDelivery(_Frozen):
    """What a committed name transfer produced (seed 001 message 36's content)."""

    kind: Literal["certificate"] = "certificate"
    name_transfer_number: int
    new_cert_id: UUID
    remainder: SignedCertificate | None = None
    register_version: int


class BookEntryDelivery(_Frozen):
    kind: Literal["book_entry"] = "book_entry"
    deliverer_account: str
    receiver_account: str


Delivery = Annotated[CertificateDelivery | BookEntryDelivery, Field(discriminator="kind")]

_LEG_AGENTS = {Role.ISSUER, Role.CUSTODY}


@message("securities.reserve", senders={Role.SETTLEMENT}, recipients=_LEG_AGENTS)
class SecuritiesReserve(Message):
    """Check the seller can deliver and lock the securities for this instruction; with ``deliver``, deliver them too."""

    instruction: int = Field(gt=0)
    attempt: int = Field(gt=0)
    issue_code: IssueCode
    quantity: int = Field(gt=0)
    deliverer: ParticipantId
    receiver: ParticipantId
    leg: SecuritiesLeg
    deliver: bool = Field(
        default=False,
        description="The attempt's cash is earmarked and stays bound to it until this request is answered, so "
        "the leg agent may deliver at once, in the transaction that reserves, and answer securities.committed "
        "instead of securities.reserved (docs/dvp.md, 'Delivery against earmarked cash').",
    )


@message("securities.reserved", senders=_LEG_AGENTS, recipients={Role.SETTLEMENT}, answer=True)
class SecuritiesReserved(Message):
    """The securities are locked for the instruction: only a commit or a release moves them now."""

    instruction: int
    attempt: int
    quantity: int


@message("securities.reservation_refused", senders=_LEG_AGENTS, recipients={Role.SETTLEMENT}, answer=True)
class SecuritiesReservationRefused(Message):
    """Nothing was locked. ``retryable``: the seller may yet have them (recycle); otherwise never."""

    instruction: int
    attempt: int
    reason: DvpReason
    retryable: bool
    detail: str
    available_quantity: int = Field(default=0, ge=0, description="What could be delivered now, for partial settlement.")


@message("securities.commit", senders={Role.SETTLEMENT}, recipients=_LEG_AGENTS, answer=True)
class SecuritiesCommit(Message):
    """The cash has moved: deliver. Cannot fail once reserved."""

    instruction: int
    attempt: int


@message("securities.committed", senders=_LEG_AGENTS, recipients={Role.SETTLEMENT}, answer=True)
class SecuritiesCommitted(Message):
    """The securities moved: the answer to a commit, or to a reserve that asked to ``deliver``."""

    instruction: int
    attempt: int
    quantity: int
    delivery: Delivery


@message("securities.release", senders={Role.SETTLEMENT}, recipients=_LEG_AGENTS, answer=True)
class SecuritiesRelease(Message):
    """The attempt will not settle: unlock what it reserved (nothing, if nothing was)."""

    instruction: int
    attempt: int


# -- the settlement instruction ------------------------------------------------------------------


class _InstructionFields(Message):
    matching_number: int = Field(gt=0)
    trade_date: date
    intended_settlement_date: date
    issue_code: IssueCode
    quantity: int = Field(gt=0)
    price: Price
    amount: Amount = Field(gt=0, description="price × quantity")
    currency: Currency = "JPY"
    buyer_user_id: ParticipantId
    seller_user_id: ParticipantId
    cover_id: UUID | None = Field(default=None, description="The buy order's cover, from which the cash is earmarked.")
    partial_allowed: bool = False
    securities: SecuritiesLeg


@message("settlement.instruction", version=2, senders={Role.EXCHANGE}, recipients={Role.SETTLEMENT})
class SettlementInstruction(_InstructionFields):
    """One execution to settle delivery versus payment (replaces seed 001's request 38 after 36).
    Both accounts are the boxes the parties sealed in their orders (R-001-06): only settlement
    opens them."""

    buyer_account: SealedText = Field(description="The buy order's sealed settlement account.")
    seller_account: SealedText = Field(description="The sell order's sealed settlement account.")


@message("settlement.instruction", senders={Role.EXCHANGE}, recipients={Role.SETTLEMENT}, clear_accounts=True)
class SettlementInstructionV1(_InstructionFields):
    """An instruction with both accounts in clear (version 1); refused after the cut-over."""

    buyer_account: AccountId
    seller_account: AccountId


class StatusFields(_Frozen):
    """The three parts of an instruction's status, and what has settled so far."""

    processing: ProcessingStatus
    matching: MatchingStatus
    settlement: SettlementStatus
    reason: DvpReason | None = None
    detail: str = ""
    quantity: int
    settled_quantity: int = 0
    amount: Amount
    settled_amount: Amount = 0  # type: ignore[assignment]
    currency: Currency = "JPY"
    attempt: int = 0


@message(
    "settlement.instruction.status",
    senders={Role.SETTLEMENT},
    recipients={Role.EXCHANGE, Role.INVESTOR, Role.BROKERAGE, Role.CUSTODY},
)
class InstructionStatus(Message):
    """An instruction's status changed; to the exchange with the delivery, so it can complete the trade."""

    instruction: int
    status: StatusFields
    delivery: Delivery | None = None
    entry_id: int | None = None


@message("settlement.instruction.status_changed", senders={Role.SETTLEMENT})
class InstructionStatusChanged(Message):
    """Event for integrators at every status change of every instruction."""

    instruction: int
    issue_code: IssueCode
    intended_settlement_date: date
    status: StatusFields


@message(
    "settlement.instruction.cancel",
    senders={Role.INVESTOR, Role.BROKERAGE, Role.CUSTODY},
    recipients={Role.SETTLEMENT},
)
class CancelInstruction(Message):
    """A party asks to cancel; a matched instruction is cancelled once both parties asked."""

    instruction: int = Field(gt=0)


@message(
    "settlement.instruction.cancel_refused",
    senders={Role.SETTLEMENT},
    recipients={Role.INVESTOR, Role.BROKERAGE, Role.CUSTODY},
)
class CancelRefused(Message):
    """A cancel that cannot be applied: not the party's instruction (or none), or already at an end."""

    instruction: int
    reason: DvpReason
    detail: str


@message("settlement.trade_notice.present", senders={Role.INVESTOR, Role.BROKERAGE}, recipients={Role.SETTLEMENT})
class PresentTradeNotice(Message):
    """R-001-42: a party presents the trade completion notice (37) it received."""

    matching_number: int = Field(gt=0)
    side: Side
    issue_code: IssueCode
    quantity: int = Field(gt=0)
    price: Price
    amount: Amount


@message("settlement.trade_notice.verified", senders={Role.SETTLEMENT}, recipients={Role.INVESTOR, Role.BROKERAGE})
class TradeNoticeVerified(Message):
    """The answer to a presented notice: the instruction's status, or why the notice is not recognised."""

    matching_number: int
    verified: bool
    reason: DvpReason | None = None
    status: StatusFields | None = None


# -- mandates ------------------------------------------------------------------------------------


@message("settlement.mandate.grant", senders={Role.INVESTOR}, recipients={Role.SETTLEMENT})
class GrantMandate(Message):
    """The account owner lets an agent (the brokerage) post on its account."""

    account: AccountId
    agent: ParticipantId


@message("settlement.mandate.revoke", senders={Role.INVESTOR}, recipients={Role.SETTLEMENT})
class RevokeMandate(Message):
    account: AccountId
    agent: ParticipantId


@message("settlement.mandate.recorded", senders={Role.SETTLEMENT}, recipients={Role.INVESTOR})
class MandateRecorded(Message):
    account: AccountId
    agent: ParticipantId
    active: bool
    refused: DvpReason | None = None
