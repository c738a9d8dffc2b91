"""What becomes of a sale on instruction once its order is at the exchange (seed 003
S9090/S9100, R-003-55): fills, reversals and cancellations, the name transfers and cash legs,
then the close — unsold shares back into the lock, the proceeds paid on to the lock holder's
account, and ``custody.sale.completed`` to the lock holder."""

from __future__ import annotations

from decimal import Decimal
from uuid import UUID

from agents.custody import books, domain, events, repo, vault_repo
from agents.custody import sales_repo as sales
from agents.custody.sales_repo import Sale
from broker import logs
from broker.context import Context
from broker.errors import Reason, SecurityRejected
from broker.stock_certificates import verify_certificate
from schemas.brokerage import BrokeredSettlementFailed, BrokeredSettlementPosted, LedgerLeg, PostBrokeredSettlement
from schemas.custody import LockStatus, SaleCompleted, SaleFill, SaleStatus
from schemas.dvp import InstructionStatus
from schemas.identity import SETTLEMENT_ID
from schemas.settlement import SettlementNotice, SettlementNoticeV1
from schemas.trading import (
    ExecutionReversed,
    OrderAccepted,
    OrderCancelled,
    OrderExecuted,
    OrderRejected,
    RemainderCertificate,
    TradeCompleted,
)

log = logs.get("kabuto.custody")
# Custody's own cash account at settlement, where the proceeds of its sales are credited first.
PROCEEDS_ACCOUNT = "custody-cash"


def status_event(ctx: Context, sale: Sale, status: str, reason: str | None = None) -> None:
    events.status_changed(
        ctx,
        "sale",
        sale.instruction_id,
        sale.client,
        sale.account_id,
        status,
        issue_code=sale.issue_code,
        quantity=sale.quantity,
        reason=reason,
    )


async def _ordered(ctx: Context, client_order_id: str) -> Sale:
    sale = await sales.sale_by(ctx.connection, "client_order_id", client_order_id)
    if sale is None:
        raise SecurityRejected(Reason.UNSOLICITED, f"no sale order {client_order_id}")
    return sale


async def on_order_rejected(answer: OrderRejected, ctx: Context) -> None:
    sale = await _ordered(ctx, answer.client_order_id)
    if sale.status == "ordered":
        await close(ctx, sale, unsold=sale.quantity, detail=f"{answer.reason.value}: {answer.detail}")


async def on_order_accepted(answer: OrderAccepted, ctx: Context) -> None:
    sale = await _ordered(ctx, answer.client_order_id)
    log.info("sale_order_accepted", instruction_id=str(sale.instruction_id), oan=answer.acceptance_number)


async def on_order_executed(fill: OrderExecuted, ctx: Context) -> None:
    sale = await _ordered(ctx, fill.client_order_id)
    await sales.add_fill(ctx.connection, sale.instruction_id, fill.matching_number, fill.price, fill.quantity)


async def on_execution_reversed(reversal: ExecutionReversed, ctx: Context) -> None:
    """The execution did not settle (docs/dvp.md): those shares were not sold and the exchange
    does not offer them again, so they go back into the lock."""
    sale = await _ordered(ctx, reversal.client_order_id)
    fill = await sales.fill(ctx.connection, reversal.matching_number)
    if sale.status != "ordered" or fill is None or fill.transferred:
        return
    await sales.remove_fill(ctx.connection, reversal.matching_number)
    await _unsell(ctx, sale, fill.quantity)
    await sales.update(ctx.connection, sale.instruction_id, ctx.now, unsold=sale.unsold + fill.quantity)
    await _finish_if_over(ctx, sale.instruction_id)


async def on_order_cancelled(cancelled: OrderCancelled, ctx: Context) -> None:
    """What the order did not sell goes back into the lock."""
    sale = await _ordered(ctx, cancelled.client_order_id)
    if sale.status != "ordered" or cancelled.cancelled_quantity == 0:
        return
    await _unsell(ctx, sale, cancelled.cancelled_quantity)
    await sales.update(ctx.connection, sale.instruction_id, ctx.now, unsold=sale.unsold + cancelled.cancelled_quantity)
    await _finish_if_over(ctx, sale.instruction_id)


async def _unsell(ctx: Context, sale: Sale, quantity: int) -> None:
    account = await repo.account(ctx.connection, sale.account_id)
    assert account is not None
    await repo.lock_clients(ctx.connection, [account.client])
    position = await repo.position_for_update(ctx.connection, sale.account_id, sale.issue_code)
    assert position is not None
    after = domain.return_unsold(position, quantity)
    await books.apply(ctx, account, sale.issue_code, after, "sale_unsold", sale.instruction_id)
    lock_ = await repo.lock(ctx.connection, sale.lock_id, for_update=True)
    assert lock_ is not None
    left = lock_.quantities[sale.issue_code][1] + quantity
    await repo.set_lock_quantity(ctx.connection, sale.lock_id, sale.issue_code, left)


async def on_trade_completed(notice: TradeCompleted, ctx: Context) -> None:
    """The execution's name transfer is done: those shares have left custody."""
    sale = await _ordered(ctx, notice.client_order_id)
    found = await sales.fill(ctx.connection, notice.matching_number)
    if found is None or found.transferred:
        return
    account = await repo.account(ctx.connection, sale.account_id)
    assert account is not None
    await repo.lock_clients(ctx.connection, [account.client])
    position = await repo.position_for_update(ctx.connection, sale.account_id, sale.issue_code)
    assert position is not None
    await books.apply(
        ctx, account, sale.issue_code, domain.deliver(position, notice.quantity), "sold", notice.matching_number
    )
    await sales.mark_transferred(ctx.connection, notice.matching_number, notice.amount)
    if notice.transferred_cert_id is not None:
        await vault_repo.mark(ctx.connection, [notice.transferred_cert_id], "gone")
    await _finish_if_over(ctx, sale.instruction_id)


async def on_remainder(message: RemainderCertificate, ctx: Context) -> None:
    """The rest of the sold certificate comes back to the vault (committed to the order while it is open)."""
    sale = await sales.sale_by(ctx.connection, "cert_id", message.replaces_cert_id)
    if sale is None:
        raise SecurityRejected(Reason.UNSOLICITED, f"no sale from certificate {message.replaces_cert_id}")
    certificate = verify_certificate(message.certificate, ctx.trust)
    await vault_repo.add(
        ctx.connection, certificate.cert_id, certificate.issue_code, certificate.shares, message.certificate
    )
    status = "busy" if sale.status == "ordered" else "held"
    await vault_repo.mark(
        ctx.connection, [certificate.cert_id], status, f"sale:{sale.instruction_id}" if status == "busy" else None
    )
    await sales.update(ctx.connection, sale.instruction_id, ctx.now, cert_id=certificate.cert_id)


async def on_settlement_notice(notice: SettlementNotice | SettlementNoticeV1, ctx: Context) -> None:
    sale = await sales.sale_of_fill(ctx.connection, notice.matching_number)
    if sale is None:
        raise SecurityRejected(Reason.UNSOLICITED, f"no sale fill {notice.matching_number}")
    await sales.mark_settled(ctx.connection, notice.matching_number, notice.settled)
    if not notice.settled:
        log.error("sale_cash_leg_failed", matching_number=notice.matching_number, failure=str(notice.failure))
    await _finish_if_over(ctx, sale.instruction_id)


async def on_instruction_status(status: InstructionStatus, ctx: Context) -> None:
    """Settlement's view of a sale's instruction (docs/dvp.md): for the record; the fill's end
    is decided by the trade completion (both legs done) or the exchange reversing it."""
    log.info(
        "sale_instruction_status",
        instruction=status.instruction,
        settlement=status.status.settlement.value,
        reason=status.status.reason.value if status.status.reason else None,
    )


async def _finish_if_over(ctx: Context, instruction_id: UUID) -> None:
    sale = await sales.sale(ctx.connection, instruction_id)
    assert sale is not None
    fills = await sales.fills(ctx.connection, instruction_id)
    done = sum(f.quantity for f in fills) + sale.unsold == sale.quantity
    if sale.status != "ordered" or not done or any(not f.transferred or f.settled is None for f in fills):
        return
    await close(ctx, sale, unsold=0, detail=sale.detail)


async def close(ctx: Context, sale: Sale, *, unsold: int, detail: str) -> None:
    """The sale is over: unsold shares (if the order never traded) back in the lock, the vault's
    certificate free again, the lock closed when nothing is left in it, the lock holder told."""
    if unsold:
        await _unsell(ctx, sale, unsold)
    fills = await sales.fills(ctx.connection, sale.instruction_id)
    sold = sum(f.quantity for f in fills if f.transferred)
    status = "completed" if sold else "failed"
    await vault_repo.free(ctx.connection, f"sale:{sale.instruction_id}")
    await sales.update(
        ctx.connection, sale.instruction_id, ctx.now, status=status, unsold=sale.unsold + unsold, detail=detail
    )
    lock_ = await repo.lock(ctx.connection, sale.lock_id)
    assert lock_ is not None
    if not lock_.remaining() and lock_.status == LockStatus.ACTIVE.value:
        await repo.set_lock_status(ctx.connection, sale.lock_id, LockStatus.SOLD.value)
        events.status_changed(ctx, "lock", sale.lock_id, sale.client, sale.account_id, LockStatus.SOLD.value)
    closed = await sales.sale(ctx.connection, sale.instruction_id)
    assert closed is not None
    proceeds = await _proceeds(ctx, closed)
    if proceeds > 0:
        _pay_over(ctx, closed, proceeds)
        await sales.update(ctx.connection, sale.instruction_id, ctx.now, payover="sent")
        return
    await report(ctx, closed)


async def _proceeds(ctx: Context, sale: Sale) -> Decimal:
    fills = await sales.fills(ctx.connection, sale.instruction_id)
    return sum((f.amount or Decimal(0) for f in fills if f.transferred and f.settled), Decimal(0))


def _pay_over(ctx: Context, sale: Sale, proceeds: Decimal) -> None:
    """From custody's account to the lock holder's proceeds account, in one balanced entry."""
    ctx.emit(
        PostBrokeredSettlement(
            order_id=sale.instruction_id,
            hold_id=sale.instruction_id,
            customer=sale.lock_holder,
            description=f"proceeds of sale {sale.instruction_id} for {sale.lock_holder}",
            legs=(
                LedgerLeg(account=PROCEEDS_ACCOUNT, amount=-proceeds, means="sale on instruction"),
                LedgerLeg(account=sale.proceeds_account, amount=proceeds, means="sale on instruction"),
            ),
        ),
        to=SETTLEMENT_ID,
    )


async def on_payover_posted(answer: BrokeredSettlementPosted, ctx: Context) -> None:
    await _paid(ctx, answer.order_id, "posted", "")


async def on_payover_failed(answer: BrokeredSettlementFailed, ctx: Context) -> None:
    detail = f"proceeds stay in {PROCEEDS_ACCOUNT}: {answer.reason}: {answer.detail}"
    await _paid(ctx, answer.order_id, "failed", detail)


async def _paid(ctx: Context, instruction_id: UUID, outcome: str, detail: str) -> None:
    sale = await sales.sale(ctx.connection, instruction_id)
    if sale is None or sale.payover != "sent":
        raise SecurityRejected(Reason.UNSOLICITED, f"no proceeds pay-over for sale {instruction_id}")
    await sales.update(ctx.connection, instruction_id, ctx.now, payover=outcome, detail=detail or sale.detail)
    paid = await sales.sale(ctx.connection, instruction_id)
    assert paid is not None
    await report(ctx, paid)


async def report(ctx: Context, sale: Sale) -> None:
    fills = [f for f in await sales.fills(ctx.connection, sale.instruction_id) if f.transferred]
    sold = sum(f.quantity for f in fills)
    proceeds = sum((f.amount or Decimal(0) for f in fills if f.settled), Decimal(0))
    credited = sale.proceeds_account if sale.payover == "posted" else PROCEEDS_ACCOUNT
    status = SaleStatus.FAILED if not sold else SaleStatus.PARTIALLY_COMPLETED if sale.unsold else SaleStatus.COMPLETED
    status_event(ctx, sale, status.value, sale.detail or None)
    log.info("sale_completed", instruction_id=str(sale.instruction_id), sold=sold, proceeds=str(proceeds))
    ctx.emit(
        SaleCompleted(
            instruction_id=sale.instruction_id,
            lock_id=sale.lock_id,
            issue_code=sale.issue_code,
            status=status,
            quantity_sold=sold,
            unsold=sale.unsold,
            fills=tuple(
                SaleFill(
                    matching_number=f.matching_number, price=f.price, quantity=f.quantity, amount=f.amount or Decimal(0)
                )
                for f in fills
            ),
            proceeds=proceeds,
            proceeds_account=credited,
            detail=sale.detail,
        ),
        to=sale.lock_holder,
    )
