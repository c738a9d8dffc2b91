"""The line after approval: lapse, repayment and default (seed 003 §6.9–§6.11).

Repayment: the locks stay until the card issuer reports the secured obligation fully repaid
(R-003-48); then exactly the positions that secured it are released and the purchaser is told
(R-003-47/49). Default, pay then sell (Fig. 19): the line pays the shortage to the card issuer
through the settlement ledger and says so (R-003-51); on that posting it instructs custody to
sell the locked positions (R-003-53/54); each completed sale is erased from DB 620 (R-003-56);
when every sale is over the proceeds repay the line, a surplus is paid to the purchaser and a
deficit is recorded as still owed (R-003-58), and the purchaser is told (R-003-57).
"""

from __future__ import annotations

from uuid import UUID, uuid4

from agents.credit import audit, domain, ledger, line_repo
from agents.credit import obligation_repo as obligations
from agents.credit.line import position, release
from agents.credit.line_repo import Collateral, LockStatus, Obligation, ObligationStatus
from broker import logs
from broker.context import Context
from schemas.credit import (
    AssetsSold,
    CollateralReleased,
    ObligationLapsed,
    RepaymentReported,
    ShortagePaid,
    WithdrawalFailed,
)
from schemas.custody import (
    LockReleased,
    PositionQuantity,
    ReleaseLock,
    ReleaseRefused,
    SaleCompleted,
    SaleRefused,
    SellInstruction,
)
from schemas.identity import CARD_ISSUER_ID

log = logs.get("kabuto.credit.line")
_DONE = (LockStatus.RELEASED, LockStatus.REFUSED, LockStatus.SOLD)


async def _approved(ctx: Context, oid: UUID, what: str) -> Obligation | None:
    ob = await obligations.get(ctx.connection, oid)
    if ob is None or ob.status is not ObligationStatus.APPROVED:
        log.warning(f"{what}_unexpected", obligation_id=str(oid), status=ob.status.value if ob else None)
        return None
    return ob


async def _release_all(ctx: Context, ob: Obligation, why: str) -> None:
    for lock in await obligations.collateral_of(ctx.connection, ob.obligation_id):
        if lock.status is LockStatus.PLACED:
            await release(ctx, lock, why)


async def on_lapsed(lapsed: ObligationLapsed, ctx: Context) -> None:
    """The purchase was never captured: nothing is owed; its collateral is released."""
    ob = await _approved(ctx, lapsed.obligation_id, "lapse")
    if ob is None:
        return
    await obligations.update(ctx.connection, ob.obligation_id, ctx.now, status=ObligationStatus.LAPSED)
    await audit.record(ctx, ob.purchaser, "capture-expiry", "obligation_lapsed", ob.obligation_id)
    await _release_all(ctx, ob, "the purchase lapsed uncaptured")


async def on_repayment(report: RepaymentReported, ctx: Context) -> None:
    """S8010 → S8020 only on full repayment of the secured obligation (R-003-47/48)."""
    ob = await _approved(ctx, report.obligation_id, "repayment")
    if ob is None:
        return
    await audit.record(
        ctx,
        ob.purchaser,
        "S8010",
        "repayment_received",
        ob.obligation_id,
        amount=report.amount,
        remaining=report.remaining,
    )
    if report.remaining > 0:
        return  # R-003-48: the collateral stays locked until the debt is repaid
    await obligations.update(ctx.connection, ob.obligation_id, ctx.now, status=ObligationStatus.REPAID)
    await _release_all(ctx, ob, "the secured obligation was repaid")


async def on_released(released: LockReleased, ctx: Context) -> None:
    """S8020 done; once all of a repaid or lapsed obligation's locks are free, S8030/S8040."""
    lock = await obligations.collateral(ctx.connection, released.lock_id)
    if lock is None or lock.status not in (LockStatus.RELEASING, LockStatus.SOLD):
        log.warning("lock_released_unexpected", lock_id=str(released.lock_id))
        return
    if lock.status is LockStatus.RELEASING:
        await obligations.set_lock(ctx.connection, lock.lock_id, LockStatus.RELEASED, ctx.now, cursor=released.cursor)
    await audit.record(ctx, lock.purchaser, "S8020", "unlocked", lock.obligation_id, lock_id=lock.lock_id)
    ob = await obligations.get(ctx.connection, lock.obligation_id)
    assert ob is not None
    locks = await obligations.collateral_of(ctx.connection, ob.obligation_id)
    if ob.status in (ObligationStatus.REPAID, ObligationStatus.LAPSED) and all(c.status in _DONE for c in locks):
        freed = tuple(position(c) for c in locks if c.status is LockStatus.RELEASED)
        ctx.emit(
            CollateralReleased(obligation_id=ob.obligation_id, reason=ob.status.value, positions=freed), to=ob.purchaser
        )
        await audit.record(ctx, ob.purchaser, "S8040", "release_notice_sent", ob.obligation_id, positions=len(freed))


async def on_release_refused(refused: ReleaseRefused, ctx: Context) -> None:
    lock = await obligations.collateral(ctx.connection, refused.lock_id)
    purchaser = lock.purchaser if lock else "?"
    await audit.record(
        ctx, purchaser, "S8020", "unlock_refused", lock.obligation_id if lock else None, reason=refused.reason.value
    )
    log.error("release_refused", lock_id=str(refused.lock_id), reason=refused.reason.value, detail=refused.detail)


async def on_withdrawal_failed(failed: WithdrawalFailed, ctx: Context) -> None:
    """S9020 → S9030 (R-003-50/51): pay the shortage to the card issuer through the ledger."""
    ob = await _approved(ctx, failed.obligation_id, "default")
    if ob is None:
        return
    policy = await line_repo.policy(ctx.connection)
    assert policy is not None, "an approved obligation implies the line is configured"
    reference = uuid4()
    await obligations.update(
        ctx.connection,
        ob.obligation_id,
        ctx.now,
        status=ObligationStatus.DEFAULTED,
        advanced=failed.shortage,
        advance_reference=reference,
    )
    await audit.record(ctx, ob.purchaser, "S9020", "shortage_received", ob.obligation_id, shortage=failed.shortage)
    ledger.transfer(
        ctx,
        reference,
        debit=policy.settlement_account,
        credit=failed.pay_to_account,
        amount=failed.shortage,
        customer=ctx.identity.user_id,
        description=f"shortage of {ob.purchaser} paid by the line (obligation {ob.obligation_id})",
    )
    await audit.record(ctx, ob.purchaser, "S9030", "shortage_payment_requested", ob.obligation_id, reference=reference)


async def advance_posted(ctx: Context, reference: UUID, posted: bool, detail: str) -> bool:
    """The shortage is paid: tell the card issuer (S9040) and instruct the sales (S9060–S9080)."""
    row = await ctx.connection.fetchval("SELECT obligation_id FROM obligations WHERE advance_reference = $1", reference)
    if row is None:
        return False
    ob = await obligations.get(ctx.connection, row)
    assert ob is not None
    if not posted:
        await audit.record(ctx, ob.purchaser, "S9030", "shortage_payment_failed", ob.obligation_id, detail=detail)
        log.error("shortage_payment_failed", obligation_id=str(ob.obligation_id), detail=detail)
        return True
    ctx.emit(
        ShortagePaid(obligation_id=ob.obligation_id, amount=ob.advanced, entry_reference=reference), to=CARD_ISSUER_ID
    )
    await audit.record(ctx, ob.purchaser, "S9040", "shortage_paid", ob.obligation_id, amount=ob.advanced)
    policy = await line_repo.policy(ctx.connection)
    assert policy is not None
    for lock in await obligations.collateral_of(ctx.connection, ob.obligation_id):
        if lock.status is LockStatus.PLACED:
            await _instruct_sale(ctx, lock, policy.settlement_account)
    return True


async def _instruct_sale(ctx: Context, lock: Collateral, proceeds_account: str) -> None:
    instruction = uuid4()
    await obligations.set_lock(ctx.connection, lock.lock_id, LockStatus.SELLING, ctx.now)
    ctx.emit(
        SellInstruction(
            instruction_id=instruction,
            lock_id=lock.lock_id,
            issue_code=lock.issue_code,
            quantity=lock.quantity,
            proceeds_account=proceeds_account,
        ),
        to=lock.custodian,
    )
    await audit.record(
        ctx,
        lock.purchaser,
        "S9070",
        "sell_instructed",
        lock.obligation_id,
        lock_id=lock.lock_id,
        instruction_id=instruction,
        issue_code=lock.issue_code,
        quantity=lock.quantity,
    )


async def on_sale_completed(sale: SaleCompleted, ctx: Context) -> None:
    """S9100/S9110 (R-003-55/56): erase what sold; free what did not; settle when all are over."""
    lock = await obligations.collateral(ctx.connection, sale.lock_id)
    if lock is None or lock.status is not LockStatus.SELLING:
        log.warning("sale_completed_unexpected", lock_id=str(sale.lock_id))
        return
    proceeds = domain.yen(sale.proceeds)
    await obligations.set_lock(
        ctx.connection, lock.lock_id, LockStatus.SOLD, ctx.now, sold=sale.quantity_sold, proceeds=proceeds
    )
    await line_repo.remove_sold(ctx.connection, lock, sale.quantity_sold)
    await _collect(ctx, lock, sale, proceeds)
    await audit.record(
        ctx,
        lock.purchaser,
        "S9100",
        "sale_completed",
        lock.obligation_id,
        lock_id=lock.lock_id,
        sold=sale.quantity_sold,
        unsold=sale.unsold,
        proceeds=proceeds,
    )
    if sale.unsold:  # what did not sell is no longer needed as collateral once the default is settled
        ctx.emit(_partial_release(lock, sale.unsold), to=lock.custodian)
        await audit.record(ctx, lock.purchaser, "S8020", "unlock_requested", lock.obligation_id, unsold=sale.unsold)
    await _settle_if_sold(ctx, lock.obligation_id)


async def _collect(ctx: Context, lock: Collateral, sale: SaleCompleted, proceeds: int) -> None:
    """Proceeds credited to the custodian's own account (it sells in its own name) are collected
    into the line's, under the custodian's mandate, so the line applies them (R-003-58)."""
    policy = await line_repo.policy(ctx.connection)
    assert policy is not None
    if proceeds <= 0 or sale.proceeds_account == policy.settlement_account:
        return
    ledger.transfer(
        ctx,
        sale.instruction_id,
        debit=sale.proceeds_account,
        credit=policy.settlement_account,
        amount=proceeds,
        customer=lock.custodian,
        description=f"proceeds of the forced sale of {lock.issue_code} for obligation {lock.obligation_id}",
    )
    await audit.record(ctx, lock.purchaser, "S9100", "proceeds_collected", lock.obligation_id, amount=proceeds)


def _partial_release(lock: Collateral, unsold: int) -> ReleaseLock:
    positions = (PositionQuantity(issue_code=lock.issue_code, quantity=unsold),)
    return ReleaseLock(lock_id=lock.lock_id, release_id=uuid4(), positions=positions)


async def on_sale_refused(refused: SaleRefused, ctx: Context) -> None:
    lock = await obligations.collateral(ctx.connection, refused.lock_id)
    if lock is None or lock.status is not LockStatus.SELLING:
        return
    await obligations.set_lock(ctx.connection, lock.lock_id, LockStatus.PLACED, ctx.now)
    await audit.record(
        ctx,
        lock.purchaser,
        "S9090",
        "sale_refused",
        lock.obligation_id,
        reason=refused.reason.value,
        detail=refused.detail,
    )


async def _settle_if_sold(ctx: Context, oid: UUID) -> None:
    """R-003-58: apply the proceeds; return the surplus; record the deficit; tell the purchaser."""
    ob = await obligations.get(ctx.connection, oid)
    assert ob is not None
    locks = await obligations.collateral_of(ctx.connection, oid)
    if ob.status is not ObligationStatus.DEFAULTED or not all(c.status in _DONE for c in locks):
        return
    sold = [c for c in locks if c.status is LockStatus.SOLD]
    recovery = domain.recover(ob.advanced, sum(c.proceeds for c in sold))
    contract = await line_repo.purchaser(ctx.connection, ob.purchaser)
    policy = await line_repo.policy(ctx.connection)
    assert contract is not None and policy is not None
    if recovery.surplus:
        ledger.transfer(
            ctx,
            uuid4(),
            debit=policy.settlement_account,
            credit=contract.cash_account,
            amount=recovery.surplus,
            customer=ob.purchaser,
            description=f"surplus of the forced sale for obligation {oid} returned",
        )
    await obligations.update(
        ctx.connection,
        oid,
        ctx.now,
        status=ObligationStatus.RECOVERED,
        proceeds=recovery.proceeds,
        surplus=recovery.surplus,
        deficit=recovery.deficit,
    )
    ctx.emit(
        AssetsSold(
            obligation_id=oid,
            positions=tuple(position(c, c.quantity_sold) for c in sold),
            advanced=recovery.advanced,
            proceeds=recovery.proceeds,
            surplus_returned=recovery.surplus,
            deficit=recovery.deficit,
        ),
        to=ob.purchaser,
    )
    await audit.record(
        ctx,
        ob.purchaser,
        "S9120",
        "assets_sold_notice_sent",
        oid,
        proceeds=recovery.proceeds,
        surplus=recovery.surplus,
        deficit=recovery.deficit,
    )
