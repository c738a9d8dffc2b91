"""Writing a movement into custody's books: the position's new sub-balances, the client's next
journal entry (what holdings deltas read) and the event for integrators, together."""

from __future__ import annotations

from agents.custody import events, repo
from agents.custody.domain import Account, Balances
from broker.context import Context
from schemas.custody import HoldingDelta


async def apply(
    ctx: Context, account: Account, issue: str, after: Balances, cause: str, reference: object
) -> HoldingDelta:
    delta = await repo.save_position(ctx.connection, account, issue, after, cause, str(reference), ctx.now)
    events.position_changed(ctx, account.client, delta)
    return delta
