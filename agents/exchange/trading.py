"""The exchange's trading handlers (seed 001 Phase 2): accept, match, transfer, complete.

Each handler loads the issue's book from its open orders, decides in the pure book and
acceptance modules, saves what changed and emits the results, in one transaction.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from decimal import Decimal
from uuid import UUID

from agents.exchange import acceptance, covering, order_repo, prices, resubmission, settling, standing
from agents.exchange.acceptance import Refused
from agents.exchange.book import Execution, Order, OrderBook, Result
from agents.exchange.order_repo import OrderRecord
from agents.exchange.read_ahead import READ_AHEAD, Booked
from broker import clear_accounts, logs
from broker.consumer import Handler
from broker.context import Context
from broker.stock_certificates import content_of
from schemas.catalogue import Message
from schemas.certificates import ElectronicStockCertificate
from schemas.dvp import CloseStandingCover, CoverGranted, CoverRefused, InstructionStatus, OpenStandingCover
from schemas.identity import Participant
from schemas.money import plain
from schemas.trading import (
    CancelOrder,
    CancelReason,
    CertificateRelease,
    ExecutionReversed,
    OrderAccepted,
    OrderCancelled,
    OrderExecuted,
    OrderRefusal,
    OrderRejected,
    OrderState,
    OrderStatus,
    OrderStatusRequest,
    OrderType,
    RejectedRequest,
    ReplaceOrder,
    Side,
    SubmitOrder,
    SubmitOrderV1,
    TimeInForce,
    TradeExecuted,
)

log = logs.get("kabuto.exchange")


def _request_hash(ctx: Context) -> str:
    assert ctx.digest is not None
    return ctx.digest


def _reject(
    ctx: Context, client_order_id: str, refusal: acceptance.Refusal, request: RejectedRequest = RejectedRequest.ORDER
) -> None:
    assert ctx.sender is not None
    reject(ctx, ctx.sender.user_id, client_order_id, refusal, _request_hash(ctx), request)


def reject(
    ctx: Context,
    to: str,
    client_order_id: str,
    refusal: acceptance.Refusal,
    request_hash: str,
    request: RejectedRequest = RejectedRequest.ORDER,
) -> None:
    log.info("order_rejected", reason=refusal.reason.value, detail=refusal.detail, request=request.value)
    ctx.emit(
        OrderRejected(
            client_order_id=client_order_id,
            request=request,
            reason=refusal.reason,
            detail=refusal.detail,
            request_hash=request_hash,
        ),
        to=to,
    )


def checked(
    ctx: Context, request: SubmitOrder, sender: Participant, view: order_repo.AcceptanceView
) -> ElectronicStockCertificate | None:
    """S71–S88: every acceptance check, in the seed's order; ``Refused`` says which failed.

    Returns the verified certificate of a sell order.
    """
    return acceptance.check(request, sender, view.instrument, view.books, ctx.trust, ctx.now)


async def on_submit(request: SubmitOrder, ctx: Context) -> None:
    """S71–S88 then S91–S95: check; a buy order draws on its standing cover or waits for a cover
    of its own (issue 11, docs/dvp.md); a sell order is accepted with an OAN and matched at once."""
    assert ctx.sender is not None
    buy = request.terms.side is Side.BUY
    # a sell order's number is drawn with its view; a buy order is booked once its cover is
    # held: now, if a standing cover has room for it (read_ahead.view_key)
    read = await READ_AHEAD.view(ctx.connection, request)
    if resubmission.answered(ctx, request, read.existing):
        return
    try:
        if read.pending:
            raise Refused(OrderRefusal.DUPLICATE_CLIENT_ORDER_ID, f"{request.client_order_id} was used")
        certificate = checked(ctx, request, ctx.sender, read)
    except Refused as refused:
        _reject(ctx, request.client_order_id, refused.refusal)
        return
    assert read.instrument is not None  # the checks refuse an unlisted issue
    if buy:
        unit = covering.worst_price(request, read.instrument)
        if read.standing is None or not read.standing.draws(unit * request.terms.quantity):
            await covering.ask_cover(ctx, request, read.instrument, ctx.sender, _request_hash(ctx))
            return
        assert read.acceptance_number is not None  # drawn for a listed issue with a standing cover
        digest = _request_hash(ctx)
        number, cover_id = read.acceptance_number, read.standing.cover_id
        await book(ctx, request, read.instrument, None, digest, number, cover_id, cover_unit=unit)
        return
    assert read.acceptance_number is not None  # drawn for a listed issue and a new client order id
    await book(ctx, request, read.instrument, certificate, _request_hash(ctx), read.acceptance_number)


async def on_submit_v1(request: SubmitOrderV1, ctx: Context) -> None:
    """Before the cut-over an order may still carry its account in clear: sealed at once (R-001-06)."""
    await on_submit(clear_accounts.sealed_order(ctx.trust, request), ctx)


async def book(
    ctx: Context,
    request: SubmitOrder,
    instrument: acceptance.Instrument,
    certificate: ElectronicStockCertificate | None,
    request_hash: str,
    acceptance_number: int,
    cover_id: UUID | None = None,
    *,
    cover_unit: Decimal | None = None,
) -> None:
    """S91–S95: the acceptance number (drawn with the checks' read), the book, the matches.
    ``cover_unit``: the worst price per share drawn on the standing cover ``cover_id``."""
    conn = ctx.connection
    book = await order_repo.load_book(conn, request.issue_code, request.safekeeping_account is not None)
    terms = request.terms
    order = Order(
        acceptance_number=acceptance_number,
        client_order_id=request.client_order_id,
        user_id=request.user_id,
        side=terms.side,
        order_type=terms.order_type,
        price=plain(terms.price),
        quantity=terms.quantity,
        remaining=terms.quantity,
        time_in_force=terms.time_in_force,
        cert_id=certificate.cert_id if certificate else None,
        bound=instrument.market_limit(terms.side) if terms.order_type is OrderType.MARKET else None,
    )
    result = book.submit(order)
    if result.executions or result.touched or result.cancel_reason is not None:  # not its own rows alone
        READ_AHEAD.traded(order, result.touched)
    READ_AHEAD.booked(Booked(order, result.cancelled_quantity, cover_id, cover_unit))
    log.info("order_accepted", acceptance_number=order.acceptance_number, side=order.side.value)
    ctx.emit(
        OrderAccepted(
            client_order_id=order.client_order_id,
            acceptance_number=order.acceptance_number,
            request_hash=request_hash,
        ),
        to=order.user_id,
    )

    # In a batch, written with its other orders (one statement), and told then (order_repo.write_held).
    await order_repo.insert_order(
        conn,
        order,
        request,
        request_hash,
        resubmission.payload_digest(request),
        cover_id,
        result.cancel_reason,
        cover_unit=cover_unit,
        touched=result.touched,
        executions=result.executions,
        then=_telling(ctx, request.issue_code, order, result),
    )


def _telling(ctx: Context, issue_code: str, incoming: Order, result: Result) -> order_repo.Then | None:
    """What is left to tell of a submission once its executions are entered (``_apply``), as its
    tail: none for an order that rested whole. The orders are copied as this submission left
    them: in a batch the tail runs once the held statement has, by when a later order of the
    batch may have traded the same orders (found by review: the executions told their
    remainders then). Its log lines name this order's message, whenever they are written."""
    if not result.executions and result.cancel_reason is None:
        return None
    bound = logs.binding()
    left = dataclasses.replace(incoming)
    told = dataclasses.replace(result, touched=[dataclasses.replace(order) for order in result.touched])

    async def tell(matched: order_repo.Matched) -> None:
        with logs.rebound(bound):
            await _apply(ctx, issue_code, left, told, matched)

    return tell


async def _apply(
    ctx: Context, issue_code: str, incoming: Order, result: Result, matched: order_repo.Matched | None = None
) -> None:
    """Tell everyone concerned what a submission did. The caller wrote the incoming order, with
    the resting orders it touched, in one statement: ``order_repo.save``, or ``insert_order``,
    which entered its executions too (``matched``); else they are entered here, in one. A sell
    order an earlier order of the same statement traded with was instructed by that order
    (``Matched.instructed``)."""
    orders = {o.acceptance_number: o for o in (incoming, *result.touched)}
    if matched is None:
        sold = (orders[e.sell].cert_id for e in result.executions)
        matched = await order_repo.insert_matches(ctx.connection, issue_code, result.executions, sold)
    for execution, matching_number in zip(result.executions, matched.matching_numbers, strict=True):
        await _executed(ctx, issue_code, execution, matching_number, orders)
    # Each sell order's instruction view as the executions' statement left it.
    views = dict(matched.views)
    # Fills first, then the cancelled rest: a client reading in order never sees an order end before its fills.
    if result.cancel_reason is not None:
        await _cancelled(ctx, incoming, result.cancelled_quantity, result.cancel_reason)
        views.clear()  # the cancel wrote an order those views read: each is read again
    for sell in sorted({e.sell for e in result.executions} - matched.instructed):
        await settling.instruct_next(ctx, sell, read=views.get(sell))


async def _executed(
    ctx: Context, issue_code: str, execution: Execution, matching_number: int, orders: dict[int, Order]
) -> None:
    """S92–S94 told: the execution, entered in the matching list under ``matching_number``, to
    its buyer and seller, and the trade and its price to the market."""
    await prices.announce_trade(ctx, issue_code, execution.price)
    log.info("order_matched", matching_number=matching_number, price=str(execution.price), qty=execution.quantity)
    for order in (orders[execution.buy], orders[execution.sell]):
        ctx.emit(
            OrderExecuted(
                client_order_id=order.client_order_id,
                acceptance_number=order.acceptance_number,
                matching_number=matching_number,
                side=order.side,
                issue_code=issue_code,
                price=execution.price,
                quantity=execution.quantity,
                remaining_quantity=order.remaining,
            ),
            to=order.user_id,
        )
    ctx.emit(
        TradeExecuted(
            matching_number=matching_number,
            issue_code=issue_code,
            price=execution.price,
            quantity=execution.quantity,
            amount=execution.price * execution.quantity,
        )
    )


async def restore_buy(ctx: Context, book: OrderBook, match: order_repo.Match, detail: str) -> None:
    """S131: the buy order returns to the unexecuted-order queue, matching again if it can."""
    record = await order_repo.order(ctx.connection, match.buy_order)
    assert record is not None
    order = book.cancel(record.order.acceptance_number) or record.order
    can_rest = order.order_type is OrderType.LIMIT and order.time_in_force in (
        TimeInForce.DAY,
        TimeInForce.GTC,
    )
    order.remaining += match.shares if can_rest else 0
    ctx.emit(
        ExecutionReversed(
            client_order_id=order.client_order_id,
            acceptance_number=order.acceptance_number,
            matching_number=match.matching_number,
            quantity=match.shares,
            remaining_quantity=order.remaining,
            detail=detail if can_rest else f"{detail}; a {order.time_in_force.value} order does not rest",
        ),
        to=order.user_id,
    )
    if order.remaining:
        result = book.submit(order)
        await order_repo.save(ctx.connection, match.issue_code, order, result.cancel_reason, result.touched)
        await _apply(ctx, match.issue_code, order, result)
    else:
        await order_repo.save(ctx.connection, match.issue_code, order, CancelReason.CERTIFICATE_INVALID)


async def cancel(ctx: Context, record: OrderRecord, reason: CancelReason, detail: str = "") -> None:
    order = record.order
    cancelled = order.remaining
    order.remaining = 0
    await order_repo.save(ctx.connection, record.issue_code, order, reason)
    await _cancelled(ctx, order, cancelled, reason, detail)


async def _cancelled(ctx: Context, order: Order, quantity: int, reason: CancelReason, detail: str = "") -> None:
    """Tell the owner its order (or what was left of it) is off the book; free a closed sell order's remainder."""
    ctx.emit(
        OrderCancelled(
            client_order_id=order.client_order_id,
            acceptance_number=order.acceptance_number,
            cancelled_quantity=quantity,
            reason=reason,
            detail=detail,
        ),
        to=order.user_id,
    )
    if order.side is Side.SELL:
        await release_if_done(ctx, order.acceptance_number)
    else:
        await settling.release_cover_if_done(ctx, order.acceptance_number)


async def release_if_done(ctx: Context, sell_order: int) -> None:
    """A closed sell order with no transfer left frees a remainder committed to it at the issuer."""
    record = await order_repo.order(ctx.connection, sell_order)
    if record is None or record.status == "open":
        return
    release_when_done(ctx, record, await order_repo.unfinished_matches(ctx.connection, sell_order))


def release_when_done(ctx: Context, record: OrderRecord | None, unfinished: Sequence[order_repo.Match]) -> None:
    """``release_if_done`` on what the caller read: the sell order and its unfinished executions."""
    if record is None or record.status == "open" or unfinished:
        return
    if record.certificate is None:  # a book-entry order: nothing is committed at the issuer
        return
    issuer = content_of(record.certificate).issuing_agent_id
    ctx.emit(
        CertificateRelease(seller_order=record.order.acceptance_number, seller_user_id=record.order.user_id), to=issuer
    )


async def on_cancel(request: CancelOrder, ctx: Context) -> None:
    assert ctx.sender is not None
    record = await order_repo.order_by_client_id(ctx.connection, ctx.sender.user_id, request.client_order_id)
    refusal = _open_order_refusal(record, request.client_order_id)
    if refusal is not None or record is None:
        refusal = refusal or acceptance.Refusal(OrderRefusal.UNKNOWN_ORDER, "")
        _reject(ctx, request.client_order_id, refusal, RejectedRequest.CANCEL)
        return
    book = await order_repo.load_book(ctx.connection, record.issue_code, record.safekeeping_account is not None)
    book.cancel(record.order.acceptance_number)
    await cancel(ctx, record, CancelReason.REQUESTED)


def _open_order_refusal(record: OrderRecord | None, client_order_id: str) -> acceptance.Refusal | None:
    if record is None:
        return acceptance.Refusal(OrderRefusal.UNKNOWN_ORDER, f"no order {client_order_id} of yours")
    if record.status != "open":
        return acceptance.Refusal(OrderRefusal.ORDER_NOT_OPEN, f"order {client_order_id} is {record.status}")
    return None


async def on_replace(request: ReplaceOrder, ctx: Context) -> None:
    """Cancel-replace: lowering only the quantity keeps priority; anything else is a new order."""
    assert ctx.sender is not None
    conn = ctx.connection
    user = ctx.sender.user_id
    record = await order_repo.order_by_client_id(conn, user, request.client_order_id)
    refusal = _open_order_refusal(record, request.client_order_id)
    if refusal is None and await order_repo.client_order_used(conn, user, request.new_client_order_id):
        refusal = acceptance.Refusal(OrderRefusal.DUPLICATE_CLIENT_ORDER_ID, f"{request.new_client_order_id} was used")
    if refusal is None and record is not None:
        instrument = await order_repo.instrument(conn, record.issue_code)
        assert instrument is not None
        refusal = acceptance.replace_refusal(
            record.order, request, instrument, ctx.sender, await order_repo.open_buy_exposure(conn, user)
        )
    if refusal is not None or record is None:
        refusal = refusal or acceptance.Refusal(OrderRefusal.UNKNOWN_ORDER, "")
        _reject(ctx, request.new_client_order_id, refusal, RejectedRequest.REPLACE)
        return
    book = await order_repo.load_book(conn, record.issue_code, record.safekeeping_account is not None)
    old = record.order
    if request.price == old.price and request.quantity <= old.remaining:
        reduced = book.reduce(old.acceptance_number, request.quantity)
        reduced.client_order_id = request.new_client_order_id
        await order_repo.save(conn, record.issue_code, reduced)
        ctx.emit(
            OrderAccepted(
                client_order_id=reduced.client_order_id,
                acceptance_number=old.acceptance_number,
                request_hash=_request_hash(ctx),
            ),
            to=user,
        )
        return
    book.cancel(old.acceptance_number)
    old.remaining, replaced = 0, old.remaining
    await order_repo.save(conn, record.issue_code, old, CancelReason.REPLACED)
    # Not _cancelled: the replacement inherits the certificate, so nothing is released.
    ctx.emit(
        OrderCancelled(
            client_order_id=request.client_order_id,
            acceptance_number=old.acceptance_number,
            cancelled_quantity=replaced,
            reason=CancelReason.REPLACED,
        ),
        to=user,
    )
    order = Order(
        acceptance_number=await order_repo.next_acceptance_number(conn),
        client_order_id=request.new_client_order_id,
        user_id=user,
        side=old.side,
        order_type=old.order_type,
        price=plain(request.price),
        quantity=request.quantity,
        remaining=request.quantity,
        time_in_force=old.time_in_force,
        cert_id=old.cert_id,
    )
    await order_repo.insert_replacement(conn, order, record, _request_hash(ctx))
    ctx.emit(
        OrderAccepted(
            client_order_id=order.client_order_id,
            acceptance_number=order.acceptance_number,
            request_hash=_request_hash(ctx),
        ),
        to=user,
    )
    result = book.submit(order)
    await order_repo.save(conn, record.issue_code, order, result.cancel_reason, result.touched)
    await _apply(ctx, record.issue_code, order, result)


async def on_status_request(request: OrderStatusRequest, ctx: Context) -> None:
    """R-001-27: the execution status of an order, by acceptance number, to its owner only."""
    assert ctx.sender is not None
    record = await order_repo.order(ctx.connection, request.acceptance_number)
    if record is None or record.order.user_id != ctx.sender.user_id:
        ctx.emit(OrderStatus(acceptance_number=request.acceptance_number, found=False), to=ctx.sender.user_id)
        return
    order = record.order
    fills = await order_repo.fills(ctx.connection, order.acceptance_number)
    ctx.emit(
        OrderStatus(
            acceptance_number=order.acceptance_number,
            found=True,
            client_order_id=order.client_order_id,
            issue_code=record.issue_code,
            side=order.side,
            state=OrderState(record.status),
            quantity=order.quantity,
            filled_quantity=sum(f.quantity for f in fills if f.status != "failed"),
            remaining_quantity=order.remaining if record.status == "open" else 0,
            fills=tuple(fills),
        ),
        to=ctx.sender.user_id,
    )


async def cancel_orders_backed_by(ctx: Context, cert_ids: Sequence[UUID]) -> None:
    """Live sell orders whose certificate the issuer retired are cancelled, and the seller told."""
    for record in await order_repo.open_sell_orders_backed_by(ctx.connection, list(cert_ids)):
        book = await order_repo.load_book(ctx.connection, record.issue_code)
        book.cancel(record.order.acceptance_number)
        await cancel(ctx, record, CancelReason.CERTIFICATE_INVALID, "the issuer retired the certificate's CertID")


async def end_of_day(ctx: Context) -> int:
    """A command: DAY orders still open at the close expire (returns how many); each issue
    closes and its reference price rolls to the close."""
    expired = await order_repo.open_day_orders(ctx.connection)
    for record in expired:
        await cancel(ctx, record, CancelReason.EXPIRED, "the trading day closed")
    await prices.close_day(ctx)
    return len(expired)


HANDLERS: dict[type[Message], Handler] = {
    SubmitOrder: on_submit,
    SubmitOrderV1: on_submit_v1,
    CancelOrder: on_cancel,
    ReplaceOrder: on_replace,
    OrderStatusRequest: on_status_request,
    CoverGranted: covering.on_granted,
    CoverRefused: covering.on_refused,
    OpenStandingCover: standing.on_open,
    CloseStandingCover: standing.on_close,
    InstructionStatus: settling.on_instruction_status,
}
