"""Custody as the securities leg of a book-entry trade, delivery versus payment (docs/dvp.md;
issue 11 §1 and §2). Settlement drives it:

* ``securities.reserve`` — the deliverer's shares go from available to pending delivery and
  the receiver's position shows them as pending receipt; shares that are locked, pending or
  missing are refused as ``lack_of_securities`` (worth recycling), an account that is unknown
  or not the party's as final;
* ``securities.commit`` — the cash has moved: the shares leave the deliverer and become
  available to the receiver; it cannot fail once reserved;
* ``securities.release`` — the attempt will not settle: both positions are as they were.

A reserve that says ``deliver`` (its cash earmarked at settlement and bound to the attempt) is
committed in the transaction that reserves it and answered ``securities.committed``
(docs/dvp.md, "Delivery against earmarked cash").

One reservation per instruction, keyed by its matching number; each step is one transaction
with its inbox row, so a redelivered or repeated message changes nothing twice.
"""

from __future__ import annotations

from agents.custody import books, delivery_repo, domain, events, repo
from agents.custody.delivery_repo import Reservation
from agents.custody.domain import Account, PositionRefusal, Refused
from broker import logs
from broker.context import Context
from schemas.dvp import (
    BookEntryDelivery,
    BookEntryLeg,
    DvpReason,
    SecuritiesCommit,
    SecuritiesCommitted,
    SecuritiesRelease,
    SecuritiesReservationRefused,
    SecuritiesReserve,
    SecuritiesReserved,
)

log = logs.get("kabuto.custody")

_FINAL = {
    PositionRefusal.UNKNOWN_ACCOUNT: DvpReason.UNKNOWN_ACCOUNT,
    PositionRefusal.ACCOUNT_CLOSED: DvpReason.UNKNOWN_ACCOUNT,
    PositionRefusal.ACCOUNT_NOT_OWNED: DvpReason.ACCOUNT_NOT_OWNED,
}


class LegRefused(Exception):
    def __init__(self, reason: DvpReason, retryable: bool, detail: str, available: int = 0) -> None:
        super().__init__(detail)
        self.reason, self.retryable, self.detail, self.available = reason, retryable, detail, available


async def on_reserve(request: SecuritiesReserve, ctx: Context) -> None:
    assert ctx.sender is not None
    existing = await delivery_repo.reservation(ctx.connection, request.instruction)
    if existing is not None and not _afresh(existing, request):
        await _answer_existing(ctx, request, existing)
        return
    try:
        deliverer, receiver, leg = await _parties(ctx, request)
        await _reserve(ctx, request, deliverer, receiver, leg)
    except LegRefused as refused:
        log.info(
            "delivery_refused", instruction=request.instruction, reason=refused.reason.value, detail=refused.detail
        )
        ctx.emit(
            SecuritiesReservationRefused(
                instruction=request.instruction,
                attempt=request.attempt,
                reason=refused.reason,
                retryable=refused.retryable,
                detail=refused.detail,
                available_quantity=refused.available,
            ),
            to=ctx.sender.user_id,
        )


def _afresh(existing: Reservation, request: SecuritiesReserve) -> bool:
    """Whether the request reserves anew: the last attempt was released, or it is a later attempt
    after a partial delivery (the rest of a partly settled instruction; found by an independent
    suite at stop 34: custody left it unanswered, and the buyer's earmark held for good)."""
    return existing.status == "released" or (existing.status == "committed" and request.attempt > existing.attempt)


async def _answer_existing(ctx: Context, request: SecuritiesReserve, existing: Reservation) -> None:
    """Settlement asks again for an instruction custody already decided: the same answer."""
    assert ctx.sender is not None
    delivering = request.deliver and existing.attempt == request.attempt
    if existing.status == "committed" and not delivering:
        log.warning("reserve_after_commit", instruction=request.instruction)
        return
    if delivering:
        await _deliver(ctx, existing)
        return
    ctx.emit(
        SecuritiesReserved(instruction=request.instruction, attempt=request.attempt, quantity=existing.quantity),
        to=ctx.sender.user_id,
    )


async def _parties(ctx: Context, request: SecuritiesReserve) -> tuple[Account, Account, BookEntryLeg]:
    leg = request.leg
    if not isinstance(leg, BookEntryLeg):
        raise LegRefused(DvpReason.SECURITIES_INVALID, False, "custody settles book-entry legs only")
    if leg.deliverer_account == leg.receiver_account:
        raise LegRefused(DvpReason.SECURITIES_INVALID, False, "deliverer and receiver name the same account")
    accounts = []
    for account_id, party in ((leg.deliverer_account, request.deliverer), (leg.receiver_account, request.receiver)):
        try:
            accounts.append(domain.check_account(await repo.account(ctx.connection, account_id), account_id, party))
        except Refused as refused:
            raise LegRefused(_FINAL[PositionRefusal(refused.reason)], False, refused.detail) from refused
    return accounts[0], accounts[1], leg


async def _reserve(
    ctx: Context, request: SecuritiesReserve, deliverer: Account, receiver: Account, leg: BookEntryLeg
) -> None:
    assert ctx.sender is not None
    issue, quantity = request.issue_code, request.quantity
    positions = await _lock(ctx, deliverer, receiver, issue)
    before = positions[deliverer.account_id]
    try:
        delivering = domain.reserve_delivery(before, issue, quantity)
    except Refused as refused:
        detail = f"{refused.reason.value}: {refused.detail}"
        # Locked shares move only on the lock holder's word: not worth recycling.
        retryable = refused.reason is not PositionRefusal.QUANTITY_LOCKED
        available = before.available if before else 0
        raise LegRefused(DvpReason.LACK_OF_SECURITIES, retryable, detail, available) from refused
    receiving = domain.expect_receipt(positions[receiver.account_id], quantity)
    reference = f"instruction:{request.instruction}"
    await books.apply(ctx, deliverer, issue, delivering, "delivery_reserved", reference)
    await books.apply(ctx, receiver, issue, receiving, "receipt_expected", reference)
    reservation = Reservation(
        request.instruction, request.attempt, issue, quantity, leg.deliverer_account, leg.receiver_account, "reserved"
    )
    await delivery_repo.reserve(ctx.connection, reservation, ctx.now)
    _events(ctx, request.instruction, deliverer, receiver, issue, quantity, "reserved")
    log.info("delivery_reserved", instruction=request.instruction, quantity=quantity)
    if request.deliver:
        await _deliver(ctx, reservation)
        return
    ctx.emit(
        SecuritiesReserved(instruction=request.instruction, attempt=request.attempt, quantity=quantity),
        to=ctx.sender.user_id,
    )


async def _lock(ctx: Context, deliverer: Account, receiver: Account, issue: str) -> dict[str, domain.Balances | None]:
    """Both clients, then both positions in account order: no two transactions wait in a circle."""
    await repo.lock_clients(ctx.connection, [deliverer.client, receiver.client])
    found: dict[str, domain.Balances | None] = {}
    for account_id in sorted((deliverer.account_id, receiver.account_id)):
        found[account_id] = await repo.position_for_update(ctx.connection, account_id, issue)
    return found


def _events(
    ctx: Context, instruction: int, deliverer: Account, receiver: Account, issue: str, quantity: int, status: str
) -> None:
    for account in (deliverer, receiver):
        events.status_changed(
            ctx,
            "delivery",
            instruction,
            account.client,
            account.account_id,
            status,
            issue_code=issue,
            quantity=quantity,
        )


async def _accounts(ctx: Context, r: Reservation) -> tuple[Account, Account]:
    deliverer = await repo.account(ctx.connection, r.deliverer_account)
    receiver = await repo.account(ctx.connection, r.receiver_account)
    assert deliverer is not None and receiver is not None
    return deliverer, receiver


async def on_commit(request: SecuritiesCommit, ctx: Context) -> None:
    assert ctx.sender is not None
    r = await delivery_repo.reservation(ctx.connection, request.instruction)
    if r is None or r.status == "released" or r.attempt != request.attempt:
        # Settlement commits only what custody reserved for that attempt; anything else is a
        # protocol fault to look into, and moving shares on it would break conservation.
        log.error("commit_without_reservation", instruction=request.instruction, attempt=request.attempt)
        return
    await _deliver(ctx, r)


async def _deliver(ctx: Context, r: Reservation) -> None:
    """The reserved shares delivered (once: a reservation committed before is only answered again)."""
    assert ctx.sender is not None
    if r.status == "reserved":
        deliverer, receiver = await _accounts(ctx, r)
        positions = await _lock(ctx, deliverer, receiver, r.issue_code)
        d, rc = positions[deliverer.account_id], positions[receiver.account_id]
        assert d is not None and rc is not None
        reference = f"instruction:{r.instruction}"
        await books.apply(ctx, deliverer, r.issue_code, domain.deliver(d, r.quantity), "delivered", reference)
        await books.apply(ctx, receiver, r.issue_code, domain.receive(rc, r.quantity), "received", reference)
        await delivery_repo.decide(ctx.connection, r.instruction, "committed", ctx.now)
        _events(ctx, r.instruction, deliverer, receiver, r.issue_code, r.quantity, "committed")
        log.info("delivery_committed", instruction=r.instruction, quantity=r.quantity)
    ctx.emit(
        SecuritiesCommitted(
            instruction=r.instruction,
            attempt=r.attempt,
            quantity=r.quantity,
            delivery=BookEntryDelivery(deliverer_account=r.deliverer_account, receiver_account=r.receiver_account),
        ),
        to=ctx.sender.user_id,
    )


async def on_release(request: SecuritiesRelease, ctx: Context) -> None:
    r = await delivery_repo.reservation(ctx.connection, request.instruction)
    if r is None or r.status != "reserved" or r.attempt != request.attempt:
        log.info("release_without_reservation", instruction=request.instruction, attempt=request.attempt)
        return
    deliverer, receiver = await _accounts(ctx, r)
    positions = await _lock(ctx, deliverer, receiver, r.issue_code)
    d, rc = positions[deliverer.account_id], positions[receiver.account_id]
    assert d is not None and rc is not None
    reference = f"instruction:{r.instruction}"
    await books.apply(
        ctx, deliverer, r.issue_code, domain.cancel_delivery(d, r.quantity), "delivery_released", reference
    )
    await books.apply(ctx, receiver, r.issue_code, domain.cancel_receipt(rc, r.quantity), "receipt_released", reference)
    await delivery_repo.decide(ctx.connection, r.instruction, "released", ctx.now)
    _events(ctx, r.instruction, deliverer, receiver, r.issue_code, r.quantity, "released")
    log.info("delivery_released", instruction=r.instruction)
