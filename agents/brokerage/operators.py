"""The brokerage's operator commands: contracts with securities companies, customer registration
(R-002-31), price information (R-002-29/30) and the fee schedule (R-002-34/45). Each returns an
action for ``AgentRuntime.command`` or ``broker.runtime.run_as``."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from decimal import Decimal

from agents.brokerage import repo
from agents.brokerage.customers import Customer, CustomerAccount, hash_pin, record_problems
from agents.brokerage.fees import AllowancePolicy, FeeSchedule
from agents.brokerage.ledger_legs import CompanyAccounts, Design
from broker.context import Context
from schemas.brokerage import TransactionConditions

Action = Callable[[Context], Awaitable[None]]


def company_accounts(company_id: str) -> CompanyAccounts:
    """The settlement accounts of seed 002 §8 for one securities company, named after it."""
    return CompanyAccounts(
        clearing=f"{company_id}:clearing",
        commission=f"{company_id}:commission",
        tax=f"{company_id}:consumption-tax",
        im_account_at_sc=f"{company_id}:intermediary-account",
        im_cash="intermediary:cash",
        sc_account_at_im=f"intermediary:{company_id}-account",
        im_fees="intermediary:fees",
    )


def add_company(company_id: str, name: str, design: Design) -> Action:
    async def action(ctx: Context) -> None:
        await repo.add_company(ctx.connection, company_id, name, design, company_accounts(company_id))

    return action


def register_customer(
    customer_id: str,
    user_id: str,
    pin: str,
    accounts: Sequence[CustomerAccount],
    conditions: TransactionConditions | None = None,
    company_ids: dict[str, str] | None = None,
) -> Action:
    if len(pin) < 4:
        raise ValueError("a PIN has at least four characters")
    _check_accounts(customer_id, accounts)

    async def action(ctx: Context) -> None:
        registered = await repo.customer_of(ctx.connection, user_id)
        if registered is not None:
            raise ValueError(f"{user_id} is already customer {registered}; correct it with customer-update instead")
        _refuse_problems(customer_id, accounts)
        salt, digest = hash_pin(pin)
        await repo.add_customer(
            ctx.connection,
            Customer(
                customer_id=customer_id,
                user_id=user_id,
                pin_salt=salt,
                pin_hash=digest,
                conditions=conditions or TransactionConditions(),
                accounts=tuple(accounts),
                company_ids=company_ids or {},
            ),
        )

    return action


def update_customer(customer_id: str, pin: str | None, accounts: Sequence[CustomerAccount] | None) -> Action:
    """Correct a registered customer (R-002-31: later add, delete, change): a new PIN, or its accounts
    replaced by ``accounts`` — validated as at registration, so a bad record can be mended."""
    if pin is not None and len(pin) < 4:
        raise ValueError("a PIN has at least four characters")
    if pin is None and accounts is None:
        raise ValueError("nothing to change: give --pin or --account")

    async def action(ctx: Context) -> None:
        if await repo.customer(ctx.connection, customer_id) is None:
            raise ValueError(f"no customer {customer_id}")
        if accounts is not None:
            _refuse_problems(customer_id, accounts)
            await repo.replace_accounts(ctx.connection, customer_id, accounts)
        if pin is not None:
            await repo.set_pin(ctx.connection, customer_id, *hash_pin(pin))

    return action


def _refuse_problems(customer_id: str, accounts: Sequence[CustomerAccount]) -> None:
    problems = record_problems(customer_id, accounts)
    if problems:
        raise ValueError("; ".join(problems))


def set_reference_price(issue_code: str, reference: Decimal) -> Action:
    async def action(ctx: Context) -> None:
        await repo.set_price(ctx.connection, issue_code, reference)

    return action


def set_fee_schedule(schedule: FeeSchedule, policy: AllowancePolicy) -> Action:
    async def action(ctx: Context) -> None:
        await ctx.connection.execute(
            """INSERT INTO fee_schedule (bands, above_rate, consumption_tax_rate, intermediary_share, allowance_factor,
                   regular_share) VALUES ($1::jsonb, $2, $3, $4, $5, $6)
               ON CONFLICT (singleton) DO UPDATE SET bands = excluded.bands, above_rate = excluded.above_rate,
                   consumption_tax_rate = excluded.consumption_tax_rate,
                   intermediary_share = excluded.intermediary_share,
                   allowance_factor = excluded.allowance_factor, regular_share = excluded.regular_share""",
            json.dumps([[str(a), str(b)] for a, b in schedule.bands]),
            schedule.above_rate,
            schedule.consumption_tax_rate,
            schedule.intermediary_share,
            policy.factor,
            policy.regular_share,
        )

    return action


def add_accounts(customer_id: str, accounts: Sequence[CustomerAccount]) -> Action:
    """More available accounts for a registered customer (R-002-31: later add, delete, change)."""
    _check_accounts(customer_id, accounts)

    async def action(ctx: Context) -> None:
        if await repo.customer(ctx.connection, customer_id) is None:
            raise ValueError(f"no customer {customer_id}")
        _refuse_problems(customer_id, accounts)
        await repo.add_accounts(ctx.connection, customer_id, accounts)

    return action


def _check_accounts(customer_id: str, accounts: Sequence[CustomerAccount]) -> None:
    """Refuse operator input that no message could carry, before anything is opened (issues 10, 13)."""
    _refuse_problems(customer_id, accounts)
