"""The investor client's trading (seed 001 units 13 and 15): orders, fills, completion, accounts.

Commands sign and send; handlers record what the exchange, the issuer and settlement answer
(an order's acceptance, executions and completions in sets: ``order_answers``). A buyer asks
for its new certificate by name-transfer number as soon as the trade completes (message 39); a
seller's remainder certificate arrives from the issuer by itself.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import NoReturn
from uuid import UUID

from pydantic import ValidationError

from agents.investor import domain, order_answers, order_repo, repo, standing_repo
from agents.investor.domain import Dividend
from broker import logs
from broker.consumer import Handler
from broker.context import Context
from broker.errors import Reason, SecurityRejected
from broker.sealed_box import seal_account, seal_for
from broker.stock_certificates import endorse, verify_certificate
from schemas.catalogue import Message
from schemas.certificates import EndorsedCertificate, ShareClass, SignedCertificate
from schemas.identity import EXCHANGE_ID, SETTLEMENT_ID
from schemas.sealed import ACCOUNT_INQUIRY_ACCOUNT
from schemas.settlement import AccountInquiry, AccountStatement
from schemas.trading import (
    CancelOrder,
    ExecutionReversed,
    OrderAccepted,
    OrderCancelled,
    OrderExecuted,
    OrderRejected,
    OrderStatus,
    OrderStatusRequest,
    OrderTerms,
    OrderType,
    RejectedRequest,
    RemainderCertificate,
    ReplaceOrder,
    Side,
    SubmitOrder,
    TimeInForce,
    TradeCompleted,
)

log = logs.get("kabuto.investor")
Command = Callable[[Context], Awaitable[UUID]]


class OrderError(ValueError):
    """An order the investor client will not send, and why."""


@dataclass(frozen=True, slots=True)
class OrderTicket:
    """What an investor fills in to place an order (seed 001 Fig. 12)."""

    client_order_id: str
    issue_code: str
    side: Side
    quantity: int
    settlement_account: str
    price: Decimal | None = None  # None for a market order
    time_in_force: TimeInForce = TimeInForce.DAY
    cert_id: UUID | None = None  # the certificate a sell order sells from
    holder_name: str | None = None  # a buyer's name and address, for the register
    holder_address: str | None = None
    dividend_delivery: Dividend | None = None
    share_class: ShareClass = ShareClass.COMMON
    exchange: str = EXCHANGE_ID
    # A custody client's safekeeping account: the order's securities leg is a book entry there.
    safekeeping_account: str | None = None


def place_order(ticket: OrderTicket) -> Command:
    """Sign and send order 33; a sell order attaches the certificate, countersigned for this order."""
    listed = place_orders([ticket])

    async def action(ctx: Context) -> UUID:
        (message_id,) = await listed(ctx)
        return message_id

    return action


# One transaction holds a list's orders: a bound on what one command may lock and sign.
MOST_ORDERS_IN_A_LIST = 1000


def place_orders(tickets: Sequence[OrderTicket]) -> Callable[[Context], Awaitable[list[UUID]]]:
    """Sign and send order 33 for each ticket, in the list's order: each order its own signed
    message, as if placed alone, and all of them recorded in one transaction, or none (a client
    with many orders to place pays one commit for them, not one each; docs/performance.md, stop 31).

    A list is refused whole, with nothing sent, if it is empty or longer than
    ``MOST_ORDERS_IN_A_LIST``, names a client order id twice or one used before, sells from one
    certificate twice or from one the wallet cannot commit, names a certificate on an order that
    sells none, or holds an order the contract cannot carry (named by its place in the list).

    Rows are locked in one order whatever the list's (certificates, then client order ids, each
    sorted), so two lists racing on the same ones wait for each other rather than deadlock."""
    _check_list(tickets)

    async def action(ctx: Context) -> list[UUID]:
        user, connection = ctx.identity.user_id, ctx.connection
        buying = {ticket.settlement_account for ticket in tickets if ticket.side is Side.BUY}
        boxes = await standing_repo.active_boxes(connection, user, sorted(buying))
        selling = [ticket.cert_id for ticket in tickets if _carries_certificate(ticket) and ticket.cert_id]
        wallet = await order_repo.committable_all(connection, user, selling)
        if any(_carries_certificate(t) and t.cert_id not in wallet for t in tickets):
            await _refuse_uncommittable(ctx, tickets, wallet)
        requests = [_request(ctx, place, ticket, boxes, wallet) for place, ticket in enumerate(tickets, 1)]
        sealed = [ctx.emit(request, to=ticket.exchange) for request, ticket in zip(requests, tickets, strict=True)]
        placed = [
            order_repo.Placed(request, s.digest, t.cert_id, t.dividend_delivery, t.settlement_account)
            for request, s, t in zip(requests, sealed, tickets, strict=True)
        ]
        recorded = await order_repo.record_orders(connection, placed)
        used = [ticket.client_order_id for ticket in tickets if ticket.client_order_id not in recorded]
        if used:  # the transaction rolls back: nothing recorded, nothing sent
            raise OrderError(_used_before(used))
        commits = [(t.cert_id, t.client_order_id) for t in tickets if _carries_certificate(t) and t.cert_id]
        await order_repo.commit_certificates(connection, commits)
        return [s.envelope.message_id for s in sealed]

    return action


def _check_list(tickets: Sequence[OrderTicket]) -> None:
    """What a list is refused for before anything is read. Pure."""
    if not tickets:
        raise OrderError("a list of orders holds at least one order")
    if len(tickets) > MOST_ORDERS_IN_A_LIST:
        raise OrderError(f"a list holds at most {MOST_ORDERS_IN_A_LIST} orders, not {len(tickets)}")
    twice = [coid for coid, n in Counter(t.client_order_id for t in tickets).items() if n > 1]
    if twice:
        raise OrderError(f"client order id {twice[0]} is in the list more than once")
    for ticket in tickets:
        if ticket.cert_id is not None and not _carries_certificate(ticket):
            what = "a buy order" if ticket.side is Side.BUY else "a book-entry sell order"
            raise OrderError(f"order {ticket.client_order_id}: {what} names no certificate, not {ticket.cert_id}")
    certs = Counter(t.cert_id for t in tickets if _carries_certificate(t) and t.cert_id is not None)
    shared = [cert for cert, n in certs.items() if n > 1]
    if shared:
        raise OrderError(f"certificate {shared[0]} backs more than one order of the list")


def _used_before(client_order_ids: Sequence[str]) -> str:
    return f"client order id {client_order_ids[0]} was used before" + (
        f" (and {len(client_order_ids) - 1} more of the list)" if len(client_order_ids) > 1 else ""
    )


def _request(
    ctx: Context,
    place: int,
    ticket: OrderTicket,
    boxes: Mapping[str, str],
    wallet: Mapping[UUID, SignedCertificate],
) -> SubmitOrder:
    """Order 33 as ``ticket`` fills it in; one the contract cannot carry is refused by its
    ``place`` in the list (1 for the first)."""
    try:
        return SubmitOrder(
            client_order_id=ticket.client_order_id,
            user_id=ctx.identity.user_id,
            issue_code=ticket.issue_code,
            share_class=ticket.share_class,
            terms=OrderTerms(
                side=ticket.side,
                order_type=OrderType.LIMIT if ticket.price is not None else OrderType.MARKET,
                price=ticket.price,
                quantity=ticket.quantity,
                time_in_force=ticket.time_in_force,
            ),
            settlement_account=_account_box(ctx, ticket, boxes),  # R-001-06
            certificate=_endorsed(ctx, ticket, wallet) if _carries_certificate(ticket) else None,
            holder_name=ticket.holder_name if ticket.side is Side.BUY else None,
            holder_address=ticket.holder_address if ticket.side is Side.BUY else None,
            safekeeping_account=ticket.safekeeping_account,
        )
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'order'}: {e['msg']}" for e in exc.errors())
        raise OrderError(f"order {place} of the list ({ticket.client_order_id}) cannot be sent: {problems}") from None


def _account_box(ctx: Context, ticket: OrderTicket, boxes: Mapping[str, str]) -> str:
    """The order's account sealed to settlement. A buy order on an account with an active standing
    cover carries the box the cover was opened with (``boxes``, by account): the exchange draws the
    order on the cover only if the boxes are equal byte for byte (docs/dvp.md, "Standing cover";
    R-001-23)."""
    if ticket.side is Side.BUY and ticket.settlement_account in boxes:
        return boxes[ticket.settlement_account]
    return seal_account(ctx.trust, ctx.identity.user_id, ticket.settlement_account)


def _carries_certificate(ticket: OrderTicket) -> bool:
    return ticket.side is Side.SELL and ticket.safekeeping_account is None


def _endorsed(ctx: Context, ticket: OrderTicket, wallet: Mapping[UUID, SignedCertificate]) -> EndorsedCertificate:
    """The sell order's certificate countersigned for it (``_refuse_uncommittable`` refused a list
    with a sell order whose certificate is not in ``wallet``)."""
    assert ticket.cert_id is not None
    context = f"order:{ctx.identity.user_id}:{ticket.client_order_id}"
    return endorse(ctx.identity, wallet[ticket.cert_id], "sell_order", context)


async def _refuse_uncommittable(
    ctx: Context, tickets: Sequence[OrderTicket], wallet: Mapping[UUID, SignedCertificate]
) -> NoReturn:
    """The first sell order of the list whose certificate the wallet cannot commit, and why."""
    ticket = next(t for t in tickets if _carries_certificate(t) and t.cert_id not in wallet)
    if ticket.cert_id is None:
        raise OrderError("a sell order names the certificate it sells from")
    if await order_repo.client_order_used(ctx.connection, ctx.identity.user_id, ticket.client_order_id):
        raise OrderError(_used_before([ticket.client_order_id]))  # the likelier mistake: a sell placed twice
    raise OrderError(f"certificate {ticket.cert_id} is not in the wallet, or already backs an order")


def cancel_order(client_order_id: str, exchange: str = EXCHANGE_ID) -> Command:
    async def action(ctx: Context) -> UUID:
        await _known_order(ctx, client_order_id)
        return ctx.emit(CancelOrder(client_order_id=client_order_id), to=exchange).envelope.message_id

    return action


def replace_order(
    client_order_id: str,
    new_client_order_id: str,
    quantity: int,
    price: Decimal | None,
    exchange: str = EXCHANGE_ID,
) -> Command:
    async def action(ctx: Context) -> UUID:
        old = await _known_order(ctx, client_order_id)
        request = ReplaceOrder(
            client_order_id=client_order_id,
            new_client_order_id=new_client_order_id,
            price=price,
            quantity=quantity,
        )
        sealed = ctx.emit(request, to=exchange)
        await order_repo.record_replacement(ctx.connection, old, new_client_order_id, price, quantity, sealed.digest)
        return sealed.envelope.message_id

    return action


async def _known_order(ctx: Context, client_order_id: str) -> order_repo.OrderRecord:
    record = await order_repo.order(ctx.connection, ctx.identity.user_id, client_order_id)
    if record is None:
        raise OrderError(f"no order {client_order_id}")
    return record


def ask_order_status(acceptance_number: int, exchange: str = EXCHANGE_ID) -> Command:
    async def action(ctx: Context) -> UUID:
        request = OrderStatusRequest(acceptance_number=acceptance_number)
        return ctx.emit(request, to=exchange).envelope.message_id

    return action


def inquire_account(account: str, settlement: str = SETTLEMENT_ID) -> Command:
    """Unit 15 (R-001-43): ask settlement for the account's balance and postings."""

    async def action(ctx: Context) -> UUID:
        sealed = seal_for(ctx.trust, settlement, account, ACCOUNT_INQUIRY_ACCOUNT)  # R-001-06
        return ctx.emit(AccountInquiry(account=sealed), to=settlement).envelope.message_id

    return action


# --- handlers -----------------------------------------------------------------------------


async def _order(ctx: Context, client_order_id: str) -> order_repo.OrderRecord:
    record = await order_repo.order(ctx.connection, ctx.identity.user_id, client_order_id)
    if record is None:
        raise SecurityRejected(Reason.UNSOLICITED, f"no order {client_order_id} of {ctx.identity.user_id}")
    return record


async def on_rejected(answer: OrderRejected, ctx: Context) -> None:
    record = await _order(ctx, answer.client_order_id)
    if answer.request is RejectedRequest.CANCEL:  # the order stays as it was
        log.info("cancel_rejected", client_order_id=record.client_order_id, reason=answer.reason.value)
        # Kept so that `kabuto investor cancel` can say why; the status is unchanged.
        await order_repo.update_order(
            ctx.connection, record.user_id, record.client_order_id, reason=answer.reason.value, detail=answer.detail
        )
        return
    await order_repo.update_order(
        ctx.connection,
        record.user_id,
        record.client_order_id,
        status="rejected",
        reason=answer.reason.value,
        detail=answer.detail,
    )
    if answer.request is RejectedRequest.ORDER:  # a refused replace leaves the original order its certificate
        await order_repo.release_certificates(ctx.connection, record.user_id, record.client_order_id)
    log.info("order_rejected", reason=answer.reason.value, detail=answer.detail)


async def on_reversed(reversal: ExecutionReversed, ctx: Context) -> None:
    record = await _order(ctx, reversal.client_order_id)
    await order_repo.execution_status(ctx.connection, reversal.matching_number, record.user_id, "reversed")
    await order_repo.add_filled(ctx.connection, record.user_id, record.client_order_id, -reversal.quantity)


async def on_cancelled(notice: OrderCancelled, ctx: Context) -> None:
    record = await _order(ctx, notice.client_order_id)
    status = "replaced" if notice.reason.value == "replaced" else "cancelled"
    if record.filled and status == "cancelled" and notice.cancelled_quantity == 0:
        status = record.status
    await order_repo.update_order(
        ctx.connection,
        record.user_id,
        record.client_order_id,
        status=status,
        reason=notice.reason.value,
        detail=notice.detail or None,
    )
    if record.side == "sell" and status == "cancelled" and not record.filled:
        await order_repo.release_certificates(ctx.connection, record.user_id, record.client_order_id)


async def on_remainder(message: RemainderCertificate, ctx: Context) -> None:
    """The seller's certificate for the shares a partial sale left; it backs the same order."""
    assert ctx.sender is not None
    certificate = verify_certificate(message.certificate, ctx.trust)
    domain.check_delivered(
        certificate, holder=ctx.identity.user_id, delivered_by=ctx.sender.user_id, today=ctx.now.date()
    )
    committed = await order_repo.surrender(ctx.connection, message.replaces_cert_id)
    await repo.keep(ctx.connection, certificate, message.certificate)
    live = committed is not None and await _live(ctx, committed)
    await order_repo.commit_certificate(ctx.connection, certificate.cert_id, committed if live else None)


async def _live(ctx: Context, client_order_id: str) -> bool:
    record = await order_repo.order(ctx.connection, ctx.identity.user_id, client_order_id)
    return record is not None and record.status in ("sent", "accepted")


async def on_status(status: OrderStatus, ctx: Context) -> None:
    if status.client_order_id is None:
        log.info("order_status_unknown", acceptance_number=status.acceptance_number)
        return
    await order_repo.update_order(
        ctx.connection, ctx.identity.user_id, status.client_order_id, last_status=status.model_dump_json()
    )


async def on_statement(statement: AccountStatement, ctx: Context) -> None:
    await order_repo.record_statement(
        ctx.connection, ctx.identity.user_id, statement.account, statement.model_dump_json()
    )


HANDLERS: dict[type[Message], Handler] = {
    OrderAccepted: order_answers.on_answer,
    OrderRejected: on_rejected,
    OrderExecuted: order_answers.on_answer,
    ExecutionReversed: on_reversed,
    OrderCancelled: on_cancelled,
    TradeCompleted: order_answers.on_answer,
    RemainderCertificate: on_remainder,
    OrderStatus: on_status,
    AccountStatement: on_statement,
}
