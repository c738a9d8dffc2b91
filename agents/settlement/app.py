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

from agents.settlement import domain, dvp, funds, funds_repo, instruction_desk, mandates, repo
from broker import logs
from broker.context import Context
from broker.errors import InputRejected, Reason
from broker.pki import PkiError
from broker.running_totals import folding
from broker.runtime import AgentDefinition
from broker.sealed_box import open_box
from schemas.brokerage import BalanceInquiry, PlaceHold, PostBrokeredSettlement, ReleaseHold, ReviseHold
from schemas.dvp import (
    CancelInstruction,
    CoverRelease,
    CoverRequest,
    CoverRequestV1,
    GrantMandate,
    PresentTradeNotice,
    RevokeMandate,
    SecuritiesCommitted,
    SecuritiesReservationRefused,
    SecuritiesReserved,
    SettlementInstruction,
    SettlementInstructionV1,
    StandingCoverRequest,
)
from schemas.identity import SETTLEMENT_ID, Role
from schemas.money import AccountId
from schemas.sealed import ACCOUNT_INQUIRY_ACCOUNT
from schemas.settlement import (
    AccountInquiry,
    AccountStatement,
)

log = logs.get("kabuto.settlement")


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
        # Holds are honoured: covers, earmarks and brokered holds are not the owner's to take.
        held = (await funds_repo.held(ctx.connection, (account_id,))).get(account_id, Decimal(0))
        return await _post(ctx, account, domain.withdrawal(account, amount, reference, held=held))

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
        AccountInquiry: on_account_inquiry,
        BalanceInquiry: funds.on_balance_inquiry,
        PlaceHold: funds.on_hold,
        ReleaseHold: funds.on_release,
        ReviseHold: funds.on_revise_hold,
        PostBrokeredSettlement: funds.on_brokered_settlement,
        CoverRequest: dvp.on_cover_request,
        CoverRequestV1: dvp.on_cover_request_v1,
        StandingCoverRequest: dvp.on_standing_cover_request,
        CoverRelease: dvp.on_cover_release,
        SettlementInstruction: dvp.on_instruction,
        SettlementInstructionV1: dvp.on_instruction_v1,
        SecuritiesReserved: dvp.on_reserved,
        SecuritiesReservationRefused: dvp.on_reservation_refused,
        SecuritiesCommitted: dvp.on_committed,
        CancelInstruction: dvp.on_cancel,
        PresentTradeNotice: instruction_desk.on_present_notice,
        GrantMandate: mandates.on_grant,
        RevokeMandate: mandates.on_revoke,
    },
    background=(instruction_desk.periodic_recycle, folding(repo.PLACED_HOLDS, repo.ACCOUNT_BALANCES)),
    batch_scope=repo.LOCKS.batch,
)
