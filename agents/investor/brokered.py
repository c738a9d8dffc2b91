"""The customer terminal's side of brokered trading (seed 000 claims 1–4, seed 002 §6): identify to
the brokerage, render what it shows, order with an account indication, keep the trade statement
and the settlement-completion notice."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from decimal import Decimal
from uuid import UUID

import asyncpg

from agents.investor import brokered_repo
from broker import logs
from broker.consumer import Handler
from broker.context import Context
from broker.errors import Reason, SecurityRejected
from broker.sealed_box import seal_for
from schemas.brokerage import (
    BrokeredOrder,
    BrokeredOrderAccepted,
    BrokeredOrderRefused,
    BrokeredSettlementCompleted,
    CustomerView,
    FundingLeg,
    IdentificationRefused,
    IdentifyCustomer,
    MismatchRule,
    SettlementType,
    TradeStatement,
)
from schemas.catalogue import Message
from schemas.sealed import CUSTOMER_PIN
from schemas.trading import OrderType, Side, TimeInForce

log = logs.get("kabuto.investor")
BROKERAGE = "brokerage"
Command = Callable[[Context], Awaitable[UUID]]


def identify(customer_id: str, pin: str, brokerage: str = BROKERAGE) -> Command:
    async def action(ctx: Context) -> UUID:
        sealed_pin = seal_for(ctx.trust, brokerage, pin, CUSTOMER_PIN)  # never in clear in our outbox
        identify = IdentifyCustomer(customer_id=customer_id, pin=sealed_pin)
        request_id = ctx.emit(identify, to=brokerage).envelope.message_id
        await brokered_repo.record_identification(ctx.connection, request_id, ctx.identity.user_id, customer_id)
        return request_id

    return action


def brokered_order(
    client_order_id: str,
    customer_id: str,
    pin: str,
    company: str,
    issue_code: str,
    side: Side,
    quantity: int,
    funding: Sequence[FundingLeg],
    price: Decimal | None = None,
    rule: MismatchRule | None = None,
    settlement_type: SettlementType = SettlementType.IMMEDIATE,
    time_in_force: TimeInForce = TimeInForce.DAY,
    brokerage: str = BROKERAGE,
) -> Command:
    """Seed 000 claim 1: transaction order information with account indication information."""

    async def action(ctx: Context) -> UUID:
        order = BrokeredOrder(
            client_order_id=client_order_id,
            customer_id=customer_id,
            pin=seal_for(ctx.trust, brokerage, pin, CUSTOMER_PIN),
            securities_company=company,
            issue_code=issue_code,
            side=side,
            order_type=OrderType.LIMIT if price is not None else OrderType.MARKET,
            price=price,
            quantity=quantity,
            time_in_force=time_in_force,
            funding=tuple(funding),
            mismatch_rule=rule,
            settlement_type=settlement_type,
        )
        sealed = ctx.emit(order, to=brokerage)
        await brokered_repo.record_order(ctx.connection, ctx.identity.user_id, client_order_id)
        return sealed.envelope.message_id

    return action


async def _update(ctx: Context, client_order_id: str, status: str, **values: object) -> None:
    if not await brokered_repo.update_order(ctx.connection, ctx.identity.user_id, client_order_id, status, **values):
        raise SecurityRejected(Reason.UNSOLICITED, f"no brokered order {client_order_id}")


async def on_view(view: CustomerView, ctx: Context) -> None:
    await brokered_repo.save_view(ctx.connection, ctx.identity.user_id, view.model_dump_json())
    await brokered_repo.answer_identification(ctx.connection, view.request_id, "answered")


async def on_identification_refused(answer: IdentificationRefused, ctx: Context) -> None:
    log.info("identification_refused", reason=answer.reason.value, detail=answer.detail)
    await brokered_repo.answer_identification(
        ctx.connection, answer.request_id, "refused", answer.reason.value, answer.detail
    )


async def on_accepted(answer: BrokeredOrderAccepted, ctx: Context) -> None:
    await _update(
        ctx,
        answer.client_order_id,
        "accepted",
        order_id=answer.order_id,
        trial=answer.trial.model_dump_json(),
        holds=json.dumps([leg.model_dump(mode="json") for leg in answer.holds]),
    )


async def on_refused(answer: BrokeredOrderRefused, ctx: Context) -> None:
    await _update(ctx, answer.client_order_id, "refused", reason=answer.reason.value, detail=answer.detail)


async def on_statement(statement: TradeStatement, ctx: Context) -> None:
    await _update(
        ctx,
        statement.client_order_id,
        "statement",
        statement=statement.information.model_dump_json(),
        settlement_date=statement.settlement_date,
        settlement_status=statement.settlement_status.value,
    )


async def on_settled(notice: BrokeredSettlementCompleted, ctx: Context) -> None:
    await _update(
        ctx,
        notice.client_order_id,
        "settled",
        entry_id=notice.entry_id,
        released=notice.released,
        settlement_status="settled",
    )


async def view(connection: asyncpg.Connection, user_id: str) -> CustomerView | None:
    text = await brokered_repo.view(connection, user_id)
    return CustomerView.model_validate_json(text) if text else None


HANDLERS: dict[type[Message], Handler] = {
    CustomerView: on_view,
    IdentificationRefused: on_identification_refused,
    BrokeredOrderAccepted: on_accepted,
    BrokeredOrderRefused: on_refused,
    TradeStatement: on_statement,
    BrokeredSettlementCompleted: on_settled,
}
