"""Standing covers at the exchange (issue 8; docs/dvp.md, "Standing cover").

Cash a buyer sets aside once: settlement holds it, and each buy order sealed with the same
account box draws its worst case on it at acceptance, so the order is booked in the hop that
receives it. The exchange keeps the box unopened and compares it byte for byte; what a cover
has drawn is a running total of its orders and executions (``standing_repo``).
"""

from __future__ import annotations

import functools
from datetime import timedelta
from typing import TYPE_CHECKING
from uuid import UUID

from agents.exchange import standing_repo
from broker import logs
from broker.context import Context
from broker.progress import pause
from schemas.dvp import (
    CloseStandingCover,
    CoverGranted,
    CoverRefused,
    CoverRelease,
    OpenStandingCover,
    StandingCoverClosed,
    StandingCoverOpened,
    StandingCoverRefusal,
    StandingCoverRefused,
    StandingCoverRequest,
)
from schemas.identity import EXCHANGE_ID, SETTLEMENT_ID

if TYPE_CHECKING:
    from broker.runtime import AgentRuntime

log = logs.get("kabuto.exchange")


def _refuse(ctx: Context, to: str, cover_id: UUID, reason: StandingCoverRefusal, detail: str) -> None:
    log.info("standing_cover_refused", cover_id=str(cover_id), reason=reason.value)
    ctx.emit(StandingCoverRefused(cover_id=cover_id, reason=reason, detail=detail), to=to)


async def on_open(message: OpenStandingCover, ctx: Context) -> None:
    """Record the cover as requested and ask settlement to hold its amount."""
    assert ctx.sender is not None
    sender = ctx.sender.user_id
    if message.user_id != sender:
        _refuse(ctx, sender, message.cover_id, StandingCoverRefusal.USER_MISMATCH, f"signed by {sender}")
        return
    if await standing_repo.request(ctx.connection, message) is None:
        if await standing_repo.find(ctx.connection, message.cover_id) is not None:
            _refuse(ctx, sender, message.cover_id, StandingCoverRefusal.DUPLICATE_COVER, "cover id used")
        else:
            detail = "a standing cover with this account box is active or requested; close it first"
            _refuse(ctx, sender, message.cover_id, StandingCoverRefusal.STANDING_COVER_EXISTS, detail)
        return
    ctx.emit(
        StandingCoverRequest(
            cover_id=message.cover_id,
            user_id=message.user_id,
            account=message.account,
            amount=message.amount,
            currency=message.currency,
        ),
        to=SETTLEMENT_ID,
    )
    log.info("standing_cover_requested", cover_id=str(message.cover_id), amount=str(message.amount))


async def on_granted(answer: CoverGranted, ctx: Context) -> bool:
    """Settlement holds the amount: orders may draw. False if no standing cover waited for it."""
    cover = await standing_repo.decide(ctx.connection, answer.cover_id, "active")
    if cover is None:
        return False
    log.info("standing_cover_opened", cover_id=str(cover.cover_id), amount=str(cover.amount))
    ctx.emit(StandingCoverOpened(cover_id=cover.cover_id, amount=cover.amount), to=cover.user_id)
    return True


async def on_refused(answer: CoverRefused, ctx: Context) -> bool:
    cover = await standing_repo.decide(ctx.connection, answer.cover_id, "refused", answer.reason.value)
    if cover is None:
        return False
    _refuse(ctx, cover.user_id, cover.cover_id, StandingCoverRefusal(answer.reason.value), answer.detail)
    return True


async def on_close(message: CloseStandingCover, ctx: Context) -> None:
    """No new draws from now; released once nothing drawn on it is live."""
    assert ctx.sender is not None
    sender = ctx.sender.user_id
    cover = await standing_repo.find(ctx.connection, message.cover_id)
    if cover is None or cover.user_id != sender:
        _refuse(ctx, sender, message.cover_id, StandingCoverRefusal.UNKNOWN_COVER, f"no standing cover of {sender}")
        return
    if cover.status != "active":
        _refuse(ctx, sender, message.cover_id, StandingCoverRefusal.NOT_ACTIVE, f"the cover is {cover.status}")
        return
    await standing_repo.start_closing(ctx.connection, cover.cover_id, ctx.conversation)
    log.info("standing_cover_closing", cover_id=str(cover.cover_id))
    await close_if_done(ctx, cover.cover_id)


async def close_if_done(ctx: Context, cover_id: UUID) -> None:
    """Release a closing cover once no order drawn on it is open and no trade of one unsettled.

    Called wherever an order or a trade drawn on a cover ends, and by ``close_drained``: two
    transactions at once (the end of day expiring the last order while the consumer takes the
    close) can each decide on a snapshot without the other's write, and neither closes it
    (found by review); the job closes it within ``CLOSE_SWEEP_EVERY``, taking no lock on the
    hot path."""
    closed = await standing_repo.close_if_done(ctx.connection, cover_id)
    if closed is None:
        return
    ctx.emit(CoverRelease(cover_id=cover_id), to=SETTLEMENT_ID)
    ctx.emit(
        StandingCoverClosed(cover_id=cover_id, amount=closed.amount, spent=closed.spent),
        to=closed.user_id,
        conversation=closed.conversation,
    )
    log.info("standing_cover_closed", cover_id=str(cover_id), spent=str(closed.spent))


CLOSE_SWEEP_EVERY = timedelta(seconds=5)


async def close_drained(runtime: AgentRuntime) -> None:
    """A background job: every closing cover whose orders and trades have all ended is released
    (the path no handler saw: two transactions that each decided before the other committed)."""
    while True:
        await pause(CLOSE_SWEEP_EVERY.total_seconds())
        async with runtime.round_of(close_drained):
            for cover_id in await runtime.query(standing_repo.closing):
                await runtime.command(EXCHANGE_ID, functools.partial(close_if_done, cover_id=cover_id))
