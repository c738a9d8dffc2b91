"""Who may post on whose account (issue 11): an account owner's mandate to an agent.

The brokerage posts its customers' settlement legs; settlement accepts a leg on an account only
if the brokerage owns it or the owner gave the brokerage a mandate. A mandate is the owner's
consent, so only the owner (a signed ``settlement.mandate.grant``) or an operator recording the
owner's written consent creates one — never the agent that would use it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from agents.settlement import dvp_repo, repo
from agents.settlement.domain import Account, AccountKind, UnknownAccount
from broker import logs
from broker.context import Context
from schemas.dvp import DvpReason, GrantMandate, MandateRecorded, RevokeMandate

log = logs.get("kabuto.settlement")


def _refusal(account: Account | None, owner: str) -> DvpReason | None:
    if account is None or account.kind is AccountKind.EXTERNAL:
        return DvpReason.UNKNOWN_ACCOUNT
    if account.owner_user_id != owner:
        return DvpReason.ACCOUNT_NOT_OWNED
    return None


async def on_grant(request: GrantMandate, ctx: Context) -> None:
    await _change(request.account, request.agent, ctx, grant=True)


async def on_revoke(request: RevokeMandate, ctx: Context) -> None:
    await _change(request.account, request.agent, ctx, grant=False)


async def _change(account_id: str, agent: str, ctx: Context, *, grant: bool) -> None:
    assert ctx.sender is not None
    owner = ctx.sender.user_id
    refusal = _refusal(await repo.account(ctx.connection, account_id), owner)
    if refusal is None and grant:
        await dvp_repo.grant_mandate(ctx.connection, account_id, agent, owner)
    elif refusal is None:
        await dvp_repo.revoke_mandate(ctx.connection, account_id, agent)
    if refusal is None:
        log.info("mandate_changed", account=account_id, agent=agent, active=grant)
    active = grant and refusal is None
    ctx.emit(MandateRecorded(account=account_id, agent=agent, active=active, refused=refusal), to=owner)


def grant(account_id: str, agent: str) -> Callable[[Context], Awaitable[None]]:
    """A command: an operator records the owner's written consent that ``agent`` may post on the account."""

    async def action(ctx: Context) -> None:
        account = await repo.account(ctx.connection, account_id)
        if account is None or account.kind is AccountKind.EXTERNAL:
            raise UnknownAccount(f"no account {account_id}")
        await dvp_repo.grant_mandate(ctx.connection, account_id, agent, f"operator for {account.owner_user_id}")
        log.info("mandate_granted_by_operator", account=account_id, agent=agent)

    return action


async def refusal_for_postings(ctx: Context, agent: str, accounts: dict[str, Account]) -> tuple[str, str] | None:
    """Every account a posting touches is the agent's own, an institution's, or mandated to it."""
    others = [a.account_id for a in accounts.values() if a.kind is AccountKind.CUSTOMER and a.owner_user_id != agent]
    allowed = await dvp_repo.mandated(ctx.connection, agent, others)
    for account_id in others:
        if account_id not in allowed:
            return DvpReason.NOT_MANDATED.value, f"{agent} has no mandate to post on {account_id}"
    return None
