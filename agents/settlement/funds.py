"""Settlement's side of brokered trading (seed 002 §8–§9, R-002-22/23, R-002-33, R-002-51..76).

The brokerage asks for balances of a customer's candidate accounts, places a hold covering
the allowance before it relays an order, releases it if nothing will settle, and finally posts
the settlement information it produced — a balanced entry whose customer legs consume the hold.
An account's *available* balance is its balance less what is held on it.
"""

from __future__ import annotations

from decimal import Decimal
from uuid import UUID

from agents.settlement import funds_repo, mandates, repo
from agents.settlement.domain import Account, AccountKind, Entry, EntryKind, Leg, UnbalancedEntry, spread_hold
from broker import logs
from broker.context import Context
from broker.errors import Reason, SecurityRejected, Transient
from schemas.brokerage import (
    AccountBalance,
    BalanceInquiry,
    Balances,
    BrokeredSettlementFailed,
    BrokeredSettlementPosted,
    HoldFailure,
    HoldLeg,
    HoldPlaced,
    HoldRefused,
    PlaceHold,
    PostBrokeredSettlement,
    ReleaseHold,
    ReviseHold,
)

log = logs.get("kabuto.settlement")


def _balance(account: Account | None, account_id: str, held: Decimal) -> AccountBalance:
    if account is None:
        return AccountBalance(account=account_id, found=False)
    return AccountBalance(
        account=account_id,
        found=True,
        owner=account.owner_user_id,
        currency=account.currency,
        balance=account.balance,
        available=account.balance - held,
    )


async def _balances(ctx: Context, owner: str, account_ids: list[str], *, lock: bool) -> dict[str, AccountBalance]:
    found = await (repo.accounts_for_update if lock else funds_repo.accounts)(ctx.connection, account_ids)
    held = await funds_repo.held(ctx.connection, account_ids)
    result = {}
    for account_id in account_ids:
        account = found.get(account_id)
        visible = account if account is not None and account.owner_user_id == owner else None
        result[account_id] = _balance(visible, account_id, held.get(account_id, Decimal(0)))
    return result


async def on_balance_inquiry(inquiry: BalanceInquiry, ctx: Context) -> None:
    """R-002-22/23: the balances of the owner's accounts; another owner's look unknown."""
    assert ctx.sender is not None and ctx.message_id is not None
    balances = await _balances(ctx, inquiry.owner, list(inquiry.accounts), lock=False)
    ctx.emit(Balances(inquiry_id=ctx.message_id, balances=tuple(balances.values())), to=ctx.sender.user_id)


async def on_hold(request: PlaceHold, ctx: Context) -> None:
    """R-002-33/74: the owner's selected accounts together cover the allowance; then block it."""
    assert ctx.sender is not None
    ids = [leg.account for leg in request.legs]
    if await funds_repo.hold_exists(ctx.connection, request.hold_id):
        _refuse(ctx, request, HoldFailure.DUPLICATE_HOLD, f"hold {request.hold_id} exists")
        return
    balances = await _balances(ctx, request.owner, ids, lock=True)
    for leg in request.legs:
        balance = balances[leg.account]
        if not balance.found:
            _refuse(ctx, request, HoldFailure.UNKNOWN_ACCOUNT, f"no account {leg.account} of {request.owner}")
            return
    available = {a: b.available for a, b in balances.items() if b.available is not None}
    spread = spread_hold([(leg.account, leg.amount) for leg in request.legs], available)
    if spread is None:
        total = sum(leg.amount for leg in request.legs)
        _refuse(ctx, request, HoldFailure.INSUFFICIENT_FUNDS, f"the selected accounts together hold less than {total}")
        return
    await funds_repo.place(ctx.connection, request.hold_id, request.owner, spread, ctx.sender.user_id)
    after = await _balances(ctx, request.owner, ids, lock=False)
    log.info("hold_placed", hold_id=str(request.hold_id), total=str(sum(leg.amount for leg in request.legs)))
    held = tuple(HoldLeg(account=a, amount=amount) for a, amount in spread)
    ctx.emit(HoldPlaced(hold_id=request.hold_id, balances=tuple(after.values()), held=held), to=ctx.sender.user_id)


def _refuse(ctx: Context, request: PlaceHold, reason: HoldFailure, detail: str) -> None:
    assert ctx.sender is not None
    log.info("hold_refused", hold_id=str(request.hold_id), reason=reason.value)
    ctx.emit(HoldRefused(hold_id=request.hold_id, reason=reason, detail=detail), to=ctx.sender.user_id)


async def _placed_by_sender(ctx: Context, hold_id: UUID) -> None:
    """B101: a brokerage acts only on the holds it placed. Settlement's own (a cover, an attempt's
    earmark: docs/dvp.md) and another brokerage's are refused as a security event, changing
    nothing; an id no hold has is left to the handler, which does nothing with it."""
    assert ctx.sender is not None
    placer = await funds_repo.placer_other_than(ctx.connection, hold_id, ctx.sender.user_id)
    if placer is not None:
        raise SecurityRejected(
            Reason.SENDER_NOT_AUTHORIZED, f"hold {hold_id} was placed by {placer}, not {ctx.sender.user_id}"
        )


async def on_release(request: ReleaseHold, ctx: Context) -> None:
    await _placed_by_sender(ctx, request.hold_id)
    released = await funds_repo.release(ctx.connection, request.hold_id)
    log.info("hold_released", hold_id=str(request.hold_id), released=str(released))


async def on_revise_hold(request: ReviseHold, ctx: Context) -> None:
    """Issue 11: the settlement information is known before the date; hold exactly what each
    account will pay (the mismatch rule's allocation), as far as its balance (less other holds)
    covers it. An account the first hold did not reach is held too when the sender may post on it
    (its own, an institution's, or mandated); one left out of the allocation is freed."""
    assert ctx.sender is not None
    await _placed_by_sender(ctx, request.hold_id)
    current = await funds_repo.placed(ctx.connection, request.hold_id)
    owner = await funds_repo.owner_of(ctx.connection, request.hold_id)
    if not current or owner is None:
        log.info("hold_revision_ignored", hold_id=str(request.hold_id))
        return
    target = {leg.account: leg.amount for leg in request.legs}
    found = await repo.accounts_for_update(ctx.connection, sorted(set(current) | set(target)))
    added = {a: found[a] for a in target if a not in current and a in found}
    if await mandates.refusal_for_postings(ctx, ctx.sender.user_id, added) is not None:
        added = {}
    accounts = [*current, *added]
    others = await funds_repo.held_by_others(ctx.connection, accounts, request.hold_id)
    revised = {
        account: max(
            Decimal(0),
            min(target.get(account, Decimal(0)), found[account].balance - others.get(account, Decimal(0))),
        )
        for account in accounts
    }
    await funds_repo.revise(ctx.connection, request.hold_id, {a: revised[a] for a in current})
    new_legs = [(a, revised[a]) for a in added if revised[a] > 0]
    if new_legs:
        await funds_repo.place(ctx.connection, request.hold_id, owner, new_legs, ctx.sender.user_id)
    log.info("hold_revised", hold_id=str(request.hold_id), held=str(sum(revised.values())))


async def on_brokered_settlement(request: PostBrokeredSettlement, ctx: Context) -> None:
    """R-002-51..67: post the settlement information as one balanced entry; consume the hold."""
    assert ctx.sender is not None
    await _placed_by_sender(ctx, request.hold_id)
    ids = [leg.account for leg in request.legs]
    found = await repo.accounts_for_update(ctx.connection, ids)
    held = await funds_repo.held_by_others(ctx.connection, ids, request.hold_id)
    broker = ctx.sender.user_id
    problem = await mandates.refusal_for_postings(ctx, broker, found) or _check_legs(request, found, held, broker)
    if problem is None:
        try:
            entry = Entry(
                EntryKind.BROKERED,
                str(request.order_id),
                request.description,
                tuple(Leg(leg.account, leg.amount) for leg in request.legs),
            )
        except UnbalancedEntry as exc:
            problem = ("unbalanced", str(exc))
    if problem is not None:
        if not (request.keep_hold_on_shortfall and problem[0] == "insufficient_funds"):
            await funds_repo.release(ctx.connection, request.hold_id)
        ctx.emit(
            BrokeredSettlementFailed(order_id=request.order_id, reason=problem[0], detail=problem[1]),
            to=ctx.sender.user_id,
        )
        return
    await funds_repo.consume(ctx.connection, request.hold_id)  # the hold gives way to the postings
    entry_id = await repo.post(ctx.connection, entry, ctx.now)
    if entry_id is None:
        raise Transient(f"brokered settlement of {request.order_id} was posted meanwhile")
    released = await funds_repo.close(ctx.connection, request.hold_id, entry_id)
    log.info("brokered_settlement_posted", order_id=str(request.order_id), entry_id=entry_id)
    ctx.emit(
        BrokeredSettlementPosted(order_id=request.order_id, entry_id=entry_id, released=released), to=ctx.sender.user_id
    )


def _check_legs(
    request: PostBrokeredSettlement, found: dict[str, Account], held: dict[str, Decimal], broker: str
) -> tuple[str, str] | None:
    """Every account exists and is the broker's or this customer's, and no customer debit takes
    what other holds protect (issue 11)."""
    for leg in request.legs:
        account = found.get(leg.account)
        if account is None:
            return "unknown_account", f"no account {leg.account}"
        if account.kind is AccountKind.CUSTOMER and account.owner_user_id not in (request.customer, broker):
            return "account_not_owned", f"{leg.account} is not {request.customer}'s"
        available = account.balance - held.get(leg.account, Decimal(0))
        if account.kind is AccountKind.CUSTOMER and leg.amount < 0 and available + leg.amount < 0:
            return "insufficient_funds", f"{leg.account} cannot pay {-leg.amount}"
    return None
