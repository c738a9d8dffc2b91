"""An intermediation contract with a securities company, opened in both books it lives in
(seed 002 §8, issue 10): the brokerage's contract and the settlement ledger's accounts.

The brokerage may not write settlement's tables, so this is composition, like the CLI and the
demo: it acts as the settlement agent to open the company's accounts (idempotently: a rerun
opens only what is missing), then as the brokerage to record the contract.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from decimal import Decimal

from pydantic import TypeAdapter, ValidationError

from agents.brokerage import operators
from agents.brokerage import repo as brokerage_repo
from agents.brokerage.ledger_legs import CompanyAccounts, Design
from agents.settlement import app as ledger
from agents.settlement import repo as settlement_repo
from broker.context import Context
from broker.runtime import run_as
from broker.settings import Settings
from schemas.brokerage import CompanyId

_COMPANY_ID = TypeAdapter(CompanyId)


async def open_contract(
    settings: Settings, company_id: str, name: str, design: Design, capital: Decimal | None = None
) -> CompanyAccounts:
    """Open the company's settlement accounts (and fund its clearing account), then the contract."""
    try:
        _COMPANY_ID.validate_python(company_id)
    except ValidationError as exc:
        raise ValueError(f"company id {company_id!r} is malformed: lower-case letters, digits and - only") from exc
    if capital is not None and capital <= 0:
        raise ValueError("--capital must be positive")
    if await run_as(settings, "brokerage", "brokerage", lambda ctx: brokerage_repo.company(ctx.connection, company_id)):
        raise ValueError(f"the brokerage already has a contract with {company_id}")
    accounts = operators.company_accounts(company_id)
    await run_as(settings, "settlement", "settlement", ledger_accounts(company_id, accounts, capital))
    await run_as(settings, "brokerage", "brokerage", operators.add_company(company_id, name, design))
    return accounts


def ledger_accounts(
    company_id: str, accounts: CompanyAccounts, capital: Decimal | None
) -> Callable[[Context], Awaitable[None]]:
    async def action(ctx: Context) -> None:
        if await settlement_repo.account(ctx.connection, accounts.clearing) is None:
            await ledger.open_account(accounts.clearing, "brokerage", institution=company_id)(ctx)
        for account in (accounts.commission, accounts.tax, accounts.im_account_at_sc, accounts.sc_account_at_im):
            await ledger.open_institution_account_once(account, company_id)(ctx)
        for account in (accounts.im_cash, accounts.im_fees):
            await ledger.open_institution_account_once(account, "intermediary")(ctx)
        if capital is not None:
            await ledger.deposit(accounts.clearing, capital, f"capital-{company_id}")(ctx)

    return action
