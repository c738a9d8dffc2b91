"""Standing covers for hosted investors (issue 8; docs/dvp.md, "Standing cover"; R-001-23).

An investor sets cash aside once on a settlement account; while the cover is active, every buy
order on that account draws its worst case on it at the exchange and is booked in the hop that
receives it, with no per-order cover request. The exchange recognises such an order only by its
account box, byte for byte, so the agent seals the account once when it opens the cover, keeps
the box, and ``trading.place_order`` sends that box with the buy orders on the account.
Commands sign and send; handlers record what the exchange answers.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from uuid import UUID

from agents.investor import standing_repo
from agents.investor.domain import CoverStatus, after_refusal
from agents.investor.trading import Command, OrderError
from broker import logs
from broker.consumer import Handler
from broker.context import Context
from broker.errors import Reason, SecurityRejected
from broker.sealed_box import seal_account
from schemas.catalogue import Message
from schemas.dvp import (
    CloseStandingCover,
    OpenStandingCover,
    StandingCoverClosed,
    StandingCoverOpened,
    StandingCoverRefused,
)
from schemas.identity import EXCHANGE_ID

log = logs.get("kabuto.investor")


def open_standing_cover(account: str, amount: Decimal) -> Command:
    """Ask settlement, through the exchange, to hold ``amount`` on ``account`` for buy orders;
    returns the cover id. Refused here if the account has a live cover already."""

    async def action(ctx: Context) -> UUID:
        user = ctx.identity.user_id
        if amount <= 0:
            raise OrderError(f"a standing cover holds a positive amount, not {amount}")
        if (live := await standing_repo.live(ctx.connection, user, account)) is not None:
            raise OrderError(f"{account} has a standing cover already: {live.cover_id} is {live.status}")
        request = OpenStandingCover(
            cover_id=uuid.uuid4(),
            user_id=user,
            account=seal_account(ctx.trust, user, account),  # R-001-06; the box its buy orders carry
            amount=amount,
        )
        sealed = ctx.emit(request, to=EXCHANGE_ID)
        if not await standing_repo.request(ctx.connection, request, account, sealed.envelope.message_id):
            # Another command opened one meanwhile; the message leaves only if this commits.
            raise OrderError(f"{account} has a standing cover already")
        return request.cover_id

    return action


def close_standing_cover(cover_id: UUID) -> Command:
    """Stop drawing on an active cover; ``standing_cover.closed`` comes once no order drawn on it
    is live (resting orders keep it until they end). Returns the close message's id."""

    async def action(ctx: Context) -> UUID:
        user = ctx.identity.user_id
        cover = await standing_repo.find(ctx.connection, user, cover_id)
        if cover is None:
            raise OrderError(f"no standing cover {cover_id} of {user}")
        if cover.status is not CoverStatus.ACTIVE:
            raise OrderError(f"standing cover {cover_id} is {cover.status}; only an active one can be closed")
        sealed = ctx.emit(CloseStandingCover(cover_id=cover_id), to=EXCHANGE_ID)
        await standing_repo.move(ctx.connection, user, cover_id, CoverStatus.CLOSING, was=CoverStatus.ACTIVE)
        return sealed.envelope.message_id

    return action


# --- handlers -----------------------------------------------------------------------------


def _unsolicited(message: Message, ctx: Context, cover_id: UUID) -> SecurityRejected:
    kind = type(message).spec.type
    return SecurityRejected(Reason.UNSOLICITED, f"{kind}: no such standing cover {cover_id} of {ctx.identity.user_id}")


async def on_opened(answer: StandingCoverOpened, ctx: Context) -> None:
    """Settlement holds the amount: buy orders on the account carry the cover's box from now."""
    user, requested = ctx.identity.user_id, CoverStatus.REQUESTED
    moved = await standing_repo.move(ctx.connection, user, answer.cover_id, CoverStatus.ACTIVE, was=requested)
    if not moved:
        raise _unsolicited(answer, ctx, answer.cover_id)
    log.info("standing_cover_opened", cover_id=str(answer.cover_id), amount=str(answer.amount))


async def on_refused(answer: StandingCoverRefused, ctx: Context) -> None:
    user = ctx.identity.user_id
    cover = await standing_repo.find(ctx.connection, user, answer.cover_id)
    status = after_refusal(cover.status, answer.reason) if cover is not None else None
    if cover is None or status is None:
        raise _unsolicited(answer, ctx, answer.cover_id)
    await standing_repo.move(
        ctx.connection, user, cover.cover_id, status, was=cover.status, reason=answer.reason.value, detail=answer.detail
    )
    if cover.status is CoverStatus.REQUESTED:
        log.info("standing_cover_refused", cover_id=str(cover.cover_id), reason=answer.reason.value)
    else:  # this agent closes only active covers, once: the exchange's record differs from ours
        log.warning(
            "standing_cover_close_refused",
            cover_id=str(cover.cover_id),
            reason=answer.reason.value,
            detail=answer.detail,
            status=status.value,
        )


async def on_closed(answer: StandingCoverClosed, ctx: Context) -> None:
    """Released: settlement freed what was not spent."""
    user = ctx.identity.user_id
    moved = await standing_repo.move(
        ctx.connection, user, answer.cover_id, CoverStatus.CLOSED, was=CoverStatus.CLOSING, spent=answer.spent
    )
    if not moved:
        raise _unsolicited(answer, ctx, answer.cover_id)
    log.info("standing_cover_closed", cover_id=str(answer.cover_id), spent=str(answer.spent))


HANDLERS: dict[type[Message], Handler] = {
    StandingCoverOpened: on_opened,
    StandingCoverRefused: on_refused,
    StandingCoverClosed: on_closed,
}
