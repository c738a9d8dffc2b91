"""The settlement agent's handlers and operators' commands: load, decide in the domain, save, emit.

Seed 001 §2.5: the inter-account settlement unit 27 answers the exchange's settlement request
38 (R-001-41) and the account inquiry unit 28 answers investors (R-001-43). Operators open
accounts and post deposits and withdrawals with local commands, run through
``AgentRuntime.command`` or ``broker.runtime.execute`` as the settlement participant.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from decimal import Decimal

import pydantic

from agents.settlement import domain, funds, repo
from broker import logs
from broker.context import Context
from broker.errors import InputRejected, Reason, Transient
from broker.pki import PkiError
from broker.runtime import AgentDefinition
from broker.sealed_box import open_box
from schemas.brokerage import BalanceInquiry, PlaceHold, PostBrokeredSettlement, ReleaseHold
from schemas.identity import EXCHANGE_ID, SETTLEMENT_ID, Role
from schemas.money import AccountId
from schemas.sealed import ACCOUNT_INQUIRY_ACCOUNT
from schemas.settlement import (
    AccountInquiry,
    AccountStatement,
    SettlementCompleted,
    SettlementFailed,
    SettlementNotice,
    SettlementRequest,
)

log = logs.get("kabuto.settlement")


async def on_settlement_request(request: SettlementRequest, ctx: Context) -> None:
    """Seed 001 Phase 2F (R-001-41): post the trade's cash leg, or say why not, once per trade.

    The inbox absorbs a redelivered message; this guards against a *different* message for a
    trade already decided, which changes nothing and is not answered again.
    """
    if await repo.instruction_decided(ctx.connection, request.matching_number):
        log.warning("settlement_request_repeated", matching_number=request.matching_number)
        return
    accounts = await repo.accounts_for_update(ctx.connection, (request.buyer_account, request.seller_account))
    decision = domain.settle(request, accounts.get(request.buyer_account), accounts.get(request.seller_account))
    if isinstance(decision, domain.Refusal):
        await _fail(ctx, request, decision)
    else:
        await _settle(ctx, request, decision)


async def _settle(ctx: Context, request: SettlementRequest, entry: domain.Entry) -> None:
    assert ctx.message_id is not None
    entry_id = await repo.post(ctx.connection, entry, ctx.now)
    if entry_id is None:
        # Another request for this trade committed since the check above (two consumers); the
        # retry finds its instruction and changes nothing.
        raise Transient(f"trade {request.matching_number} was posted meanwhile")
    await repo.record_instruction(ctx.connection, request, ctx.message_id, entry_id)
    log.info("trade_settled", matching_number=request.matching_number, entry_id=entry_id)
    _tell_parties(ctx, request, _settled_notice(request, entry_id))
    ctx.emit(
        SettlementCompleted(
            matching_number=request.matching_number,
            issue_code=request.issue_code,
            shares=request.shares,
            amount=request.amount,
            currency=request.currency,
            entry_id=entry_id,
        )
    )


async def _fail(ctx: Context, request: SettlementRequest, refusal: domain.Refusal) -> None:
    assert ctx.message_id is not None
    await repo.record_instruction(ctx.connection, request, ctx.message_id, refusal)
    log.info("settlement_failed", matching_number=request.matching_number, failure=refusal.failure.value)
    _tell_parties(ctx, request, _failure_notice(request, refusal))
    ctx.emit(
        SettlementFailed(
            matching_number=request.matching_number,
            issue_code=request.issue_code,
            amount=request.amount,
            currency=request.currency,
            failure=refusal.failure,
            detail=refusal.detail,
        )
    )


def _tell_parties(ctx: Context, request: SettlementRequest, notice: SettlementNotice) -> None:
    """The buyer, the seller (once, if they are one investor) and the exchange."""
    for recipient in dict.fromkeys((request.buyer_user_id, request.seller_user_id, EXCHANGE_ID)):
        ctx.emit(notice, to=recipient)


def _settled_notice(request: SettlementRequest, entry_id: int) -> SettlementNotice:
    return SettlementNotice(
        matching_number=request.matching_number,
        settled=True,
        amount=request.amount,
        currency=request.currency,
        debited_account=request.buyer_account,
        credited_account=request.seller_account,
        entry_id=entry_id,
    )


def _failure_notice(request: SettlementRequest, refusal: domain.Refusal) -> SettlementNotice:
    return SettlementNotice(
        matching_number=request.matching_number,
        settled=False,
        amount=request.amount,
        currency=request.currency,
        debited_account=request.buyer_account,
        credited_account=request.seller_account,
        failure=refusal.failure,
        detail=refusal.detail,
    )


_ACCOUNT_ID: pydantic.TypeAdapter[str] = pydantic.TypeAdapter(AccountId)


def _opened_account(inquiry: AccountInquiry, ctx: Context) -> str:
    """R-001-06: the account id travels sealed to this agent's key; opened, it is checked like any input."""
    if ctx.identity.decryption_key is None:
        raise PkiError("settlement has no encryption key; renew its certificate (`ca enrol settlement --renew`)")
    opened = open_box(ctx.identity.decryption_key, inquiry.account, ACCOUNT_INQUIRY_ACCOUNT)
    try:
        return _ACCOUNT_ID.validate_python(opened)
    except pydantic.ValidationError as exc:
        raise InputRejected(Reason.SCHEMA_VIOLATION, "the sealed account is not an account id") from exc


async def on_account_inquiry(inquiry: AccountInquiry, ctx: Context) -> None:
    """Seed 001 unit 28 (R-001-43): the balance and postings of the inquirer's own account.

    Someone else's account and an unknown one get the same answer, so an inquiry cannot
    reveal which account ids exist.
    """
    assert ctx.message_id is not None and ctx.sender is not None
    inquirer = ctx.sender.user_id
    account_id = _opened_account(inquiry, ctx)
    account = await repo.account(ctx.connection, account_id)
    if account is None or not domain.may_inquire(account, inquirer):
        log.warning("account_inquiry_refused", inquirer=inquirer)  # the account id stays sealed in logs
        ctx.emit(AccountStatement(inquiry_id=ctx.message_id, account=account_id, found=False), to=inquirer)
        return
    statement = await repo.statement(ctx.connection, account, inquiry.entries)
    ctx.emit(
        AccountStatement(
            inquiry_id=ctx.message_id,
            account=account.account_id,
            found=True,
            currency=account.currency,
            balance=statement.account.balance,
            deposits=statement.deposits,
            withdrawals=statement.withdrawals,
            postings=statement.postings,
        ),
        to=inquirer,
    )


# -- operators' commands -------------------------------------------------------------------------


def open_account(
    account_id: str,
    owner: str,
    currency: str = "JPY",
    *,
    kind: domain.AccountKind = domain.AccountKind.CUSTOMER,
    institution: str = "settlement",
    label: str | None = None,
) -> Callable[[Context], Awaitable[domain.Account]]:
    """A command: open a customer account for ``owner`` (seed 001 §3.7, R-001-13), or an
    institution's own account (an intermediary's or securities company's, seed 002 §8)."""

    async def action(ctx: Context) -> domain.Account:
        account = domain.new_account(account_id, owner, currency, kind=kind, institution=institution, label=label)
        await repo.open_account(ctx.connection, account)
        log.info("account_opened", account=account_id, owner=owner, currency=currency)
        return account

    return action


def open_institution_account_once(
    account_id: str, institution: str, owner: str = "brokerage"
) -> Callable[[Context], Awaitable[None]]:
    """A command: an institution's own account (shared by several contracts), opened if missing."""

    async def action(ctx: Context) -> None:
        if await repo.account(ctx.connection, account_id) is None:
            account = domain.new_account(
                account_id, owner, kind=domain.AccountKind.INSTITUTION, institution=institution
            )
            await repo.open_account(ctx.connection, account)

    return action


def deposit(account_id: str, amount: Decimal, reference: str) -> Callable[[Context], Awaitable[domain.Posted]]:
    """A command: money arrived for a customer account; ``reference`` posts only once."""

    async def action(ctx: Context) -> domain.Posted:
        account = await _customer_for_update(ctx, account_id)
        return await _post(ctx, account, domain.deposit(account, amount, reference))

    return action


def withdraw(account_id: str, amount: Decimal, reference: str) -> Callable[[Context], Awaitable[domain.Posted]]:
    """A command: pay money out of a customer account, never beyond its balance."""

    async def action(ctx: Context) -> domain.Posted:
        account = await _customer_for_update(ctx, account_id)
        return await _post(ctx, account, domain.withdrawal(account, amount, reference))

    return action


def statement(account_id: str, recent: int = 20) -> Callable[[Context], Awaitable[domain.Statement]]:
    """A query: any account's balance, totals and ``recent`` latest postings, for operators."""

    async def action(ctx: Context) -> domain.Statement:
        account = await repo.account(ctx.connection, account_id)
        if account is None:
            raise domain.UnknownAccount(f"no account {account_id}")
        return await repo.statement(ctx.connection, account, recent)

    return action


async def _customer_for_update(ctx: Context, account_id: str) -> domain.Account:
    # Only the customer's account is locked: the external one may go negative, and locking it
    # would make every deposit wait for every other.
    locked = await repo.accounts_for_update(ctx.connection, (account_id,))
    return domain.customer(locked.get(account_id), account_id)


async def _post(ctx: Context, account: domain.Account, entry: domain.Entry) -> domain.Posted:
    entry_id = await repo.post(ctx.connection, entry, ctx.now)
    if entry_id is None:
        raise domain.DuplicateReference(f"{entry.kind.value} {entry.reference} was already posted")
    balance = await repo.balance(ctx.connection, account.account_id)
    log.info(
        "entry_posted",
        kind=entry.kind.value,
        account=account.account_id,
        entry_id=entry_id,
        balance=str(balance),
    )
    return domain.Posted(entry_id, account.account_id, balance)


AGENT = AgentDefinition(
    id=SETTLEMENT_ID,
    role=Role.SETTLEMENT,
    handlers={
        SettlementRequest: on_settlement_request,
        AccountInquiry: on_account_inquiry,
        BalanceInquiry: funds.on_balance_inquiry,
        PlaceHold: funds.on_hold,
        ReleaseHold: funds.on_release,
        PostBrokeredSettlement: funds.on_brokered_settlement,
    },
)
