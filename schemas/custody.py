"""Custody (seed 003, issue 11 §2): book-entry positions held in safekeeping accounts, locks
(pledges) placed by a lock holder, holdings statements and deltas since a cursor (S2000–S2070,
S6000–S6050), and sale on the lock holder's instruction (S9070–S9100).

A position is per safekeeping account and issue, in four sub-balances that always sum to the
shares the custodian holds for that account: available, locked, pending delivery (leaving:
a withdrawal, a sale or a trade being delivered) and pending receipt (arriving: a deposit or a
trade being received). Only available shares can be locked, delivered, withdrawn or sold;
locked shares move only on the lock holder's word.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from schemas.catalogue import Message, message
from schemas.certificates import IssueCode
from schemas.identity import ParticipantId, Role
from schemas.money import AccountId, Amount, Currency, Price

SafekeepingAccountId = AccountId
Text = Annotated[str, StringConstraints(min_length=1, max_length=200)]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PositionQuantity(_Frozen):
    """A quantity of one issue in one safekeeping account."""

    issue_code: IssueCode
    quantity: int = Field(gt=0)


def _distinct(positions: tuple[PositionQuantity, ...]) -> None:
    if len({p.issue_code for p in positions}) != len(positions):
        raise ValueError("an issue is named twice")


# --- locks (pledges) -------------------------------------------------------------------------


@message("custody.lock.place", senders={Role.CREDIT}, recipients={Role.CUSTODY})
class PlaceLock(Message):
    """Lock quantities of a client's positions for a lock holder, all or nothing (R-003-34).

    ``lock_id`` makes it idempotent: the same lock id with the same content is answered again
    with the same ``custody.lock.placed``; with other content it is refused ``lock_id_conflict``.
    """

    lock_id: UUID
    client: ParticipantId
    account: SafekeepingAccountId
    positions: tuple[PositionQuantity, ...] = Field(min_length=1, max_length=100)
    lock_holder: ParticipantId = Field(description="Who may release the lock or instruct a sale.")
    reason: Text = Field(description="Why the shares are locked, e.g. 'collateral'.")
    obligation_reference: Text = Field(description="The obligation the lock secures.")

    @model_validator(mode="after")
    def _shape(self) -> PlaceLock:
        _distinct(self.positions)
        return self


class LockRefusal(StrEnum):
    """Why custody will not place, release or sell against a lock; nothing moved."""

    UNKNOWN_ACCOUNT = "unknown_account"
    ACCOUNT_NOT_OWNED = "account_not_owned"
    ACCOUNT_CLOSED = "account_closed"
    UNKNOWN_POSITION = "unknown_position"
    INSUFFICIENT_AVAILABLE = "insufficient_available"
    LOCK_ID_CONFLICT = "lock_id_conflict"
    UNKNOWN_LOCK = "unknown_lock"
    NOT_LOCK_HOLDER = "not_lock_holder"
    LOCK_NOT_ACTIVE = "lock_not_active"
    QUANTITY_EXCEEDS_LOCK = "quantity_exceeds_lock"
    RELEASE_ID_CONFLICT = "release_id_conflict"
    INSTRUCTION_ID_CONFLICT = "instruction_id_conflict"
    SALE_IN_PROGRESS = "sale_in_progress"
    CERTIFICATES_BUSY = "certificates_busy"


class LockStatus(StrEnum):
    ACTIVE = "active"
    RELEASED = "released"
    SOLD = "sold"


@message("custody.lock.placed", senders={Role.CUSTODY}, recipients={Role.CREDIT})
class LockPlaced(Message):
    """Every requested quantity is locked; the positions' sub-balances after the lock."""

    lock_id: UUID
    client: ParticipantId
    account: SafekeepingAccountId
    custodian: ParticipantId
    positions: tuple[PositionQuantity, ...]
    lock_holder: ParticipantId
    obligation_reference: str
    cursor: int = Field(description="The client's holdings cursor after the lock.")


@message("custody.lock.refused", senders={Role.CUSTODY}, recipients={Role.CREDIT})
class LockRefused(Message):
    """Nothing was locked."""

    lock_id: UUID
    reason: LockRefusal
    detail: str


@message("custody.lock.release", senders={Role.CREDIT}, recipients={Role.CUSTODY})
class ReleaseLock(Message):
    """Release a lock, whole (no positions) or the given quantities (R-003-47). Only the lock
    holder may; ``release_id`` makes a partial release idempotent."""

    lock_id: UUID
    release_id: UUID
    positions: tuple[PositionQuantity, ...] = Field(default=(), max_length=100)

    @model_validator(mode="after")
    def _shape(self) -> ReleaseLock:
        _distinct(self.positions)
        return self


@message("custody.lock.released", senders={Role.CUSTODY}, recipients={Role.CREDIT})
class LockReleased(Message):
    """The quantities are available again; ``remaining`` is what the lock still holds."""

    lock_id: UUID
    release_id: UUID
    released: tuple[PositionQuantity, ...]
    remaining: tuple[PositionQuantity, ...]
    status: LockStatus
    cursor: int


@message("custody.lock.release_refused", senders={Role.CUSTODY}, recipients={Role.CREDIT})
class ReleaseRefused(Message):
    lock_id: UUID
    release_id: UUID
    reason: LockRefusal
    detail: str


# --- holdings: statement and deltas since a cursor (S2000–S2070, S6000–S6050) ----------------


class SubBalances(_Frozen):
    available: int = Field(ge=0)
    locked: int = Field(ge=0)
    pending_delivery: int = Field(ge=0)
    pending_receipt: int = Field(ge=0)

    @property
    def total(self) -> int:
        return self.available + self.locked + self.pending_delivery + self.pending_receipt


class LockView(_Frozen):
    lock_id: UUID
    issue_code: IssueCode
    quantity: int
    lock_holder: ParticipantId
    reason: str
    obligation_reference: str


class PositionView(_Frozen):
    account: SafekeepingAccountId
    custodian: ParticipantId
    issue_code: IssueCode
    balances: SubBalances
    locks: tuple[LockView, ...] = ()


class HoldingDelta(_Frozen):
    """One change to a position: its sub-balances after the change (S2060's updated information)."""

    sequence: int = Field(gt=0, description="Per client, gap-free, in commit order.")
    account: SafekeepingAccountId
    custodian: ParticipantId
    issue_code: IssueCode
    balances: SubBalances
    cause: str = Field(description="deposit, withdrawal, lock, release, sale, delivery, receipt …")
    changed_at: datetime


@message("custody.holdings.deltas_request", senders={Role.CREDIT}, recipients={Role.CUSTODY})
class HoldingsDeltasRequest(Message):
    """S2000/S2050, S6000/S6010 (M6): what changed in a client's positions after ``cursor``
    (0 = from the start). ``custodian`` narrows it to one of the custodians custody hosts."""

    client: ParticipantId
    cursor: int = Field(ge=0)
    custodian: ParticipantId | None = None
    limit: int = Field(default=500, ge=1, le=5000)


@message("custody.holdings.deltas", senders={Role.CUSTODY}, recipients={Role.CREDIT})
class HoldingsDeltas(Message):
    """S2060/S2070 (M7): the changes after ``cursor`` in order; ask again from ``next_cursor``
    while ``more`` is true. No change is skipped or sent twice across consecutive requests."""

    request_id: UUID
    client: ParticipantId
    cursor: int
    next_cursor: int
    more: bool
    deltas: tuple[HoldingDelta, ...]


@message("custody.holdings.statement_request", senders={Role.CREDIT}, recipients={Role.CUSTODY})
class HoldingsStatementRequest(Message):
    client: ParticipantId
    custodian: ParticipantId | None = None


@message("custody.holdings.statement", senders={Role.CUSTODY}, recipients={Role.CREDIT})
class CustodyHoldingsStatement(Message):
    """Every position of the client with its sub-balances and locks; ``cursor`` is where deltas
    continue from this statement."""

    request_id: UUID
    client: ParticipantId
    as_of: datetime
    cursor: int
    positions: tuple[PositionView, ...]


# --- sale on the lock holder's instruction (S9070–S9100) --------------------------------------


@message("custody.sell_instruction", senders={Role.CREDIT}, recipients={Role.CUSTODY})
class SellInstruction(Message):
    """S9070/S9080 (M14, R-003-54): sell ``quantity`` of the locked position through the exchange.

    Only the lock holder may instruct; the quantity comes out of the lock, never out of
    available shares. ``limit_price`` none is a market order.
    """

    instruction_id: UUID
    lock_id: UUID
    issue_code: IssueCode
    quantity: int = Field(gt=0)
    limit_price: Price | None = None
    proceeds_account: AccountId = Field(description="The lock holder's settlement account for the proceeds.")


class SaleStatus(StrEnum):
    ACCEPTED = "accepted"
    COMPLETED = "completed"
    PARTIALLY_COMPLETED = "partially_completed"
    FAILED = "failed"


class SaleFill(_Frozen):
    matching_number: int
    price: Price
    quantity: int
    amount: Amount


@message("custody.sale.refused", senders={Role.CUSTODY}, recipients={Role.CREDIT})
class SaleRefused(Message):
    """The instruction was not carried out; the lock is as it was."""

    instruction_id: UUID
    lock_id: UUID
    reason: LockRefusal
    detail: str


@message("custody.sale.completed", senders={Role.CUSTODY}, recipients={Role.CREDIT})
class SaleCompleted(Message):
    """S9090/S9100 (M15, R-003-55): the sale is over — what sold, at what prices, the proceeds and
    where they were credited; ``unsold`` shares (an unfilled order) are still locked."""

    instruction_id: UUID
    lock_id: UUID
    issue_code: IssueCode
    status: SaleStatus
    quantity_sold: int
    unsold: int
    fills: tuple[SaleFill, ...]
    proceeds: Amount
    currency: Currency = "JPY"
    proceeds_account: AccountId
    detail: str = ""


# --- events for integrators -----------------------------------------------------------------


@message("custody.position.changed", senders={Role.CUSTODY})
class PositionChanged(Message):
    """Event: a position's sub-balances changed (same content as a holdings delta)."""

    client: ParticipantId
    delta: HoldingDelta


@message("custody.status.changed", senders={Role.CUSTODY})
class CustodyStatusChanged(Message):
    """Event: a deposit, withdrawal, lock, sale or delivery changed status."""

    subject: str = Field(description="deposit, withdrawal, lock, sale or delivery")
    subject_id: str
    client: ParticipantId
    account: SafekeepingAccountId | None = Field(default=None, description="None until a deposit names one.")
    status: str
    issue_code: IssueCode | None = None
    quantity: int | None = None
    reason: str | None = None
