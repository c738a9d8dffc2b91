"""The securities-backed line (seed 003's HIHI server 200): inquiry → refresh → value → lock → answer.

Claim 1 in order (R-003-61): receive the shortfall (R-003-20); ask every custodian holding the
purchaser's positions for the deltas since the line's cursor (R-003-21/22) and reflect them
(R-003-23); value by the contracted method (R-003-26..29); add per-position amounts largest
first until they cover the shortfall (R-003-32/33); lock exactly those positions at custody
(R-003-34) and only when custody says every lock is placed answer "possible" (R-003-35/37) —
or answer "not possible" and lock nothing (R-003-36).

Every step commits with the inbox row of the message that caused it and the outbox rows of
the messages it sends, so a crash anywhere leaves a consistent state: a lock is recorded
here before it is requested, an approval is sent only in the transaction that records the
last lock placed, and a lock that arrives for an inquiry already answered is released.
"""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID, uuid4

from agents.credit import audit, domain, line_repo
from agents.credit import obligation_repo as obligations
from agents.credit.line_repo import Collateral, LockStatus, Obligation, ObligationStatus
from broker import logs
from broker.context import Context
from schemas.credit import (
    AdditionalCreditDecision,
    AdditionalCreditInquiry,
    CollateralPosition,
    CollateralStatement,
)
from schemas.custody import (
    HoldingsDeltas,
    HoldingsDeltasRequest,
    LockPlaced,
    LockRefused,
    PlaceLock,
    PositionQuantity,
    ReleaseLock,
)
from schemas.identity import CARD_ISSUER_ID

log = logs.get("kabuto.credit.line")
DEFAULT_TIMEOUT = timedelta(minutes=2)
DEFAULT_CURRENT_WITHIN = timedelta(minutes=15)


async def on_inquiry(inquiry: AdditionalCreditInquiry, ctx: Context) -> None:
    """S1060 (R-003-20) → S2000/S2050 (R-003-21): ask each custodian for what changed."""
    conn = ctx.connection
    policy = await line_repo.policy(conn)
    deadline = ctx.now + (policy.inquiry_timeout if policy else DEFAULT_TIMEOUT)
    oid = inquiry.obligation_id
    if not await obligations.insert(
        conn, oid, inquiry.purchaser, inquiry.card_number, inquiry.shortfall, deadline, ctx.now
    ):
        log.warning("inquiry_repeated", obligation_id=str(oid))
        return
    await audit.record(ctx, inquiry.purchaser, "S1060", "inquiry_received", oid, shortfall=inquiry.shortfall)
    contract = await line_repo.purchaser(conn, inquiry.purchaser)
    holder = await line_repo.card_holder(conn, inquiry.card_number)
    if policy is None or contract is None or holder != inquiry.purchaser:
        detail = "the line has no contract with this purchaser for this card"
        await refuse(ctx, await _obligation(ctx, oid), domain.Refusal.UNKNOWN_PURCHASER, detail)
        return
    if not contract.custodians:
        await evaluate(ctx, oid)
        return
    for custodian, cursor in contract.custodians:
        await request_refresh(ctx, contract.purchaser, custodian, cursor, oid)


async def request_refresh(ctx: Context, purchaser: str, custodian: str, cursor: int, oid: UUID | None) -> UUID:
    request = HoldingsDeltasRequest(client=purchaser, cursor=cursor)
    sealed = ctx.emit(request, to=custodian)
    await obligations.add_refresh(ctx.connection, sealed.envelope.message_id, purchaser, custodian, oid, ctx.now)
    step = "S2000" if oid else "S6000"
    await audit.record(ctx, purchaser, step, "holdings_requested", oid, custodian=custodian, cursor=cursor)
    return sealed.envelope.message_id


async def on_deltas(answer: HoldingsDeltas, ctx: Context) -> None:
    """S2020/S2030 (R-003-22/23), S6040/S6050: reflect the deltas, then value when all answered."""
    conn = ctx.connection
    found = await obligations.answer_refresh(conn, answer.request_id)
    if found is None:
        log.warning("deltas_unexpected", request_id=str(answer.request_id))
        return
    purchaser, custodian, oid = found
    applied = [await line_repo.apply_delta(conn, purchaser, custodian, d) for d in answer.deltas]
    await line_repo.advance_cursor(conn, purchaser, custodian, answer.next_cursor)
    step = "S2030" if oid else "S6050"
    await audit.record(
        ctx,
        purchaser,
        step,
        "holdings_reflected",
        oid,
        custodian=custodian,
        deltas=sum(applied),
        cursor=answer.next_cursor,
    )
    if answer.more:
        await request_refresh(ctx, purchaser, custodian, answer.next_cursor, oid)
    elif oid is not None and not await obligations.refreshes_pending(conn, oid):
        await evaluate(ctx, oid)
    elif oid is None:
        await revalue(ctx, purchaser)


async def revalue(ctx: Context, purchaser: str) -> None:
    """After a periodic refresh, DB 610 follows the holdings (seed §6.4's inferred step)."""
    contract = await line_repo.purchaser(ctx.connection, purchaser, lock=True)
    if contract is None:
        return
    try:
        valuation = await _valuation(ctx, contract, purchaser)
    except domain.RefusedError as refused:
        await line_repo.record_valuation(
            ctx.connection, purchaser, None, contract.method, None, refused.reason.value, ctx.now
        )
        return
    await line_repo.record_valuation(ctx.connection, purchaser, None, contract.method, valuation, None, ctx.now)
    await line_repo.set_grantable(ctx.connection, purchaser, valuation, ctx.now)
    await audit.record(ctx, purchaser, "S6050", "credit_recalculated", grantable=valuation.grantable)


async def evaluate(ctx: Context, oid: UUID) -> None:
    """S2040, S5010–S5040: value, select largest first, and request the locks — or refuse."""
    conn = ctx.connection
    ob = await obligations.get(conn, oid)
    if ob is None or ob.status is not ObligationStatus.REFRESHING:
        return
    # One evaluation per purchaser at a time: what one reserves, the next one sees (R-003-60).
    contract = await line_repo.purchaser(conn, ob.purchaser, lock=True)
    assert contract is not None
    try:
        valuation = await _value(ctx, contract, ob)
    except domain.RefusedError as refused:
        await line_repo.record_valuation(conn, ob.purchaser, oid, contract.method, None, refused.reason.value, ctx.now)
        await refuse(ctx, ob, refused.reason, refused.detail)
        return
    selection = domain.select(valuation, ob.shortfall)
    if not selection.approved:
        detail = f"the unlocked holdings support {valuation.grantable:,} yen, less than the shortfall {ob.shortfall:,}"
        await refuse(ctx, ob, domain.Refusal.INSUFFICIENT_COLLATERAL, detail, valuation.grantable)
        return
    await obligations.update(
        conn,
        oid,
        ctx.now,
        status=ObligationStatus.LOCKING,
        accumulated=selection.accumulated,
        grantable=valuation.grantable,
    )
    for chosen in selection.selected:
        await _request_lock(ctx, ob, chosen)


async def _valuation(ctx: Context, contract: line_repo.Purchaser, purchaser: str) -> domain.Valuation:
    """Value the purchaser's pledgeable holdings by its contracted method, with the line's prices."""
    conn = ctx.connection
    policy = await line_repo.policy(conn)
    within = policy.current_within if policy else DEFAULT_CURRENT_WITHIN
    held = line_repo.as_holdings(await line_repo.positions(conn, purchaser))
    quotes = await line_repo.quotes(conn)
    prices = {i: p for i in {h.issue_code for h in held} if (p := domain.price_for(quotes.get(i), ctx.now, within))}
    rated = {issue: rate for issue, (_, rate) in (await line_repo.ratings(conn)).items()}
    return domain.value(contract.method, held, prices, await line_repo.bands(conn), rated)


async def _value(ctx: Context, contract: line_repo.Purchaser, ob: Obligation) -> domain.Valuation:
    conn = ctx.connection
    valuation = await _valuation(ctx, contract, ob.purchaser)
    await line_repo.record_valuation(conn, ob.purchaser, ob.obligation_id, contract.method, valuation, None, ctx.now)
    await line_repo.set_grantable(conn, ob.purchaser, valuation, ctx.now)
    await audit.record(
        ctx,
        ob.purchaser,
        "S2040",
        "credit_calculated",
        ob.obligation_id,
        method=valuation.method.value,
        total_market_value=valuation.total_market_value,
        grantable=valuation.grantable,
    )
    return valuation


async def _request_lock(ctx: Context, ob: Obligation, chosen: domain.ValuedHolding) -> None:
    lock_id = uuid4()
    held = chosen.holding
    await obligations.add_collateral(
        ctx.connection, lock_id, ob.obligation_id, ob.purchaser, held.account, chosen, ctx.now
    )
    ctx.emit(
        PlaceLock(
            lock_id=lock_id,
            client=ob.purchaser,
            account=held.account,
            positions=(PositionQuantity(issue_code=held.issue_code, quantity=held.quantity),),
            lock_holder=ctx.identity.user_id,
            reason="collateral for securities-backed credit",
            obligation_reference=str(ob.obligation_id),
        ),
        to=held.custodian,
    )
    await audit.record(
        ctx,
        ob.purchaser,
        "S5040",
        "lock_requested",
        ob.obligation_id,
        lock_id=lock_id,
        custodian=held.custodian,
        issue_code=held.issue_code,
        quantity=held.quantity,
        credit_value=chosen.credit_value,
    )


async def on_lock_placed(placed: LockPlaced, ctx: Context) -> None:
    """The lock is in place; the last one of an obligation still locking approves it."""
    conn = ctx.connection
    lock = await obligations.collateral(conn, placed.lock_id)
    if lock is None or lock.status is not LockStatus.REQUESTED:
        log.warning("lock_placed_unexpected", lock_id=str(placed.lock_id))
        return
    await obligations.set_lock(conn, lock.lock_id, LockStatus.PLACED, ctx.now, cursor=placed.cursor)
    await audit.record(ctx, lock.purchaser, "S5040", "locked", lock.obligation_id, lock_id=lock.lock_id)
    ob = await _obligation(ctx, lock.obligation_id)
    if ob.status is not ObligationStatus.LOCKING:  # answered meanwhile (refused, timed out): no orphan lock
        await release(ctx, lock, "the inquiry was already answered")
        return
    locks = await obligations.collateral_of(conn, ob.obligation_id)
    if all(c.status is LockStatus.PLACED for c in locks):
        await _approve(ctx, ob, locks)


async def _approve(ctx: Context, ob: Obligation, locks: list[Collateral]) -> None:
    """S1090/S1100 (R-003-35/37) and the collateral statement S1140/S1150 (R-003-40)."""
    await obligations.update(ctx.connection, ob.obligation_id, ctx.now, status=ObligationStatus.APPROVED)
    ctx.emit(
        AdditionalCreditDecision(
            obligation_id=ob.obligation_id,
            approved=True,
            shortfall=ob.shortfall,
            accumulated=ob.accumulated,
            grantable=ob.grantable,
        ),
        to=CARD_ISSUER_ID,
    )
    await audit.record(ctx, ob.purchaser, "S1100", "credit_approved", ob.obligation_id, accumulated=ob.accumulated)
    method = (await line_repo.purchaser(ctx.connection, ob.purchaser) or _missing(ob)).method
    ctx.emit(
        CollateralStatement(
            obligation_id=ob.obligation_id,
            shortfall=ob.shortfall,
            method=method.value,
            grantable=ob.grantable,
            positions=tuple(position(c) for c in locks),
        ),
        to=ob.purchaser,
    )
    await audit.record(ctx, ob.purchaser, "S1150", "collateral_statement_sent", ob.obligation_id, locks=len(locks))


def _missing(ob: Obligation) -> line_repo.Purchaser:
    raise LookupError(f"purchaser {ob.purchaser} of {ob.obligation_id} has no contract")


def position(c: Collateral, quantity: int | None = None) -> CollateralPosition:
    return CollateralPosition(
        custodian=c.custodian,
        issue_code=c.issue_code,
        quantity=c.quantity if quantity is None else quantity,
        price=c.price,
        price_source=c.price_source,
        price_as_of=c.price_as_of,
        price_age_seconds=c.price_age_seconds,
        market_value=c.market_value,
        coefficient=c.coefficient,
        credit_value=c.credit_value,
    )


async def on_lock_refused(refused: LockRefused, ctx: Context) -> None:
    """Custody would not lock a selected position: the inquiry is refused, its other locks freed."""
    lock = await obligations.collateral(ctx.connection, refused.lock_id)
    if lock is None or lock.status is not LockStatus.REQUESTED:
        log.warning("lock_refused_unexpected", lock_id=str(refused.lock_id))
        return
    await obligations.set_lock(ctx.connection, lock.lock_id, LockStatus.REFUSED, ctx.now)
    await audit.record(ctx, lock.purchaser, "S5040", "lock_refused", lock.obligation_id, reason=refused.reason.value)
    ob = await _obligation(ctx, lock.obligation_id)
    if ob.status is ObligationStatus.LOCKING:
        detail = f"{lock.issue_code} at {lock.custodian}: {refused.reason.value} ({refused.detail})"
        await refuse(ctx, ob, domain.Refusal.LOCK_REFUSED, detail)


async def refuse(ctx: Context, ob: Obligation, reason: domain.Refusal, detail: str, grantable: int = 0) -> None:
    """R-003-36: answer "not possible"; every lock placed for it is released (none stays)."""
    await obligations.update(
        ctx.connection, ob.obligation_id, ctx.now, status=ObligationStatus.REFUSED, reason=reason.value, detail=detail
    )
    ctx.emit(
        AdditionalCreditDecision(
            obligation_id=ob.obligation_id,
            approved=False,
            shortfall=ob.shortfall,
            grantable=grantable,
            reason=reason.value,
            detail=detail,
        ),
        to=CARD_ISSUER_ID,
    )
    await audit.record(
        ctx, ob.purchaser, "S1100", "credit_refused", ob.obligation_id, reason=reason.value, detail=detail
    )
    for lock in await obligations.collateral_of(ctx.connection, ob.obligation_id):
        if lock.status is LockStatus.PLACED:
            await release(ctx, lock, "the inquiry was refused")


async def release(ctx: Context, lock: Collateral, why: str, positions: tuple[PositionQuantity, ...] = ()) -> None:
    """Ask custody to release a lock (whole, or the given quantities)."""
    await obligations.set_lock(ctx.connection, lock.lock_id, LockStatus.RELEASING, ctx.now)
    ctx.emit(ReleaseLock(lock_id=lock.lock_id, release_id=uuid4(), positions=positions), to=lock.custodian)
    await audit.record(
        ctx, lock.purchaser, "S8020", "unlock_requested", lock.obligation_id, lock_id=lock.lock_id, why=why
    )


async def _obligation(ctx: Context, oid: UUID) -> Obligation:
    ob = await obligations.get(ctx.connection, oid)
    assert ob is not None, f"obligation {oid} vanished"
    return ob


async def abandon_overdue(ctx: Context) -> int:
    """E5: an inquiry whose custodians did not answer (or lock) in time is refused; what was
    locked for it is released. Returns how many were abandoned."""
    overdue = await obligations.overdue(ctx.connection, ctx.now)
    for ob in overdue:
        silent = ob.status is ObligationStatus.REFRESHING
        detail = "a custodian did not answer the holdings refresh in time" if silent else "custody did not lock in time"
        await refuse(ctx, ob, domain.Refusal.CUSTODIAN_SILENT if silent else domain.Refusal.LOCK_REFUSED, detail)
    return len(overdue)
