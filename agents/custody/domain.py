"""Custody's decisions, pure: how each movement changes a position's four sub-balances, and
whether a lock, release or sale may go ahead. No I/O; the database re-checks that no
sub-balance goes below zero.

Only *available* shares can be locked, delivered, withdrawn or sold on the client's word;
*locked* shares move only on the lock holder's word (release, or sale on instruction);
*pending delivery* shares are leaving and *pending receipt* shares arriving, and neither can
be used until the movement completes or is called off.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from uuid import UUID

from schemas.custody import LockRefusal, PositionQuantity, SubBalances


class PositionRefusal(StrEnum):
    """Why shares cannot leave a position; each names what is in the way."""

    UNKNOWN_ACCOUNT = "unknown_account"
    ACCOUNT_NOT_OWNED = "account_not_owned"
    ACCOUNT_CLOSED = "account_closed"
    UNKNOWN_POSITION = "unknown_position"
    QUANTITY_LOCKED = "quantity_locked"
    QUANTITY_PENDING = "quantity_pending"
    INSUFFICIENT_AVAILABLE = "insufficient_available"


class Refused(Exception):
    """A movement custody will not make; nothing changed."""

    def __init__(self, reason: PositionRefusal | LockRefusal, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Balances:
    available: int = 0
    locked: int = 0
    pending_delivery: int = 0
    pending_receipt: int = 0

    @property
    def held(self) -> int:
        """Shares the custodian holds for the position (pending receipts have not arrived)."""
        return self.available + self.locked + self.pending_delivery

    def view(self) -> SubBalances:
        return SubBalances(
            available=self.available,
            locked=self.locked,
            pending_delivery=self.pending_delivery,
            pending_receipt=self.pending_receipt,
        )


@dataclass(frozen=True, slots=True)
class Account:
    account_id: str
    client: str
    custodian: str
    status: str


def check_account(account: Account | None, account_id: str, client: str | None) -> Account:
    """The account exists, is open and (when a client is named) belongs to that client."""
    if account is None:
        raise Refused(PositionRefusal.UNKNOWN_ACCOUNT, f"no safekeeping account {account_id}")
    if client is not None and account.client != client:
        raise Refused(PositionRefusal.ACCOUNT_NOT_OWNED, f"account {account_id} is not {client}'s")
    if account.status != "open":
        raise Refused(PositionRefusal.ACCOUNT_CLOSED, f"account {account_id} is closed")
    return account


def _take_available(position: Balances | None, issue: str, quantity: int) -> Balances:
    """Check ``quantity`` can come out of available, naming what is in the way if not."""
    if position is None:
        raise Refused(PositionRefusal.UNKNOWN_POSITION, f"no position in {issue}")
    if position.available >= quantity:
        return position
    if position.available + position.locked >= quantity:
        raise Refused(
            PositionRefusal.QUANTITY_LOCKED,
            f"{issue}: {quantity} asked, {position.available} available, {position.locked} locked",
        )
    if position.available + position.pending_delivery + position.pending_receipt >= quantity:
        raise Refused(
            PositionRefusal.QUANTITY_PENDING,
            f"{issue}: {quantity} asked, {position.available} available, "
            f"{position.pending_delivery} pending delivery, {position.pending_receipt} pending receipt",
        )
    raise Refused(PositionRefusal.INSUFFICIENT_AVAILABLE, f"{issue}: {quantity} asked, {position.available} available")


# --- movements: each returns the position after it -----------------------------------------


def reserve_delivery(position: Balances | None, issue: str, quantity: int) -> Balances:
    """Available → pending delivery: a withdrawal or a trade's delivery starts."""
    p = _take_available(position, issue, quantity)
    return replace(p, available=p.available - quantity, pending_delivery=p.pending_delivery + quantity)


def deliver(position: Balances, quantity: int) -> Balances:
    """Pending delivery leaves the position for good (withdrawn, sold, delivered)."""
    return replace(position, pending_delivery=position.pending_delivery - quantity)


def cancel_delivery(position: Balances, quantity: int) -> Balances:
    """Pending delivery → available: the delivery was called off."""
    return replace(
        position, pending_delivery=position.pending_delivery - quantity, available=position.available + quantity
    )


def expect_receipt(position: Balances | None, quantity: int) -> Balances:
    p = position or Balances()
    return replace(p, pending_receipt=p.pending_receipt + quantity)


def receive(position: Balances, quantity: int) -> Balances:
    """Pending receipt → available: the shares arrived (the issuer registered them, or the
    seller's delivery was committed)."""
    return replace(
        position, pending_receipt=position.pending_receipt - quantity, available=position.available + quantity
    )


def cancel_receipt(position: Balances, quantity: int) -> Balances:
    return replace(position, pending_receipt=position.pending_receipt - quantity)


def lock(position: Balances | None, issue: str, quantity: int) -> Balances:
    """Available → locked."""
    try:
        p = _take_available(position, issue, quantity)
    except Refused as refused:
        reason = LockRefusal.UNKNOWN_POSITION if position is None else LockRefusal.INSUFFICIENT_AVAILABLE
        raise Refused(reason, refused.detail) from refused
    return replace(p, available=p.available - quantity, locked=p.locked + quantity)


def unlock(position: Balances, quantity: int) -> Balances:
    """Locked → available."""
    return replace(position, locked=position.locked - quantity, available=position.available + quantity)


def sell_locked(position: Balances, quantity: int) -> Balances:
    """Locked → pending delivery: a sale on the lock holder's instruction starts."""
    return replace(position, locked=position.locked - quantity, pending_delivery=position.pending_delivery + quantity)


def return_unsold(position: Balances, quantity: int) -> Balances:
    """Pending delivery → locked: what a sale on instruction did not sell stays locked."""
    return replace(position, pending_delivery=position.pending_delivery - quantity, locked=position.locked + quantity)


# --- locks ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Lock:
    lock_id: UUID
    account_id: str
    client: str
    lock_holder: str
    reason: str
    obligation_reference: str
    digest: str
    status: str
    # issue → (placed, still locked)
    quantities: Mapping[str, tuple[int, int]]

    def remaining(self) -> tuple[PositionQuantity, ...]:
        return tuple(
            PositionQuantity(issue_code=issue, quantity=left)
            for issue, (_, left) in sorted(self.quantities.items())
            if left > 0
        )


def digest(content: str) -> str:
    return hashlib.sha256(content.encode()).hexdigest()


def plan_lock(positions: Mapping[str, Balances], wanted: Sequence[PositionQuantity]) -> dict[str, Balances]:
    """All or nothing: every issue's position after the lock, or the first refusal."""
    return {w.issue_code: lock(positions.get(w.issue_code), w.issue_code, w.quantity) for w in wanted}


def check_holder(lock_: Lock | None, lock_id: UUID, sender: str) -> Lock:
    if lock_ is None:
        raise Refused(LockRefusal.UNKNOWN_LOCK, f"no lock {lock_id}")
    if lock_.lock_holder != sender:
        raise Refused(LockRefusal.NOT_LOCK_HOLDER, f"lock {lock_id} is held by {lock_.lock_holder}")
    if lock_.status != "active":
        raise Refused(LockRefusal.LOCK_NOT_ACTIVE, f"lock {lock_id} is {lock_.status}")
    return lock_


def plan_release(lock_: Lock, asked: Sequence[PositionQuantity]) -> dict[str, int]:
    """What to release per issue: everything still locked, or the quantities asked."""
    if not asked:
        return {issue: left for issue, (_, left) in lock_.quantities.items() if left > 0}
    release: dict[str, int] = {}
    for a in asked:
        left = lock_.quantities.get(a.issue_code, (0, 0))[1]
        if a.quantity > left:
            raise Refused(LockRefusal.QUANTITY_EXCEEDS_LOCK, f"{a.issue_code}: {a.quantity} asked, lock holds {left}")
        release[a.issue_code] = a.quantity
    return release


def check_sale(lock_: Lock, issue: str, quantity: int) -> None:
    left = lock_.quantities.get(issue, (0, 0))[1]
    if quantity > left:
        raise Refused(LockRefusal.QUANTITY_EXCEEDS_LOCK, f"{issue}: {quantity} to sell, lock holds {left}")


# --- which certificate leaves the vault ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HandOver:
    """A certificate of the right size is in the vault: use it as it is."""

    cert_id: UUID


@dataclass(frozen=True, slots=True)
class Split:
    """Ask the issuer to split a larger certificate into the quantity and the rest (46)."""

    cert_id: UUID
    parts: tuple[int, int]


@dataclass(frozen=True, slots=True)
class Merge:
    """No single certificate is large enough: ask the issuer to merge these first (46)."""

    cert_ids: tuple[UUID, ...]


def plan_certificate(
    certificates: Sequence[tuple[UUID, int]], quantity: int, *, exact: bool
) -> HandOver | Split | Merge | None:
    """How to get one certificate for ``quantity`` shares out of the free ones (``exact``: of
    exactly that many, as a withdrawal needs; otherwise at least that many, as a sell order
    needs). None when the free certificates together hold too few."""
    fits = sorted((shares, cert_id) for cert_id, shares in certificates if shares >= quantity)
    if fits and (fits[0][0] == quantity or not exact):
        return HandOver(fits[0][1])
    if fits:
        shares, cert_id = fits[0]
        return Split(cert_id, (quantity, shares - quantity))
    chosen: list[UUID] = []
    total = 0
    for shares, cert_id in sorted(((s, c) for c, s in certificates), reverse=True):
        chosen.append(cert_id)
        total += shares
        if total >= quantity:
            return Merge(tuple(sorted(chosen)))
    return None
