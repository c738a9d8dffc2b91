"""Sale on the lock holder's instruction (seed 003 S9070–S9100, R-003-53..55).

Only the lock holder may instruct, and only for what its lock still holds: the shares go from
locked to pending delivery and the lock shrinks by as many. Custody sells them at the exchange
in its own name, as holder of record, from a certificate in its vault (merged at the issuer
first when no single one is large enough), countersigned for the order, into custody's own
settlement account. What becomes of the order — fills, the close, the proceeds paid on to the
lock holder and ``custody.sale.completed`` (M15) — is ``sale_outcomes``.
"""

from __future__ import annotations

from uuid import UUID

from agents.custody import books, domain, locks, repo, sale_outcomes, vault_repo
from agents.custody import sales_repo as sales
from agents.custody.domain import HandOver, Merge, Refused, Split
from agents.custody.sales_repo import Sale
from broker import logs
from broker.context import Context
from broker.sealed_box import seal_account
from broker.stock_certificates import endorse
from schemas.custody import LockRefusal, SaleRefused, SaleStatus, SellInstruction
from schemas.identity import EXCHANGE_ID, ISSUER_ID
from schemas.lifecycle import ReissueKind, ReissueRequest
from schemas.trading import (
    OrderTerms,
    OrderType,
    Side,
    SubmitOrder,
)

log = logs.get("kabuto.custody")


async def on_sell_instruction(request: SellInstruction, ctx: Context) -> None:
    assert ctx.sender is not None
    conn, holder = ctx.connection, ctx.sender.user_id
    digest = domain.digest(request.model_dump_json())
    existing = await sales.sale(conn, request.instruction_id)
    try:
        if existing is not None:
            await _again(ctx, request, existing, digest)
            return
        lock_ = domain.check_holder(await repo.lock(conn, request.lock_id, for_update=True), request.lock_id, holder)
        domain.check_sale(lock_, request.issue_code, request.quantity)
        certificates = await vault_repo.usable(conn, request.issue_code)
        plan = domain.plan_certificate([(c.cert_id, c.shares) for c in certificates], request.quantity, exact=False)
        if plan is None:
            raise Refused(LockRefusal.CERTIFICATES_BUSY, f"custody's free {request.issue_code} certificates are busy")
    except Refused as refused:
        log.info("sale_refused", instruction_id=str(request.instruction_id), reason=refused.reason.value)
        ctx.emit(
            SaleRefused(
                instruction_id=request.instruction_id,
                lock_id=request.lock_id,
                reason=locks.lock_refusal(refused),
                detail=refused.detail,
            ),
            to=holder,
        )
        return
    sale = await _start(ctx, request, lock_, digest)
    await _carry_out(ctx, sale, plan)


async def _again(ctx: Context, request: SellInstruction, existing: Sale, digest: str) -> None:
    """The same instruction again: the outcome if there is one, otherwise nothing (under way)."""
    if existing.digest != digest:
        raise Refused(LockRefusal.INSTRUCTION_ID_CONFLICT, f"instruction {request.instruction_id} had other content")
    if existing.status in ("completed", "failed") and existing.payover != "sent":
        await sale_outcomes.report(ctx, existing)


async def _start(ctx: Context, request: SellInstruction, lock_: domain.Lock, digest: str) -> Sale:
    account = await repo.account(ctx.connection, lock_.account_id)
    assert account is not None
    await repo.lock_clients(ctx.connection, [account.client])
    position = await repo.position_for_update(ctx.connection, account.account_id, request.issue_code)
    assert position is not None
    after = domain.sell_locked(position, request.quantity)
    await books.apply(ctx, account, request.issue_code, after, "sale_instructed", request.instruction_id)
    left = lock_.quantities[request.issue_code][1] - request.quantity
    await repo.set_lock_quantity(ctx.connection, lock_.lock_id, request.issue_code, left)
    sale = Sale(
        request.instruction_id,
        request.lock_id,
        account.account_id,
        account.client,
        request.issue_code,
        request.quantity,
        request.limit_price,
        request.proceeds_account,
        lock_.lock_holder,
        digest,
        f"sale-{request.instruction_id.hex[:24]}",
        None,
        "preparing",
        0,
        "",
    )
    await sales.insert(ctx.connection, sale, ctx.now)
    sale_outcomes.status_event(ctx, sale, SaleStatus.ACCEPTED.value)
    return sale


async def _carry_out(ctx: Context, sale: Sale, plan: HandOver | Split | Merge) -> None:
    busy = f"sale:{sale.instruction_id}"
    if isinstance(plan, HandOver):
        await _place_order(ctx, sale, plan.cert_id)
        return
    cert_ids = plan.cert_ids if isinstance(plan, Merge) else (plan.cert_id,)
    await vault_repo.mark(ctx.connection, list(cert_ids), "busy", busy)
    request = ReissueRequest(user_id=ctx.identity.user_id, kind=ReissueKind.MERGE, cert_ids=cert_ids)
    sealed = ctx.emit(request, to=ISSUER_ID)
    await sales.update(ctx.connection, sale.instruction_id, ctx.now, reissue_request_id=sealed.envelope.message_id)


async def _place_order(ctx: Context, sale: Sale, cert_id: UUID) -> None:
    certificate = await vault_repo.certificate(ctx.connection, cert_id)
    assert certificate is not None and certificate.signed is not None
    me = ctx.identity.user_id
    await vault_repo.mark(ctx.connection, [cert_id], "busy", f"sale:{sale.instruction_id}")
    price = sale.limit_price
    ctx.emit(
        SubmitOrder(
            client_order_id=sale.client_order_id,
            user_id=me,
            issue_code=sale.issue_code,
            terms=OrderTerms(
                side=Side.SELL,
                order_type=OrderType.LIMIT if price is not None else OrderType.MARKET,
                price=price,
                quantity=sale.quantity,
            ),
            settlement_account=seal_account(ctx.trust, me, sale_outcomes.PROCEEDS_ACCOUNT),  # R-001-06
            certificate=endorse(ctx.identity, certificate.signed, "sell_order", f"order:{me}:{sale.client_order_id}"),
        ),
        to=EXCHANGE_ID,
    )
    await sales.update(ctx.connection, sale.instruction_id, ctx.now, status="ordered", cert_id=cert_id)
    log.info("sale_ordered", instruction_id=str(sale.instruction_id), cert_id=str(cert_id))


async def merge_refused(ctx: Context, request_id: UUID, detail: str) -> bool:
    sale = await sales.sale_by(ctx.connection, "reissue_request_id", request_id)
    if sale is None:
        return False
    await sale_outcomes.close(ctx, sale, unsold=sale.quantity, detail=detail)
    return True


async def continue_after_merge(ctx: Context, request_id: UUID) -> bool:
    """A merge custody asked for a sale is done: sell from the merged certificate."""
    sale = await sales.sale_by(ctx.connection, "reissue_request_id", request_id)
    if sale is None:
        return False
    certificates = await vault_repo.usable(ctx.connection, sale.issue_code)
    plan = domain.plan_certificate([(c.cert_id, c.shares) for c in certificates], sale.quantity, exact=False)
    if isinstance(plan, HandOver):
        await _place_order(ctx, sale, plan.cert_id)
    else:
        await sale_outcomes.close(
            ctx, sale, unsold=sale.quantity, detail="certificates_busy: the merge left no large enough one"
        )
    return True


# --- what the exchange, the issuer and settlement say about the order -----------------------
