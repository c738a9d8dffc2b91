"""Cover before a buy order trades (issue 11, docs/dvp.md; R-001-23, seed 002 §9.6).

A buy order that passed every acceptance check waits in ``pending_orders`` while settlement
holds its worst case — quantity × limit, or × the day's upper price limit for a market order —
on the buyer's own account. Only a grant books it; a refusal rejects it with settlement's
reason, and nothing else moved. The exchange asks rather than decides because settlement owns
the ledger and is the only place that sees every debit.
"""

from __future__ import annotations

import dataclasses
import uuid
from decimal import Decimal

import asyncpg

from agents.exchange import acceptance, read_ahead, standing, trading
from agents.exchange.acceptance import Instrument
from broker import logs
from broker.context import Context
from schemas.dvp import CoverGranted, CoverRefusal, CoverRefused, CoverRelease, CoverRequest
from schemas.identity import SETTLEMENT_ID, Participant
from schemas.trading import OrderRefusal, OrderType, SubmitOrder

log = logs.get("kabuto.exchange")

_REFUSALS = {
    CoverRefusal.UNKNOWN_ACCOUNT: OrderRefusal.UNKNOWN_ACCOUNT,
    CoverRefusal.ACCOUNT_NOT_OWNED: OrderRefusal.ACCOUNT_NOT_OWNED,
    CoverRefusal.INSUFFICIENT_FUNDS: OrderRefusal.INSUFFICIENT_FUNDS,
    CoverRefusal.CURRENCY_MISMATCH: OrderRefusal.CURRENCY_MISMATCH,
    CoverRefusal.DUPLICATE_COVER: OrderRefusal.DUPLICATE_CLIENT_ORDER_ID,
    CoverRefusal.SEALED_FIELD_INVALID: OrderRefusal.SEALED_FIELD_INVALID,
}


def worst_price(request: SubmitOrder, instrument: Instrument) -> Decimal:
    """The most a share of this buy order can cost: its limit, or the day's upper price limit."""
    if request.terms.order_type is OrderType.LIMIT:
        assert request.terms.price is not None
        return request.terms.price
    return instrument.market_limit(request.terms.side)


async def ask_cover(
    ctx: Context, request: SubmitOrder, instrument: Instrument, sender: Participant, digest: str
) -> None:
    cover_id = uuid.uuid4()
    unit = worst_price(request, instrument)
    await ctx.connection.execute(
        """INSERT INTO pending_orders (cover_id, user_id, client_order_id, request, participant, request_hash, status)
           VALUES ($1, $2, $3, $4, $5, $6, 'awaiting_cover')""",
        cover_id,
        request.user_id,
        request.client_order_id,
        request.model_dump_json(),
        sender.model_dump_json(),
        digest,
    )
    ctx.emit(
        CoverRequest(
            cover_id=cover_id,
            user_id=request.user_id,
            account=request.settlement_account,
            client_order_id=request.client_order_id,
            quantity=request.terms.quantity,
            unit_price=unit,
            amount=unit * request.terms.quantity,
        ),
        to=SETTLEMENT_ID,
    )
    log.info("cover_requested", cover_id=str(cover_id), client_order_id=request.client_order_id)


async def _take(
    connection: asyncpg.Connection, cover_id: uuid.UUID, status: str, reason: str | None = None
) -> tuple[SubmitOrder, Participant, str] | None:
    """The waiting order, now decided; None if there is none or it was decided already."""
    row = await connection.fetchrow(
        """UPDATE pending_orders SET status = $2, reason = $3
           WHERE cover_id = $1 AND status = 'awaiting_cover' RETURNING request, participant, request_hash""",
        cover_id,
        status,
        reason,
    )
    if row is None:
        return None
    return (
        SubmitOrder.model_validate_json(row["request"]),
        Participant.model_validate_json(row["participant"]),
        row["request_hash"],
    )


async def on_granted(answer: CoverGranted, ctx: Context) -> None:
    """The cover is held: check the order again (the book may have moved) and book it."""
    taken = await _take(ctx.connection, answer.cover_id, "booked")
    if taken is None:
        if not await standing.on_granted(answer, ctx):
            log.warning("cover_grant_ignored", cover_id=str(answer.cover_id))
        return
    request, sender, digest = taken
    key = dataclasses.replace(read_ahead.view_key(request), booking=True, account_box=None)
    read = await read_ahead.view_alone(ctx.connection, key)
    try:
        certificate = trading.checked(ctx, request, sender, read)
    except acceptance.Refused as refused:
        trading.reject(ctx, request.user_id, request.client_order_id, refused.refusal, digest)
        ctx.emit(CoverRelease(cover_id=answer.cover_id), to=SETTLEMENT_ID)
        return
    assert read.acceptance_number is not None  # drawn for a listed issue and a new client order id
    assert read.instrument is not None  # the checks refuse an unlisted issue
    await trading.book(ctx, request, read.instrument, certificate, digest, read.acceptance_number, answer.cover_id)


async def on_refused(answer: CoverRefused, ctx: Context) -> None:
    taken = await _take(ctx.connection, answer.cover_id, "refused", answer.reason.value)
    if taken is None:
        await standing.on_refused(answer, ctx)
        return
    request, _, digest = taken
    refusal = acceptance.Refusal(_REFUSALS[answer.reason], answer.detail)
    trading.reject(ctx, request.user_id, request.client_order_id, refusal, digest)
