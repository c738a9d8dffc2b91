"""The exchange's side of delivery versus payment (issue 11, docs/dvp.md; seed 001 S95–S132).

On every match the exchange instructs settlement — both parties, the cash, and the securities
leg: the seller's certificate countersigned for ``omn:<matching number>``. Executions of one
sell order are instructed one at a time, since each name transfer leaves the remainder under a
new CertID. Settlement answers with the instruction's status; only ``settled`` (both legs done)
completes the trade (37 to buyer and seller); a certificate that will never deliver undoes the
execution as S131 says; any other failure reverses it and both orders keep what they had.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from agents.exchange import book_entry, instructions, order_repo, repo, report_repo, reporting, standing, trading
from broker import logs
from broker.context import Context
from broker.set_based import SetBased
from broker.stock_certificates import content_of, endorse, verify_certificate
from schemas.certificates import EndorsedCertificate
from schemas.dvp import (
    BookEntryDelivery,
    CertificateDelivery,
    CertificateLeg,
    CoverRelease,
    DvpReason,
    InstructionStatus,
    ProcessingStatus,
    SettlementStatus,
    StatusFields,
)
from schemas.identity import SETTLEMENT_ID
from schemas.trading import CancelReason, ExecutionReversed, TradeCompleted

log = logs.get("kabuto.exchange")
# The seller's certificate will never deliver: S131 applies.
_CERTIFICATE_DEAD = {DvpReason.SECURITIES_INVALID, DvpReason.LACK_OF_SECURITIES}


async def instruct_next(
    ctx: Context,
    sell_order: int,
    unfinished: list[order_repo.Match] | None = None,
    read: order_repo.InstructionView | None = None,
) -> None:
    """S95: instruct the sell order's next execution, its certificate countersigned for it.
    ``unfinished``: the sell order's unfinished executions, if the caller read them already;
    ``read``: its whole instruction view, if the caller read that (``order_repo.insert_matches``)."""
    conn = ctx.connection
    records: dict[int, order_repo.OrderRecord] | None = None
    if read is None and unfinished is None:  # the executions and their orders in one round trip
        read = await order_repo.instruction_view(conn, sell_order)
    if read is not None:
        unfinished, records = read.unfinished, read.orders
    assert unfinished is not None
    match = order_repo.next_transfer(unfinished)
    if match is None:
        return
    if records is None:
        records = await order_repo.orders(conn, (sell_order, match.buy_order))
    sell, buy = records[sell_order], records[match.buy_order]
    if sell.safekeeping_account is not None:
        await book_entry.instruct(ctx, match, sell, buy)
        return
    assert sell.certificate is not None and sell.order.cert_id
    certificate = content_of(sell.certificate)
    endorsed = endorse(ctx.identity, sell.certificate, "name_transfer", f"omn:{match.matching_number}")
    leg = CertificateLeg(
        agent=certificate.issuing_agent_id,
        exchange_id=ctx.identity.user_id,
        cert_id=sell.order.cert_id,
        share_class=certificate.share_class,
        certificate=endorsed,
        buyer_name=buy.holder_name or match.buyer_user_id,
        buyer_address=buy.holder_address or "",
        seller_order=sell_order,
        seller_order_open=sell.status == "open" or len(unfinished) > 1,
    )
    sealed = ctx.emit(instructions.for_execution(match, buy, sell, ctx.now.date(), leg, ctx.trust), to=SETTLEMENT_ID)
    await order_repo.transfer_requested(conn, match.matching_number, sell.order.cert_id, sealed.digest)


async def _on_statuses(messages: Sequence[tuple[InstructionStatus, Context]]) -> None:
    """What settlement says about instructions: kept; a settled or failed one ends the trade.

    For a set: the statuses are kept in one statement, and the trades settled with certificates
    (the common case) are completed together (``_settle_all``). At any other end (a book-entry
    trade, a failure, two executions of one sell order) the settled ones before it are completed,
    and it and the rest of the set are handled one by one, each reading its execution again: it
    may change rows the others read (a failed certificate undoes every unfinished execution of
    its sell order).
    """
    connection = messages[0][1].connection
    matches = await order_repo.settlement_statuses(connection, [_said(message) for message, _ in messages])
    settling: list[_Settling] = []
    for index, (message, ctx) in enumerate(messages):
        match = matches.get(message.instruction)
        with ctx.bound():
            if match is None:
                await _reported(message, ctx)
                continue
            if match.status != "transfer_requested":
                continue
            if _pending(message.status):
                log.info("instruction_pending", matching_number=match.matching_number, reason=_reason(message))
                continue
        if _settled_certificate(message, match, settling):
            assert isinstance(message.delivery, CertificateDelivery)
            settling.append(_Settling(ctx, match, message.delivery))
            continue
        await _settle_all(settling)
        for later, later_ctx in messages[index:]:  # this one too: its match is read again after those writes
            with later_ctx.bound():
                await _on_status(later, later_ctx)
        return
    await _settle_all(settling)


on_instruction_status: SetBased[InstructionStatus] = SetBased(_on_statuses, keys=lambda message: (message.instruction,))


async def _on_status(message: InstructionStatus, ctx: Context) -> None:
    """One status, one by one (after a set's unusual end): kept, and the trade ended if it ends."""
    match = await order_repo.settlement_status(ctx.connection, *_said(message))
    if match is None:
        await _reported(message, ctx)
    elif match.status != "transfer_requested":
        return
    elif _pending(message.status):
        log.info("instruction_pending", matching_number=match.matching_number, reason=_reason(message))
    elif _settled_certificate(message, match, []):
        assert isinstance(message.delivery, CertificateDelivery)
        await _settle_all([_Settling(ctx, match, message.delivery)])
    else:
        await _ended(ctx, message, match)


async def _reported(message: InstructionStatus, ctx: Context) -> None:
    """A status of no match of the order book: a reported trade's (agents/exchange/reporting.py),
    kept, and the trade ended if it ends; of no trade at all, ignored with a warning."""
    trade = await report_repo.said(ctx.connection, *_said(message))
    if trade is None:
        log.warning("instruction_status_ignored", matching_number=message.instruction)
    elif trade.status != "transfer_requested":
        return
    elif _pending(message.status):
        log.info("instruction_pending", matching_number=trade.matching_number, reason=_reason(message))
    elif message.status.settlement is SettlementStatus.SETTLED:
        assert isinstance(message.delivery, CertificateDelivery)  # a reported trade's leg is a certificate
        await reporting.settled(ctx, trade, message.delivery)
    else:
        await reporting.failed(ctx, trade, _reason(message) or "", message.status.reason in _CERTIFICATE_DEAD)


def _said(message: InstructionStatus) -> tuple[int, str, str | None]:
    return message.instruction, message.status.settlement.value, _reason(message)


def _reason(message: InstructionStatus) -> str | None:
    return message.status.reason.value if message.status.reason else None


def _pending(status: StatusFields) -> bool:
    """Neither settled nor at an end: kept, nothing else to do."""
    return status.settlement is not SettlementStatus.SETTLED and not _failed(status)


def _failed(status: StatusFields) -> bool:
    return status.settlement is SettlementStatus.FAILED or status.processing in (
        ProcessingStatus.REJECTED,
        ProcessingStatus.CANCELLED,
    )


def _settled_certificate(message: InstructionStatus, match: order_repo.Match, settling: Sequence[_Settling]) -> bool:
    """Settled with a certificate delivered, and of a sell order no other trade of the set is of."""
    return (
        message.status.settlement is SettlementStatus.SETTLED
        and isinstance(message.delivery, CertificateDelivery)
        and all(s.match.sell_order != match.sell_order for s in settling)
    )


async def _ended(ctx: Context, message: InstructionStatus, match: order_repo.Match) -> None:
    """A trade that ended otherwise than settled with a certificate (or in a set's second place
    for its sell order): book entry settled, failed, rejected or cancelled."""
    status, reason = message.status, _reason(message)
    if status.settlement is SettlementStatus.SETTLED and isinstance(message.delivery, BookEntryDelivery):
        await book_entry.settled(ctx, match)
        await _go_on(ctx, match)
    elif status.settlement is SettlementStatus.SETTLED:
        assert isinstance(message.delivery, CertificateDelivery)
        await _settle_all([_Settling(ctx, match, message.delivery)])
    else:
        detail = f"settlement failed: {reason} — {status.detail}"
        if status.reason in _CERTIFICATE_DEAD and match.cert_id is not None:
            await _certificate_failed(ctx, match, detail, reason or "")
        else:
            await _reversed(ctx, match, detail, reason or "")


@dataclass(frozen=True, slots=True)
class _Settling:
    """A trade whose both legs are done, with the certificate delivery settlement reported."""

    ctx: Context
    match: order_repo.Match
    delivery: CertificateDelivery


async def _settle_all(settling: Sequence[_Settling]) -> None:
    """S121–S130 for trades of distinct sell orders, now that both legs are done: the CertID list,
    37 to both parties, each sell order's next execution — with one statement per table for the
    set. What a trade's end frees (a cover) is looked at once, at the last trade of the set that
    drew on it, as one by one would find it only then."""
    if not settling:
        return
    conn = settling[0].ctx.connection
    transfers = [await _listed(s) for s in settling]  # a seller's remainder backs its order before it is read
    done = await order_repo.complete(
        conn,
        [(s.match.matching_number, s.delivery.name_transfer_number, s.delivery.new_cert_id) for s in settling],
        [n for s in settling for n in (s.match.buy_order, s.match.sell_order)],
        [s.match.sell_order for s in settling],
        riding=repo.listing(transfers),  # S127, in the same round trip
    )
    records, unfinished = done.orders, done.unfinished
    freed: dict[object, tuple[Context, order_repo.OrderRecord | None]] = {}
    for s in settling:
        with s.ctx.bound():
            _completed(s, records)
            await instruct_next(s.ctx, s.match.sell_order, unfinished[s.match.sell_order])
        trading.release_when_done(s.ctx, records.get(s.match.sell_order), unfinished[s.match.sell_order])
        buy = records.get(s.match.buy_order)
        freed[(buy.standing_cover or buy.cover_id) if buy else s.match.buy_order] = (s.ctx, buy)
    for ctx, buy in freed.values():
        with ctx.bound():
            await release_cover_when_done(ctx, buy)


async def _listed(s: _Settling) -> repo.Transferred:
    """What the CertID list records of a transfer; the seller's remainder, if any, backs its sell order."""
    match, delivery = s.match, s.delivery
    assert match.cert_id is not None
    valid = [(delivery.new_cert_id, match.buyer_user_id, match.shares)]
    if delivery.remainder is not None:
        remainder = verify_certificate(delivery.remainder, s.ctx.trust)
        valid.append((remainder.cert_id, remainder.holder_user_id, remainder.shares))
        await order_repo.replace_certificate(
            s.ctx.connection,
            match.issue_code,
            match.sell_order,
            remainder.cert_id,
            EndorsedCertificate(certificate=delivery.remainder),
        )
    return repo.Transferred(match.issue_code, match.cert_id, delivery.register_version, valid)


def _completed(s: _Settling, records: dict[int, order_repo.OrderRecord]) -> None:
    """37 to buyer and seller."""
    match, delivery = s.match, s.delivery
    for record in (records[match.buy_order], records[match.sell_order]):
        s.ctx.emit(
            TradeCompleted(
                matching_number=match.matching_number,
                name_transfer_number=delivery.name_transfer_number,
                client_order_id=record.order.client_order_id,
                acceptance_number=record.order.acceptance_number,
                side=record.order.side,
                issue_code=match.issue_code,
                price=match.price,
                quantity=match.shares,
                amount=match.price * match.shares,
                transferred_cert_id=match.cert_id,
            ),
            to=record.order.user_id,
        )
    log.info("trade_completed", matching_number=match.matching_number, ntn=delivery.name_transfer_number)


async def _go_on(
    ctx: Context, match: order_repo.Match, records: dict[int, order_repo.OrderRecord] | None = None
) -> None:
    """After a trade ended: the sell order's next execution, then what its end frees, each read once.
    ``records``: the trade's two orders, if the caller read them already (instructing the next
    execution writes only its match)."""
    conn = ctx.connection
    unfinished = await order_repo.unfinished_matches(conn, match.sell_order)
    await instruct_next(ctx, match.sell_order, unfinished)  # changes the status of one of them, not the set
    if records is None:
        records = await order_repo.orders(conn, (match.sell_order, match.buy_order))
    trading.release_when_done(ctx, records.get(match.sell_order), unfinished)
    await release_cover_when_done(ctx, records.get(match.buy_order))


async def _certificate_failed(ctx: Context, match: order_repo.Match, detail: str, reason: str) -> None:
    """S131–S132: the buy orders get their shares back; the seller's order is cancelled and told why."""
    conn = ctx.connection
    assert match.cert_id is not None
    await repo.invalidated(conn, match.cert_id)
    failed = await order_repo.unfinished_matches(conn, match.sell_order)
    for each in failed:
        await order_repo.transfer_failed(conn, each.matching_number, reason)
    book = await order_repo.load_book(conn, match.issue_code)
    sell = await order_repo.order(conn, match.sell_order)
    assert sell is not None
    book.cancel(sell.order.acceptance_number)
    for each in failed:  # the seller's fills are undone too, before its order is cancelled
        ctx.emit(
            ExecutionReversed(
                client_order_id=sell.order.client_order_id,
                acceptance_number=sell.order.acceptance_number,
                matching_number=each.matching_number,
                quantity=each.shares,
                remaining_quantity=0,
                detail=detail,
            ),
            to=sell.order.user_id,
        )
    await trading.cancel(ctx, sell, CancelReason.CERTIFICATE_INVALID, detail)
    for each in failed:
        await trading.restore_buy(ctx, book, each, detail)
        await release_cover_if_done(ctx, each.buy_order)
    log.info("securities_leg_failed", matching_number=match.matching_number, reason=reason)


async def _reversed(ctx: Context, match: order_repo.Match, detail: str, reason: str) -> None:
    """The trade did not settle for another reason (cash, cut-off, cancelled by both): neither leg
    happened; both parties are told the execution is undone. The seller's certificate is back in
    the list; the orders are not re-offered, so the same two cannot fail each other again."""
    conn = ctx.connection
    await order_repo.transfer_failed(conn, match.matching_number, reason)
    await order_repo.settlement_result(conn, match.matching_number, False, reason)
    # a book-entry trade has no certificate to put back; otherwise only when the next execution does not use it
    if match.cert_id is not None and not await order_repo.unfinished_matches(conn, match.sell_order):
        await repo.transfer_abandoned(conn, match.cert_id)
    for number in (match.buy_order, match.sell_order):
        record = await order_repo.order(conn, number)
        assert record is not None
        ctx.emit(
            ExecutionReversed(
                client_order_id=record.order.client_order_id,
                acceptance_number=record.order.acceptance_number,
                matching_number=match.matching_number,
                quantity=match.shares,
                remaining_quantity=record.order.remaining if record.status == "open" else 0,
                detail=detail,
            ),
            to=record.order.user_id,
        )
    log.info("trade_reversed", matching_number=match.matching_number, reason=reason)
    await _go_on(ctx, match)


async def release_cover_if_done(ctx: Context, buy_order: int) -> None:
    """A closed buy order with nothing left to settle frees what remains of its cover."""
    await release_cover_when_done(ctx, await order_repo.order(ctx.connection, buy_order))


async def release_cover_when_done(ctx: Context, record: order_repo.OrderRecord | None) -> None:
    if record is not None and record.standing_cover is not None:  # released when its cover closes
        # Only a closing cover can close. Read active with the order in this transaction, it
        # stays active until this consumer takes a close; one a command closes meanwhile is
        # closed by the sweep (standing.close_drained), as a race between two closers already is.
        if record.standing_closing is not False:
            await standing.close_if_done(ctx, record.standing_cover)
        return
    if record is None or record.cover_id is None or record.status == "open":
        return
    if await order_repo.unfinished_buys(ctx.connection, record.order.acceptance_number):
        return
    ctx.emit(CoverRelease(cover_id=record.cover_id), to=SETTLEMENT_ID)
