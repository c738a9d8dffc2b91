"""Withdrawals: a client takes shares out of custody as an electronic stock certificate in its
own name (issue 11 §2).

The shares go from available to pending delivery at once (a locked or pending quantity is
refused, and nothing moves); custody finds a certificate of exactly that many shares in its
vault, asking the issuer to split a larger one or merge smaller ones first (46), and hands it
to the client countersigned for it (seed 001 P3.1). The client claims it at the issuer (41).
The position falls only when the issuer's register no longer shows that certificate as
custody's: a background job asks the issuer for custody's holdings (44/45) while a
withdrawal is handed over, and only a statement asked for after the hand-over counts.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from uuid import UUID

from agents.custody import books, domain, events, repo, sales, vault_repo
from agents.custody.domain import HandOver, Merge, Refused, Split
from agents.custody.vault_repo import Withdrawal
from broker import logs
from broker.context import Context
from broker.errors import Reason, SecurityRejected
from broker.progress import pause
from broker.runtime import AgentRuntime
from broker.stock_certificates import endorse, verify_certificate
from schemas.identity import ISSUER_ID
from schemas.lifecycle import (
    CertificateHandover,
    CertificatesReissued,
    HoldingsInquiry,
    HoldingsStatement,
    ReissueKind,
    ReissueRefused,
    ReissueRequest,
)

log = logs.get("kabuto.custody")
# Seconds between holdings inquiries while a withdrawal waits for the client's claim.
CONFIRM_INTERVAL = 1.0


class WithdrawalError(ValueError):
    """A withdrawal custody will not start; the reason code leads the message. Nothing moved."""


def withdraw(account_id: str, issue: str, quantity: int) -> Callable[[Context], Awaitable[UUID]]:
    async def action(ctx: Context) -> UUID:
        try:
            account = domain.check_account(await repo.account(ctx.connection, account_id), account_id, None)
            await repo.lock_clients(ctx.connection, [account.client])
            position = await repo.position_for_update(ctx.connection, account_id, issue)
            after = domain.reserve_delivery(position, issue, quantity)
        except Refused as refused:
            raise WithdrawalError(f"{refused.reason.value}: {refused.detail}") from refused
        certificates = await vault_repo.usable(ctx.connection, issue)
        plan = domain.plan_certificate([(c.cert_id, c.shares) for c in certificates], quantity, exact=True)
        if plan is None:
            raise WithdrawalError(f"certificates_busy: custody's free {issue} certificates hold fewer than {quantity}")
        withdrawal = Withdrawal(uuid.uuid4(), account_id, account.client, issue, quantity, "preparing", None, ctx.now)
        await books.apply(ctx, account, issue, after, "withdrawal_requested", withdrawal.withdrawal_id)
        await vault_repo.insert_withdrawal(ctx.connection, withdrawal)
        events.status_changed(
            ctx,
            "withdrawal",
            withdrawal.withdrawal_id,
            account.client,
            account_id,
            "requested",
            issue_code=issue,
            quantity=quantity,
        )
        await _carry_out(ctx, withdrawal, plan)
        return withdrawal.withdrawal_id

    return action


async def _carry_out(ctx: Context, w: Withdrawal, plan: HandOver | Split | Merge) -> None:
    busy = f"withdrawal:{w.withdrawal_id}"
    if isinstance(plan, HandOver):
        await _hand_over(ctx, w, plan.cert_id)
        return
    if isinstance(plan, Split):
        request = ReissueRequest(
            user_id=ctx.identity.user_id, kind=ReissueKind.SPLIT, cert_ids=(plan.cert_id,), split_into=plan.parts
        )
    else:
        request = ReissueRequest(user_id=ctx.identity.user_id, kind=ReissueKind.MERGE, cert_ids=plan.cert_ids)
    await vault_repo.mark(ctx.connection, list(request.cert_ids), "busy", busy)
    sealed = ctx.emit(request, to=ISSUER_ID)
    await vault_repo.update_withdrawal(
        ctx.connection, w.withdrawal_id, ctx.now, reissue_request_id=sealed.envelope.message_id
    )
    log.info("withdrawal_reissue_requested", withdrawal_id=str(w.withdrawal_id), kind=request.kind.value)


async def _hand_over(ctx: Context, w: Withdrawal, cert_id: UUID) -> None:
    certificate = await vault_repo.certificate(ctx.connection, cert_id)
    assert certificate is not None and certificate.signed is not None
    await vault_repo.mark(ctx.connection, [cert_id], "busy", f"withdrawal:{w.withdrawal_id}")
    endorsed = endorse(ctx.identity, certificate.signed, "transfer", f"transfer:{w.client}")
    ctx.emit(
        CertificateHandover(handover_id=w.withdrawal_id, certificate=endorsed, note=f"withdrawal from {w.account_id}"),
        to=w.client,
    )
    await vault_repo.update_withdrawal(ctx.connection, w.withdrawal_id, ctx.now, status="handed_over", cert_id=cert_id)
    events.status_changed(
        ctx,
        "withdrawal",
        w.withdrawal_id,
        w.client,
        w.account_id,
        "handed_over",
        issue_code=w.issue_code,
        quantity=w.quantity,
    )
    log.info("withdrawal_handed_over", withdrawal_id=str(w.withdrawal_id), cert_id=str(cert_id))


async def on_reissued(answer: CertificatesReissued, ctx: Context) -> None:
    """The split or merged certificates are custody's: into the vault, then the next step of
    the withdrawal or sale that asked for them."""
    w = await vault_repo.withdrawal_by_reissue(ctx.connection, answer.request_id)
    if w is not None and w.status != "preparing":
        return
    await _into_vault(ctx, answer)
    if w is None:
        if not await sales.continue_after_merge(ctx, answer.request_id):
            raise SecurityRejected(Reason.UNSOLICITED, f"no pending reissue request {answer.request_id}")
        return
    certificates = await vault_repo.usable(ctx.connection, w.issue_code)
    plan = domain.plan_certificate([(c.cert_id, c.shares) for c in certificates], w.quantity, exact=True)
    if plan is None:
        await _cancel(ctx, w, "certificates_busy")
        return
    await _carry_out(ctx, w, plan)


async def _into_vault(ctx: Context, answer: CertificatesReissued) -> None:
    await vault_repo.mark(ctx.connection, list(answer.retired), "gone")
    for signed in answer.certificates:
        certificate = verify_certificate(signed, ctx.trust)
        if certificate.holder_user_id != ctx.identity.user_id:
            raise SecurityRejected(Reason.UNSOLICITED, f"certificate {certificate.cert_id} is not custody's")
        await vault_repo.add(ctx.connection, certificate.cert_id, certificate.issue_code, certificate.shares, signed)


async def on_reissue_refused(answer: ReissueRefused, ctx: Context) -> None:
    detail = f"{answer.reason.value}: {answer.detail}"
    w = await vault_repo.withdrawal_by_reissue(ctx.connection, answer.request_id)
    if w is None:
        if not await sales.merge_refused(ctx, answer.request_id, detail):
            raise SecurityRejected(Reason.UNSOLICITED, f"no pending reissue request {answer.request_id}")
        return
    if w.status == "preparing":
        await _cancel(ctx, w, detail)


async def _cancel(ctx: Context, w: Withdrawal, reason: str) -> None:
    """The withdrawal cannot be carried out: the shares are available again."""
    await vault_repo.free(ctx.connection, f"withdrawal:{w.withdrawal_id}")
    account = await repo.account(ctx.connection, w.account_id)
    assert account is not None
    await repo.lock_clients(ctx.connection, [account.client])
    position = await repo.position_for_update(ctx.connection, w.account_id, w.issue_code)
    assert position is not None
    after = domain.cancel_delivery(position, w.quantity)
    await books.apply(ctx, account, w.issue_code, after, "withdrawal_cancelled", w.withdrawal_id)
    await vault_repo.update_withdrawal(ctx.connection, w.withdrawal_id, ctx.now, status="cancelled", reason=reason)
    events.status_changed(ctx, "withdrawal", w.withdrawal_id, w.client, w.account_id, "cancelled", reason=reason)
    log.warning("withdrawal_cancelled", withdrawal_id=str(w.withdrawal_id), reason=reason)


async def ask_register(ctx: Context) -> bool:
    """Ask the issuer for custody's holdings if a withdrawal waits for its claim."""
    if not await vault_repo.withdrawals(ctx.connection, "handed_over"):
        return False
    sealed = ctx.emit(HoldingsInquiry(user_id=ctx.identity.user_id), to=ISSUER_ID)
    await vault_repo.record_inquiry(ctx.connection, sealed.envelope.message_id, ctx.now)
    return True


async def confirm_withdrawals(runtime: AgentRuntime) -> None:
    while True:
        await pause(CONFIRM_INTERVAL)
        async with runtime.round_of(confirm_withdrawals):
            await runtime.command(runtime.id, ask_register)


async def on_holdings(statement: HoldingsStatement, ctx: Context) -> None:
    """45: every handed-over certificate the register no longer shows as custody's was claimed."""
    asked_at = await vault_repo.inquiry_sent_at(ctx.connection, statement.inquiry_id)
    if asked_at is None:
        raise SecurityRejected(Reason.UNSOLICITED, f"no holdings inquiry {statement.inquiry_id}")
    held = {h.cert_id for h in statement.holdings}
    for w in await vault_repo.withdrawals(ctx.connection, "handed_over"):
        if w.updated_at < asked_at and w.cert_id not in held:
            await _complete(ctx, w)


async def _complete(ctx: Context, w: Withdrawal) -> None:
    account = await repo.account(ctx.connection, w.account_id)
    assert account is not None and w.cert_id is not None
    await repo.lock_clients(ctx.connection, [account.client])
    position = await repo.position_for_update(ctx.connection, w.account_id, w.issue_code)
    assert position is not None
    await books.apply(ctx, account, w.issue_code, domain.deliver(position, w.quantity), "withdrawal", w.withdrawal_id)
    await vault_repo.mark(ctx.connection, [w.cert_id], "gone")
    await vault_repo.update_withdrawal(ctx.connection, w.withdrawal_id, ctx.now, status="completed")
    events.status_changed(
        ctx,
        "withdrawal",
        w.withdrawal_id,
        w.client,
        w.account_id,
        "completed",
        issue_code=w.issue_code,
        quantity=w.quantity,
    )
    log.info("withdrawal_completed", withdrawal_id=str(w.withdrawal_id))
