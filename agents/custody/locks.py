"""Locks (pledges) on a client's positions, placed and released by the lock holder
(R-003-34, R-003-41, R-003-47/48). Placing is all or nothing and idempotent by lock id;
a partial release is idempotent by release id. Locked shares cannot be delivered, withdrawn
or sold except on the lock holder's instruction (``sales``)."""

from __future__ import annotations

from uuid import UUID

from agents.custody import books, domain, events, repo
from agents.custody.domain import Refused
from broker import logs
from broker.context import Context
from schemas.custody import (
    LockPlaced,
    LockRefusal,
    LockRefused,
    LockReleased,
    LockStatus,
    PlaceLock,
    PositionQuantity,
    ReleaseLock,
    ReleaseRefused,
)

log = logs.get("kabuto.custody")


def lock_refusal(refused: Refused) -> LockRefusal:
    """Account refusals carry the same codes in both enumerations."""
    return LockRefusal(refused.reason.value)


async def on_place_lock(request: PlaceLock, ctx: Context) -> None:
    assert ctx.sender is not None
    conn, holder = ctx.connection, ctx.sender.user_id
    digest = domain.digest(request.model_dump_json())
    existing = await repo.lock(conn, request.lock_id)
    if existing is not None:
        if existing.digest != digest:
            _refuse(
                ctx,
                request,
                Refused(LockRefusal.LOCK_ID_CONFLICT, f"lock {request.lock_id} was placed with other content"),
            )
        else:  # the same request again: the same answer, nothing moves twice
            ctx.emit(await _placed(ctx, request), to=holder)
        return
    try:
        if request.lock_holder != holder:
            raise Refused(LockRefusal.NOT_LOCK_HOLDER, f"{holder} cannot place a lock for {request.lock_holder}")
        account = domain.check_account(await repo.account(conn, request.account), request.account, request.client)
        await repo.lock_clients(conn, [account.client])
        positions = await repo.positions_for_update(conn, account.account_id, [p.issue_code for p in request.positions])
        after = domain.plan_lock(positions, request.positions)
    except Refused as refused:
        _refuse(ctx, request, refused)
        return
    await repo.insert_lock(conn, request, digest, ctx.now)
    for issue, balances in sorted(after.items()):
        await books.apply(ctx, account, issue, balances, "lock", request.lock_id)
    log.info("lock_placed", lock_id=str(request.lock_id), client=request.client, holder=holder)
    events.status_changed(ctx, "lock", request.lock_id, request.client, request.account, LockStatus.ACTIVE.value)
    ctx.emit(await _placed(ctx, request), to=holder)


async def _placed(ctx: Context, request: PlaceLock) -> LockPlaced:
    account = await repo.account(ctx.connection, request.account)
    assert account is not None
    return LockPlaced(
        lock_id=request.lock_id,
        client=request.client,
        account=request.account,
        custodian=account.custodian,
        positions=request.positions,
        lock_holder=request.lock_holder,
        obligation_reference=request.obligation_reference,
        cursor=await repo.last_sequence(ctx.connection, request.client),
    )


def _refuse(ctx: Context, request: PlaceLock, refused: Refused) -> None:
    assert ctx.sender is not None
    reason = lock_refusal(refused)
    log.info("lock_refused", lock_id=str(request.lock_id), reason=reason.value, detail=refused.detail)
    events.status_changed(ctx, "lock", request.lock_id, request.client, request.account, "refused", reason=reason.value)
    ctx.emit(LockRefused(lock_id=request.lock_id, reason=reason, detail=refused.detail), to=ctx.sender.user_id)


async def on_release_lock(request: ReleaseLock, ctx: Context) -> None:
    assert ctx.sender is not None
    conn, holder = ctx.connection, ctx.sender.user_id
    digest = domain.digest(request.model_dump_json())
    try:
        prior = await repo.release_record(conn, request.release_id)
        if prior is not None:
            await _answer_again(ctx, request, prior, digest)
            return
        lock_ = domain.check_holder(await repo.lock(conn, request.lock_id, for_update=True), request.lock_id, holder)
        plan = domain.plan_release(lock_, request.positions)
    except Refused as refused:
        log.info("release_refused", lock_id=str(request.lock_id), reason=refused.reason.value)
        ctx.emit(
            ReleaseRefused(
                lock_id=request.lock_id,
                release_id=request.release_id,
                reason=lock_refusal(refused),
                detail=refused.detail,
            ),
            to=holder,
        )
        return
    released = await release(ctx, lock_, plan, "release")
    await repo.insert_release(conn, request.release_id, request.lock_id, digest, released, ctx.now)
    await _answer(ctx, request, released)


async def release(ctx: Context, lock_: domain.Lock, plan: dict[str, int], cause: str) -> list[PositionQuantity]:
    """Locked → available for each issue of ``plan``; the lock ends when nothing is left in it."""
    conn = ctx.connection
    account = await repo.account(conn, lock_.account_id)
    assert account is not None
    await repo.lock_clients(conn, [account.client])
    positions = await repo.positions_for_update(conn, account.account_id, list(plan))
    released = []
    for issue, quantity in sorted(plan.items()):
        if quantity == 0:
            continue
        await books.apply(ctx, account, issue, domain.unlock(positions[issue], quantity), cause, lock_.lock_id)
        await repo.set_lock_quantity(conn, lock_.lock_id, issue, lock_.quantities[issue][1] - quantity)
        released.append(PositionQuantity(issue_code=issue, quantity=quantity))
    await _close_if_empty(ctx, lock_.lock_id, LockStatus.RELEASED)
    return released


async def _close_if_empty(ctx: Context, lock_id: UUID, status: LockStatus) -> None:
    after = await repo.lock(ctx.connection, lock_id)
    assert after is not None
    if not after.remaining() and after.status == LockStatus.ACTIVE.value:
        await repo.set_lock_status(ctx.connection, lock_id, status.value)
        events.status_changed(ctx, "lock", lock_id, after.client, after.account_id, status.value)


async def _answer(ctx: Context, request: ReleaseLock, released: list[PositionQuantity]) -> None:
    assert ctx.sender is not None
    after = await repo.lock(ctx.connection, request.lock_id)
    assert after is not None
    log.info("lock_released", lock_id=str(request.lock_id), status=after.status)
    ctx.emit(
        LockReleased(
            lock_id=request.lock_id,
            release_id=request.release_id,
            released=tuple(released),
            remaining=after.remaining(),
            status=LockStatus(after.status),
            cursor=await repo.last_sequence(ctx.connection, after.client),
        ),
        to=ctx.sender.user_id,
    )


async def _answer_again(
    ctx: Context, request: ReleaseLock, prior: tuple[UUID, str, list[PositionQuantity]], digest: str
) -> None:
    lock_id, prior_digest, released = prior
    if lock_id != request.lock_id or prior_digest != digest:
        raise Refused(LockRefusal.RELEASE_ID_CONFLICT, f"release {request.release_id} was made with other content")
    await _answer(ctx, request, released)
