"""Delivery versus payment decisions at settlement, free of I/O (issue 11, docs/dvp.md).

Settlement coordinates every trade's two legs: it grants a buy order's *cover* (a hold for its
worst case), takes each execution's cash from that cover into an *attempt's earmark*, asks the
securities-leg agent to deliver against it, and posts the cash once the leg has. These
functions decide; ``dvp.py`` loads, saves and emits. Nothing here states a balance in a
detail: the details reach the counterparty.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, timedelta
from decimal import Decimal
from uuid import UUID

from agents.settlement.domain import Account, AccountKind, money
from schemas.dvp import (
    CoverRefusal,
    CoverRequest,
    CoverRequestV1,
    DvpReason,
    MatchingStatus,
    PresentTradeNotice,
    ProcessingStatus,
    SettlementInstruction,
    SettlementInstructionV1,
    SettlementStatus,
    StandingCoverRequest,
    StatusFields,
)
from schemas.trading import Side


@dataclass(frozen=True, slots=True)
class Cover:
    """Cash held for a buyer's trades. A buy order's cover counts ``remaining`` shares not yet
    instructed, at ``unit_price`` each; a standing cover (``unspent`` set) counts cash, which
    any of the buyer's trades drawn on it takes at its own price (docs/dvp.md)."""

    cover_id: UUID
    user_id: str
    account_id: str
    remaining: int
    unit_price: Decimal
    active: bool
    unspent: Decimal | None = None

    @property
    def standing(self) -> bool:
        return self.unspent is not None

    @property
    def held(self) -> Decimal:
        if not self.active:
            return Decimal(0)
        return self.unspent if self.unspent is not None else self.remaining * self.unit_price

    def shares_for(self, wanted: int, price: Decimal) -> int:
        """How many of ``wanted`` shares at ``price`` the cover pays for."""
        if self.unspent is not None:
            return min(wanted, int(self.unspent // price))
        return min(wanted, self.remaining)

    def taken(self, shares: int, price: Decimal) -> Cover:
        """The cover once ``shares`` at ``price`` were earmarked from it."""
        if self.unspent is not None:
            return replace(self, unspent=self.unspent - shares * price)
        return replace(self, remaining=self.remaining - shares)

    def given_back(self, shares: int, price: Decimal) -> Cover:
        """The cover once an attempt that took ``shares`` at ``price`` ended unsettled."""
        return self.taken(-shares, price)


@dataclass(frozen=True, slots=True)
class Instruction:
    """A settlement instruction as settlement keeps it, with its three-part status."""

    matching_number: int
    trade_date: date
    intended_settlement_date: date
    issue_code: str
    quantity: int
    price: Decimal
    amount: Decimal
    currency: str
    buyer_user_id: str
    buyer_account: str
    seller_user_id: str
    seller_account: str
    cover_id: UUID | None
    partial_allowed: bool
    leg_agent: str
    processing: ProcessingStatus = ProcessingStatus.RECEIVED
    matching: MatchingStatus = MatchingStatus.MATCHED
    settlement: SettlementStatus = SettlementStatus.PENDING
    reason: DvpReason | None = None
    detail: str = ""
    settled_quantity: int = 0
    settled_amount: Decimal = Decimal(0)
    attempt: int = 0
    in_flight: bool = False
    cancel_by_buyer: bool = False
    cancel_by_seller: bool = False

    @property
    def open_quantity(self) -> int:
        return self.quantity - self.settled_quantity

    @property
    def live(self) -> bool:
        """Accepted and not yet at an end: it may still be attempted."""
        return self.processing is ProcessingStatus.ACCEPTED and self.settlement in (
            SettlementStatus.PENDING,
            SettlementStatus.PARTIALLY_SETTLED,
        )

    def status(self) -> StatusFields:
        return StatusFields(
            processing=self.processing,
            matching=self.matching,
            settlement=self.settlement,
            reason=self.reason,
            detail=self.detail,
            quantity=self.quantity,
            settled_quantity=self.settled_quantity,
            amount=self.amount,
            settled_amount=self.settled_amount,
            currency=self.currency,
            attempt=self.attempt,
        )


@dataclass(frozen=True, slots=True)
class Attempt:
    """What one attempt settles: ``quantity`` shares for ``amount``, ``from_cover`` of them off the cover."""

    number: int
    quantity: int
    amount: Decimal
    from_cover: int


@dataclass(frozen=True, slots=True)
class Wait:
    """No attempt now: the instruction stays pending for this reason."""

    reason: DvpReason
    detail: str


@dataclass(frozen=True, slots=True)
class Fail:
    """The instruction ends failed, both sides as they were."""

    reason: DvpReason
    detail: str


# -- cover ---------------------------------------------------------------------------------------


def cover_refusal(
    request: CoverRequest | CoverRequestV1 | StandingCoverRequest, account: Account | None, available: Decimal
) -> tuple[CoverRefusal, str] | None:
    """R-001-23 / issue 11: the account is a customer account of the buyer, in the currency, with
    the worst case available (balance − holds). Unknown and someone else's look different to the
    exchange only by code, never by balance; no detail names the account, which the exchange
    must not learn (R-001-06)."""
    if account is None or account.kind is AccountKind.EXTERNAL:
        return CoverRefusal.UNKNOWN_ACCOUNT, "no such settlement account"
    if account.owner_user_id != request.user_id:
        return CoverRefusal.ACCOUNT_NOT_OWNED, f"the settlement account does not belong to {request.user_id}"
    if account.currency != request.currency:
        return CoverRefusal.CURRENCY_MISMATCH, f"the settlement account is in {account.currency}"
    if not isinstance(request, StandingCoverRequest) and request.amount != request.quantity * request.unit_price:
        return CoverRefusal.INSUFFICIENT_FUNDS, "the cover asked for is not quantity × unit price"
    if available < request.amount:
        return CoverRefusal.INSUFFICIENT_FUNDS, (
            f"the settlement account lacks {money(request.amount, request.currency)} available for this "
            + ("standing cover" if isinstance(request, StandingCoverRequest) else "order")
        )
    return None


# -- instruction ---------------------------------------------------------------------------------


def received(
    message: SettlementInstruction | SettlementInstructionV1, buyer_account: str, seller_account: str, leg_agent: str
) -> Instruction:
    """The instruction with its accounts opened; an empty one did not open (R-001-06)."""
    return Instruction(
        matching_number=message.matching_number,
        trade_date=message.trade_date,
        intended_settlement_date=message.intended_settlement_date,
        issue_code=message.issue_code,
        quantity=message.quantity,
        price=message.price,
        amount=message.amount,
        currency=message.currency,
        buyer_user_id=message.buyer_user_id,
        buyer_account=buyer_account,
        seller_user_id=message.seller_user_id,
        seller_account=seller_account,
        cover_id=message.cover_id,
        partial_allowed=message.partial_allowed,
        leg_agent=leg_agent,
    )


def validate(instruction: Instruction, buyer: Account | None, seller: Account | None) -> Instruction:
    """Processing: accepted, or rejected with the first reason (amount, accounts, owners, currency)."""
    problem = _problem(instruction, buyer, seller)
    if problem is None:
        return replace(instruction, processing=ProcessingStatus.ACCEPTED)
    return replace(
        instruction,
        processing=ProcessingStatus.REJECTED,
        settlement=SettlementStatus.FAILED,
        reason=problem[0],
        detail=problem[1],
    )


def _problem(i: Instruction, buyer: Account | None, seller: Account | None) -> tuple[DvpReason, str] | None:
    """The details reach the exchange and the counterparty: they never name an account (R-001-06)."""
    for side, account_id in (("buyer", i.buyer_account), ("seller", i.seller_account)):
        if not account_id:
            return (
                DvpReason.SEALED_FIELD_INVALID,
                f"the {side}'s settlement account does not open with settlement's key",
            )
    if i.amount != i.price * i.quantity:
        return DvpReason.AMOUNT_MISMATCH, f"amount {i.amount} is not price × {i.quantity} shares"
    for side, user, account in (("buyer", i.buyer_user_id, buyer), ("seller", i.seller_user_id, seller)):
        if account is None or account.kind is AccountKind.EXTERNAL:
            return DvpReason.UNKNOWN_ACCOUNT, f"the {side}'s settlement account is unknown"
        if account.owner_user_id != user:
            return DvpReason.ACCOUNT_NOT_OWNED, f"the {side}'s settlement account does not belong to {user}"
        if account.currency != i.currency:
            return (
                DvpReason.CURRENCY_MISMATCH,
                f"the {side}'s settlement account is in {account.currency}, the trade in {i.currency}",
            )
    if i.buyer_account == i.seller_account:
        return DvpReason.ACCOUNT_NOT_OWNED, "buyer and seller name the same settlement account"
    return None


def plan(instruction: Instruction, cover: Cover | None, available: Decimal, today: date) -> Attempt | Wait:
    """The next attempt: cash from the buy order's cover first, then from the buyer's free
    balance (``available`` less what the cover holds: ``available`` excludes the cover's own
    hold); partial only where allowed."""
    if today < instruction.intended_settlement_date:
        return Wait(DvpReason.AWAITING_SETTLEMENT_DATE, f"settles on {instruction.intended_settlement_date}")
    open_quantity = instruction.open_quantity
    usable = cover is not None and cover.active and cover.account_id == instruction.buyer_account
    from_cover = cover.shares_for(open_quantity, instruction.price) if usable and cover is not None else 0
    # What the cover holds is in ``available`` too (the cover's own hold is excluded from it), and
    # is kept for the cover's other trades: only the rest is free (review found a short standing
    # cover's cash counted twice, an attempt earmarking more than the account had).
    free = available - (cover.held if usable and cover is not None else Decimal(0))
    affordable = int(max(free, Decimal(0)) // instruction.price)
    quantity = min(open_quantity, from_cover + affordable)
    if quantity < open_quantity and not (instruction.partial_allowed and quantity > 0):
        return Wait(DvpReason.LACK_OF_CASH, "the buyer's settlement account cannot pay for this trade")
    return Attempt(instruction.attempt + 1, quantity, quantity * instruction.price, min(from_cover, quantity))


def started(instruction: Instruction, attempt: Attempt) -> Instruction:
    return replace(instruction, attempt=attempt.number, in_flight=True)


def waiting(instruction: Instruction, wait: Wait) -> Instruction:
    return replace(instruction, reason=wait.reason, detail=wait.detail)


def refused(instruction: Instruction, reason: DvpReason, detail: str, retryable: bool) -> Instruction:
    """A reservation refused: pending for recycling if the seller may yet deliver, failed if never."""
    settlement = instruction.settlement if retryable else SettlementStatus.FAILED
    return replace(instruction, in_flight=False, reason=reason, detail=detail, settlement=settlement)


def settled(
    instruction: Instruction, quantity: int, amount: Decimal, short: DvpReason = DvpReason.LACK_OF_CASH
) -> Instruction:
    done = instruction.settled_quantity + quantity
    whole = done == instruction.quantity
    return replace(
        instruction,
        in_flight=False,
        settled_quantity=done,
        settled_amount=instruction.settled_amount + amount,
        settlement=SettlementStatus.SETTLED if whole else SettlementStatus.PARTIALLY_SETTLED,
        reason=None if whole else short,
        detail="" if whole else f"{instruction.quantity - done} shares still to settle",
    )


def failed(instruction: Instruction, fail: Fail) -> Instruction:
    cancelled = fail.reason is DvpReason.CANCELLED_BY_PARTY
    return replace(
        instruction,
        processing=ProcessingStatus.CANCELLED if cancelled else instruction.processing,
        settlement=instruction.settlement if cancelled and instruction.settled_quantity else SettlementStatus.FAILED,
        reason=fail.reason,
        detail=fail.detail,
    )


def cut_off(instruction: Instruction, recycle_days: int) -> date:
    """The last day an instruction is recycled: its intended settlement date plus the window."""
    return instruction.intended_settlement_date + timedelta(days=recycle_days)


def recycle(instruction: Instruction, today: date, recycle_days: int) -> Fail | None:
    """Past the cut-off a pending instruction fails; before it, it is attempted again."""
    if today > cut_off(instruction, recycle_days):
        return Fail(DvpReason.PAST_CUT_OFF, f"not settled by the cut-off {cut_off(instruction, recycle_days)}")
    return None


# -- cancellation by the parties -----------------------------------------------------------------


def ask_cancel(instruction: Instruction, party: str, operator: bool = False) -> Instruction | DvpReason:
    """A matched instruction is cancelled when both parties asked (or an operator did); never after
    it settled. While a reservation is outstanding the cancel waits for the answer."""
    if not operator and party not in _parties(instruction):
        return DvpReason.UNKNOWN_INSTRUCTION  # someone else's instruction looks like none
    if not instruction.live:
        return DvpReason.NOT_CANCELLABLE
    return replace(
        instruction,
        cancel_by_buyer=operator or instruction.cancel_by_buyer or party == instruction.buyer_user_id,
        cancel_by_seller=operator or instruction.cancel_by_seller or party == instruction.seller_user_id,
    )


def _parties(instruction: Instruction) -> tuple[str, str]:
    return instruction.buyer_user_id, instruction.seller_user_id


def cancel_due(instruction: Instruction) -> Fail | None:
    if instruction.live and not instruction.in_flight and instruction.cancel_by_buyer and instruction.cancel_by_seller:
        return Fail(DvpReason.CANCELLED_BY_PARTY, "cancelled by both parties")
    return None


# -- R-001-42 ------------------------------------------------------------------------------------


def notice_reason(instruction: Instruction | None, notice: PresentTradeNotice, presenter: str) -> DvpReason | None:
    """The presenter is the notice's side of this trade and the notice says what the instruction says."""
    if instruction is None:
        return DvpReason.UNKNOWN_INSTRUCTION
    party = instruction.buyer_user_id if notice.side is Side.BUY else instruction.seller_user_id
    if presenter != party:
        return DvpReason.UNKNOWN_INSTRUCTION  # someone else's trade looks like no trade
    agrees = (
        notice.issue_code == instruction.issue_code
        and notice.quantity == instruction.quantity
        and notice.price == instruction.price
        and notice.amount == instruction.amount
    )
    return None if agrees else DvpReason.NOTICE_MISMATCH
