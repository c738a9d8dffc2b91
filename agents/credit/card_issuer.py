"""The card issuer (seed 003's FI server 300): authorisation, capture, repayment and default.

S1040: a purchase within the remaining credit is answered at once (R-003-16); above it the
shortfall F1 goes to the line as an additional-credit inquiry (R-003-18/19) and the merchant
is answered when the line decides (R-003-38/39). The covered part is reserved on the card while
the line decides, so two purchases never spend the same remaining credit. An approval the
merchant never captures lapses and frees the line's collateral. Repayment (S7000) draws on the
purchaser's settlement account; success is reported to the line (R-003-46), failure is a
default with the overdue shortage (R-003-50).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from uuid import UUID, uuid4

from agents.credit import audit, card_repo, ledger
from agents.credit.card_repo import Authorisation, AuthStatus
from agents.credit.domain import split
from broker import logs
from broker.context import Context
from schemas.credit import (
    AdditionalCreditDecision,
    AdditionalCreditInquiry,
    CaptureAnswer,
    CapturePurchase,
    ObligationLapsed,
    PurchaseAnswer,
    PurchaseRefusal,
    PurchaseRequest,
    RepaymentReported,
    ShortagePaid,
    WithdrawalFailed,
)
from schemas.identity import CREDIT_ID

log = logs.get("kabuto.credit.card_issuer")


class CardCommandError(ValueError):
    """An operator's command at the card issuer was refused; nothing changed."""


def _answer(auth: Authorisation, *, reason: str | None = None, detail: str | None = None) -> PurchaseAnswer:
    approved = auth.status in (AuthStatus.APPROVED, AuthStatus.CAPTURED)
    return PurchaseAnswer(
        purchase_id=auth.purchase_id,
        approved=approved,
        authorisation_id=auth.authorisation_id,
        purchaser=auth.purchaser,
        amount=auth.price,
        covered=auth.covered if approved else 0,
        secured=auth.secured if approved else 0,
        capture_by=auth.capture_by if approved else None,
        reason=reason or auth.reason,
        detail=detail or auth.detail,
    )


async def on_purchase(request: PurchaseRequest, ctx: Context) -> None:
    """S1030–S1060: answer at once within the remaining credit, else ask the line."""
    assert ctx.sender is not None
    merchant = ctx.sender.user_id
    existing = await card_repo.authorisation_by_purchase(ctx.connection, merchant, request.purchase_id)
    if existing is not None:  # the merchant asked again: the same answer, or none while the line decides
        if existing.status is not AuthStatus.AWAITING_LINE:
            ctx.emit(_answer(existing), to=merchant)
        return
    account = await card_repo.card_for_update(ctx.connection, request.card_number)
    if account is None:
        ctx.emit(
            PurchaseAnswer(
                purchase_id=request.purchase_id,
                approved=False,
                amount=request.amount,
                reason=PurchaseRefusal.UNKNOWN_CARD.value,
                detail="the card issuer has no such card",
            ),
            to=merchant,
        )
        return
    carried = split(account, request.amount)
    auth_id = uuid4()
    status = AuthStatus.AWAITING_LINE if carried.needs_line else AuthStatus.APPROVED
    await card_repo.insert_authorisation(
        ctx.connection, auth_id, merchant, request.purchase_id, account, carried, status, ctx.now
    )
    await card_repo.use(ctx.connection, account.card_number, carried.covered)  # reserved while the line decides
    await audit.record(
        ctx, account.purchaser, "S1040", "credit_checked", auth_id, price=carried.price, remaining=account.remaining
    )
    if carried.needs_line:
        ctx.emit(
            AdditionalCreditInquiry(
                obligation_id=auth_id,
                purchaser=account.purchaser,
                card_number=account.card_number,
                shortfall=carried.secured,
            ),
            to=CREDIT_ID,
        )
        await audit.record(
            ctx, account.purchaser, "S1050", "additional_credit_requested", auth_id, shortfall=carried.secured
        )
        return
    await _approve(ctx, auth_id)


async def _approve(ctx: Context, auth_id: UUID) -> None:
    policy = await card_repo.policy(ctx.connection)
    window = policy.capture_window if policy else None
    capture_by = ctx.now + window if window is not None else None
    await card_repo.set_status(ctx.connection, auth_id, AuthStatus.APPROVED, ctx.now, capture_by=capture_by)
    auth = await card_repo.authorisation_for_update(ctx.connection, auth_id)
    assert auth is not None
    ctx.emit(_answer(auth), to=auth.merchant)
    await audit.record(
        ctx, auth.purchaser, "S1110", "purchase_approved", auth_id, covered=auth.covered, secured=auth.secured
    )


async def on_decision(decision: AdditionalCreditDecision, ctx: Context) -> None:
    """S1100 → S1110: the line's answer becomes the merchant's (R-003-38/39)."""
    auth = await card_repo.authorisation_for_update(ctx.connection, decision.obligation_id)
    if auth is None or auth.status is not AuthStatus.AWAITING_LINE:
        log.warning("decision_unexpected", obligation_id=str(decision.obligation_id))
        return
    if decision.approved:
        await _approve(ctx, auth.authorisation_id)
        return
    await card_repo.use(ctx.connection, auth.card_number, -auth.covered)
    reason = PurchaseRefusal.ADDITIONAL_CREDIT_REFUSED.value
    detail = f"{decision.reason}: {decision.detail}" if decision.reason else decision.detail
    await card_repo.set_status(
        ctx.connection, auth.authorisation_id, AuthStatus.REFUSED, ctx.now, reason=reason, detail=detail
    )
    refused = await card_repo.authorisation_for_update(ctx.connection, auth.authorisation_id)
    assert refused is not None
    ctx.emit(_answer(refused), to=auth.merchant)
    await audit.record(ctx, auth.purchaser, "S1110", "purchase_refused", auth.authorisation_id, reason=detail)


async def on_capture(request: CapturePurchase, ctx: Context) -> None:
    """R-003-42: the card issuer pays the merchant the full price through the ledger."""
    assert ctx.sender is not None
    merchant = ctx.sender.user_id
    found = await card_repo.authorisation_by_purchase(ctx.connection, merchant, request.purchase_id)
    auth = await card_repo.authorisation_for_update(ctx.connection, found.authorisation_id) if found else None
    policy = await card_repo.policy(ctx.connection)
    problem = _capture_problem(auth, policy is not None, ctx)
    if problem is not None or auth is None or policy is None:
        ctx.emit(CaptureAnswer(purchase_id=request.purchase_id, captured=False, reason=problem), to=merchant)
        return
    await card_repo.set_status(
        ctx.connection, auth.authorisation_id, AuthStatus.CAPTURED, ctx.now, merchant_account=request.settlement_account
    )
    ledger.transfer(
        ctx,
        auth.authorisation_id,
        debit=policy.settlement_account,
        credit=request.settlement_account,
        amount=auth.price,
        customer=merchant,
        description=f"card purchase {request.purchase_id} paid to {merchant}",
    )
    await audit.record(ctx, auth.purchaser, "R-003-42", "merchant_paid", auth.authorisation_id, amount=auth.price)


def _capture_problem(auth: Authorisation | None, has_policy: bool, ctx: Context) -> str | None:
    if auth is None:
        return "unknown_purchase"
    if not has_policy:
        return "card_issuer_not_configured"
    if auth.status is not AuthStatus.APPROVED:
        return f"purchase_{auth.status.value}"
    if auth.capture_by is not None and auth.capture_by <= ctx.now:
        return "purchase_lapsed"
    return None


async def capture_posted(ctx: Context, auth_id: UUID, posted: bool, detail: str) -> None:
    auth = await card_repo.authorisation_for_update(ctx.connection, auth_id)
    if auth is None:
        return
    answer = CaptureAnswer(
        purchase_id=auth.purchase_id,
        captured=posted,
        amount=auth.price if posted else 0,
        reason=None if posted else detail,
    )
    ctx.emit(answer, to=auth.merchant)


def expire_uncaptured() -> Callable[[Context], Awaitable[int]]:
    """A command (and the periodic job): approvals past their capture time lapse; the covered
    credit is given back and the line is told to release the collateral. Returns how many."""

    async def action(ctx: Context) -> int:
        lapsed = await card_repo.lapsing(ctx.connection, ctx.now)
        for auth in lapsed:
            await card_repo.set_status(ctx.connection, auth.authorisation_id, AuthStatus.LAPSED, ctx.now)
            await card_repo.use(ctx.connection, auth.card_number, -auth.covered)
            if auth.secured:
                ctx.emit(ObligationLapsed(obligation_id=auth.authorisation_id), to=CREDIT_ID)
            await audit.record(ctx, auth.purchaser, "capture-expiry", "purchase_lapsed", auth.authorisation_id)
        return len(lapsed)

    return action


def repay(auth_id: UUID, amount: int) -> Callable[[Context], Awaitable[UUID]]:
    """A command, S7000: withdraw ``amount`` from the purchaser's account for a captured purchase."""

    async def action(ctx: Context) -> UUID:
        auth = await _live(ctx, auth_id)
        if not 0 < amount <= auth.remaining:
            raise CardCommandError(f"amount must be between 1 and the {auth.remaining:,} still owed")
        policy = await card_repo.policy(ctx.connection)
        if policy is None:
            raise CardCommandError("the card issuer has no settlement account; run `kabuto credit issuer-policy`")
        attempt = uuid4()
        await card_repo.insert_repayment(ctx.connection, attempt, auth_id, amount)
        ledger.transfer(
            ctx,
            attempt,
            debit=await card_repo.repayment_account(ctx.connection, auth.card_number),
            credit=policy.settlement_account,
            amount=amount,
            customer=auth.purchaser,
            description=f"card repayment for {auth.purchase_id}",
        )
        await audit.record(ctx, auth.purchaser, "S7000", "withdrawal_requested", auth_id, amount=amount)
        return attempt

    return action


async def _live(ctx: Context, auth_id: UUID) -> Authorisation:
    auth = await card_repo.authorisation_for_update(ctx.connection, auth_id)
    if auth is None:
        raise CardCommandError(f"no authorisation {auth_id}")
    if auth.status is not AuthStatus.CAPTURED:
        raise CardCommandError(f"authorisation {auth_id} is {auth.status.value}, not captured")
    return auth


async def repayment_posted(ctx: Context, attempt_id: UUID, posted: bool, detail: str) -> bool:
    """S7010: the withdrawal's outcome. Returns False if ``attempt_id`` is not a repayment."""
    settled = await card_repo.settle_repayment(ctx.connection, attempt_id, posted, detail)
    if settled is None:
        return False
    auth_id, amount = settled
    auth = await card_repo.authorisation_for_update(ctx.connection, auth_id)
    assert auth is not None
    if posted:
        await _repaid(ctx, auth, amount)
    elif auth.status is AuthStatus.CAPTURED and auth.secured_remaining:
        await _default(ctx, auth, f"withdrawal failed: {detail}")
    else:
        await audit.record(ctx, auth.purchaser, "S7030", "withdrawal_failed", auth_id, detail=detail)
    return True


async def _repaid(ctx: Context, auth: Authorisation, amount: int) -> None:
    """S7020: apply to the secured part first, then the card's ordinary usage; tell the line."""
    to_secured = min(amount, auth.secured_remaining)
    await card_repo.add_repaid(ctx.connection, auth.authorisation_id, amount, ctx.now)
    await card_repo.use(ctx.connection, auth.card_number, -(amount - to_secured))
    remaining = auth.remaining - amount
    if remaining == 0:
        await card_repo.set_status(ctx.connection, auth.authorisation_id, AuthStatus.REPAID, ctx.now)
    await audit.record(ctx, auth.purchaser, "S7010", "withdrawal_succeeded", auth.authorisation_id, amount=amount)
    if to_secured:
        ctx.emit(
            RepaymentReported(
                obligation_id=auth.authorisation_id,
                purchaser=auth.purchaser,
                amount=to_secured,
                remaining=auth.secured_remaining - to_secured,
            ),
            to=CREDIT_ID,
        )
        await audit.record(ctx, auth.purchaser, "S8000", "repayment_reported", auth.authorisation_id, amount=to_secured)


def declare_default(auth_id: UUID) -> Callable[[Context], Awaitable[int]]:
    """A command, S9000: the secured part is overdue; report the shortage to the line."""

    async def action(ctx: Context) -> int:
        auth = await _live(ctx, auth_id)
        if not auth.secured_remaining:
            raise CardCommandError(f"nothing secured is owed on {auth_id}")
        await _default(ctx, auth, "declared overdue by the card issuer")
        return auth.secured_remaining

    return action


async def _default(ctx: Context, auth: Authorisation, why: str) -> None:
    policy = await card_repo.policy(ctx.connection)
    assert policy is not None
    shortage = auth.secured_remaining
    await card_repo.set_status(ctx.connection, auth.authorisation_id, AuthStatus.DEFAULTED, ctx.now, detail=why)
    ctx.emit(
        WithdrawalFailed(
            obligation_id=auth.authorisation_id,
            purchaser=auth.purchaser,
            shortage=shortage,
            pay_to_account=policy.settlement_account,
        ),
        to=CREDIT_ID,
    )
    await audit.record(
        ctx, auth.purchaser, "S9010", "shortage_reported", auth.authorisation_id, shortage=shortage, why=why
    )


async def on_shortage_paid(paid: ShortagePaid, ctx: Context) -> None:
    """S9050 (R-003-52): the line's payment is deposited against the secured part."""
    auth = await card_repo.authorisation_for_update(ctx.connection, paid.obligation_id)
    if auth is None or auth.status is not AuthStatus.DEFAULTED:
        log.warning("shortage_paid_unexpected", obligation_id=str(paid.obligation_id))
        return
    await card_repo.add_repaid(ctx.connection, auth.authorisation_id, paid.amount, ctx.now)
    await card_repo.set_status(ctx.connection, auth.authorisation_id, AuthStatus.RECOVERED, ctx.now)
    await audit.record(ctx, auth.purchaser, "S9050", "shortage_deposited", auth.authorisation_id, amount=paid.amount)
