"""The brokerage intermediary's handlers (seeds 000 and 002): identify a customer, check and hold,
relay to the exchange as the customer's broker, and turn the result into settlement information.

The brokerage trades at the exchange in its own name as nominee: bought shares are registered to
it, and each customer's shares are book-entry positions in its books (seed 002's holdings DB).
"""

from __future__ import annotations

import json
import uuid
from typing import Any
from uuid import UUID

from agents.brokerage import customers, deferred, prices, repo, settling
from agents.brokerage.customers import Refused
from agents.brokerage.fees import trial_amounts
from broker import logs
from broker.consumer import Handler
from broker.context import Context
from broker.pki import PkiError
from broker.runtime import AgentDefinition
from broker.sealed_box import open_box, seal_account
from broker.stock_certificates import endorse, verify_certificate
from schemas.brokerage import (
    AccountBalance,
    BalanceInquiry,
    Balances,
    BrokerageRefusal,
    BrokeredOrder,
    BrokeredOrderAccepted,
    BrokeredOrderRefused,
    BrokeredSettlementFailed,
    BrokeredSettlementPosted,
    CustomerView,
    FundingLeg,
    Holding,
    HoldLeg,
    HoldPlaced,
    HoldRefused,
    IdentificationRefused,
    IdentifyCustomer,
    PlaceHold,
    ReleaseHold,
    Security,
)
from schemas.catalogue import Message
from schemas.dvp import InstructionStatus
from schemas.identity import EXCHANGE_ID, SETTLEMENT_ID, Role
from schemas.issuance import CertificateIssued
from schemas.market_rules import price_band
from schemas.prices import PriceUpdate
from schemas.sealed import CUSTOMER_PIN
from schemas.settlement import SettlementNotice, SettlementNoticeV1
from schemas.trading import (
    ExecutionReversed,
    OrderAccepted,
    OrderCancelled,
    OrderExecuted,
    OrderRejected,
    OrderTerms,
    OrderType,
    RemainderCertificate,
    Side,
    SubmitOrder,
    TradeCompleted,
)

log = logs.get("kabuto.brokerage")
BROKERAGE_ID = "brokerage"


def _pin(sealed: str, ctx: Context) -> str:
    """The customer's PIN, opened with the brokerage's key; it is never stored or logged."""
    if ctx.identity.decryption_key is None:
        raise PkiError("the brokerage has no encryption key; renew its certificate (`ca enrol brokerage --renew`)")
    return open_box(ctx.identity.decryption_key, sealed, CUSTOMER_PIN)


async def on_identify(request: IdentifyCustomer, ctx: Context) -> None:
    """Seed 000 claims 3–4: authenticate, then fetch the accounts' balances for the view."""
    assert ctx.sender is not None and ctx.message_id is not None
    try:
        customer = await customers.authenticate(
            await repo.customer(ctx.connection, request.customer_id),
            request.customer_id,
            _pin(request.pin, ctx),
            ctx.sender.user_id,
        )
        customers.check_record(customer)
    except Refused as refused:
        ctx.emit(
            IdentificationRefused(request_id=ctx.message_id, reason=refused.reason, detail=refused.detail),
            to=ctx.sender.user_id,
        )
        return
    accounts = tuple(a.account_id for a in customer.accounts)
    if not accounts:  # nothing to ask settlement about: answer at once
        await _view(ctx, ctx.message_id, customer, {})
        return
    sealed = ctx.emit(BalanceInquiry(owner=customer.user_id, accounts=accounts), to=SETTLEMENT_ID)
    await repo.record_identification(ctx.connection, sealed.envelope.message_id, ctx.message_id, customer.customer_id)


async def on_balances(answer: Balances, ctx: Context) -> None:
    """R-002-21..29: the customer's view — securities information, holdings and accounts with balances."""
    found = await repo.identification(ctx.connection, answer.inquiry_id)
    if found is None:
        log.warning("balances_unasked", inquiry_id=str(answer.inquiry_id))
        return
    request_id, customer_id = found
    customer = await repo.customer(ctx.connection, customer_id)
    assert customer is not None
    await _view(ctx, request_id, customer, {b.account: b for b in answer.balances})


async def _view(
    ctx: Context, request_id: UUID, customer: customers.Customer, balances: dict[str, AccountBalance]
) -> None:
    customer_id = customer.customer_id
    companies = await repo.company_ids(ctx.connection)
    accounts = [
        a.model_copy(update={"balance": balances[a.account].balance, "available": balances[a.account].available})
        if a.account in balances
        else a
        for a in customers.available_accounts(customer, companies)
    ]
    fees = await settling.fee_schedule(ctx.connection)
    ctx.emit(
        CustomerView(
            request_id=request_id,
            customer_id=customer_id,
            securities=tuple(_security(r) for r in await repo.securities(ctx.connection)),
            holdings=tuple(
                Holding(issue_code=p["issue_code"], securities_company=p["company_id"], shares=p["shares"])
                for p in await repo.positions(ctx.connection, customer_id)
            ),
            accounts=tuple(accounts),
            companies=tuple(companies),
            conditions=customer.conditions,
            commission_table=fees.schedule.bands,
            consumption_tax_rate=fees.schedule.consumption_tax_rate,
        ),
        to=customer.user_id,
    )


def _security(row: Any) -> Security:
    band = price_band(row["reference_price"])
    return Security(
        issue_code=row["issue_code"],
        reference_price=row["reference_price"],
        last_price=row["last_price"],
        upper_limit=band.upper,
        lower_limit=band.lower,
    )


async def on_order(request: BrokeredOrder, ctx: Context) -> None:
    """Seed 000 claim 2, seed 002 R-002-32..41: check, then hold the allowance before relaying."""
    assert ctx.sender is not None
    try:
        values, hold = await _checked(request, ctx)
    except Refused as refused:
        log.info("brokered_order_refused", reason=refused.reason.value, detail=refused.detail)
        ctx.emit(
            BrokeredOrderRefused(client_order_id=request.client_order_id, reason=refused.reason, detail=refused.detail),
            to=ctx.sender.user_id,
        )
        return
    await repo.insert_order(ctx.connection, values)
    if hold:
        ctx.emit(PlaceHold(hold_id=values["order_id"], owner=ctx.sender.user_id, legs=hold), to=SETTLEMENT_ID)
    else:  # a sell holds no funds: relay at once
        await _relay(ctx, await repo.order(ctx.connection, values["order_id"]) or {})


async def _checked(request: BrokeredOrder, ctx: Context) -> tuple[dict[str, Any], tuple[Any, ...]]:
    assert ctx.sender is not None
    conn = ctx.connection
    customer = await customers.authenticate(
        await repo.customer(conn, request.customer_id), request.customer_id, _pin(request.pin, ctx), ctx.sender.user_id
    )
    customers.check_record(customer)
    if await repo.client_order_used(conn, customer.user_id, request.client_order_id):
        raise Refused(BrokerageRefusal.DUPLICATE_ORDER, f"{request.client_order_id} was used before")
    company = await repo.company(conn, request.securities_company)
    if company is None:
        raise Refused(BrokerageRefusal.UNKNOWN_COMPANY, f"no intermediation contract with {request.securities_company}")
    customers.check_conditions(customer, request.issue_code, request.side, request.order_type)
    customers.check_funding(customer, company.company_id, request.funding)
    reference = await repo.reference_price(conn, request.issue_code)
    if reference is None:
        raise Refused(BrokerageRefusal.UNKNOWN_ISSUE, f"no price information for {request.issue_code}")
    fees = await settling.fee_schedule(conn)
    trial = trial_amounts(
        request.side,
        request.order_type,
        request.price,
        request.quantity,
        reference,
        fees.schedule,
        fees.policy,
        request.settlement_type,
    )
    limit = customer.conditions.max_order_value
    if limit is not None and trial.consideration > limit:
        raise Refused(
            BrokerageRefusal.MAX_ORDER_VALUE_EXCEEDED,
            f"{trial.consideration} exceeds the customer's maximum order value {limit}",
        )
    cert_id = None
    hold: tuple[Any, ...] = ()
    if request.side is Side.BUY:
        hold = settling.hold_for(
            request.funding, trial.allowance, request.mismatch_rule or customer.conditions.mismatch_rule
        )
    else:
        cert_id = await settling.certificate_to_sell(
            conn, customer.customer_id, company.company_id, request.issue_code, request.quantity
        )
    order_id = uuid.uuid4()
    values = {
        "order_id": order_id,
        "client_order_id": request.client_order_id,
        "customer_id": customer.customer_id,
        "user_id": customer.user_id,
        "company_id": company.company_id,
        "issue_code": request.issue_code,
        "side": request.side.value,
        "order_type": request.order_type.value,
        "price": request.price,
        "quantity": request.quantity,
        "time_in_force": request.time_in_force.value,
        "settlement_type": request.settlement_type.value,
        "rule": (request.mismatch_rule or customer.conditions.mismatch_rule).value,
        "instruction": request.model_dump_json(exclude={"pin"}),
        "trial": trial.model_dump_json(),
        "exchange_order_id": f"bk-{order_id.hex[:24]}",
        "cert_id": cert_id,
        "status": "holding" if hold else "relayed",
    }
    return values, hold


async def on_hold_placed(answer: HoldPlaced, ctx: Context) -> None:
    """R-002-74: the funds are blocked; relay the order to the exchange (R-002-40)."""
    order = await repo.order(ctx.connection, answer.hold_id)
    if order is None or order["status"] != "holding":
        ctx.emit(ReleaseHold(hold_id=answer.hold_id), to=SETTLEMENT_ID)  # nothing will use it
        return
    # What each account can pay at settlement: what is still free plus what this order holds on it.
    held = {leg.account: leg.amount for leg in answer.held}
    balances = {
        b.account: str(b.available + held.get(b.account, 0)) for b in answer.balances if b.available is not None
    }
    await repo.update_order(ctx.connection, answer.hold_id, status="relayed", balances=json.dumps(balances))
    await _relay(ctx, order, answer.held)


async def _relay(ctx: Context, order: dict[str, Any], held: tuple[HoldLeg, ...] = ()) -> None:
    """Seed 000 claim 1: transfer the order to the securities transaction system, as the customer's broker."""
    side = Side(order["side"])
    certificate = None
    if side is Side.SELL:
        signed = await settling.nominee_certificate(ctx.connection, order["cert_id"])
        certificate = endorse(ctx.identity, signed, "sell_order", f"order:{BROKERAGE_ID}:{order['exchange_order_id']}")
    ctx.emit(
        SubmitOrder(
            client_order_id=order["exchange_order_id"],
            user_id=ctx.identity.user_id,
            issue_code=order["issue_code"],
            terms=OrderTerms(
                side=side,
                order_type=OrderType(order["order_type"]),
                price=order["price"],
                quantity=order["quantity"],
                time_in_force=order["time_in_force"],
            ),
            settlement_account=seal_account(ctx.trust, ctx.identity.user_id, await _clearing(ctx, order)),  # R-001-06
            certificate=certificate,
            holder_name=settling.NOMINEE_NAME if side is Side.BUY else None,
            holder_address=settling.NOMINEE_ADDRESS if side is Side.BUY else None,
        ),
        to=EXCHANGE_ID,
    )
    priority = {leg.account: leg.priority for leg in settling.funding_of(order)}
    holds = tuple(FundingLeg(account=leg.account, amount=leg.amount, priority=priority[leg.account]) for leg in held)
    trial = settling.trial_of(order)
    ctx.emit(
        BrokeredOrderAccepted(
            client_order_id=order["client_order_id"], order_id=order["order_id"], trial=trial, holds=holds
        ),
        to=order["user_id"],
    )


async def _clearing(ctx: Context, order: dict[str, Any]) -> str:
    """The securities company's clearing account, from which the brokerage trades as nominee."""
    company = await repo.company(ctx.connection, order["company_id"])
    assert company is not None
    return company.accounts.clearing


async def on_hold_refused(answer: HoldRefused, ctx: Context) -> None:
    """R-002-38: the balance does not cover the allowance — nothing is relayed."""
    order = await repo.order(ctx.connection, answer.hold_id)
    if order is None:
        return
    reason = (
        BrokerageRefusal.INSUFFICIENT_FUNDS
        if answer.reason.value == "insufficient_funds"
        else BrokerageRefusal.ACCOUNT_NOT_AVAILABLE
    )
    await repo.update_order(ctx.connection, answer.hold_id, status="refused", reason=reason.value, detail=answer.detail)
    ctx.emit(
        BrokeredOrderRefused(
            client_order_id=order["client_order_id"],
            reason=reason,
            detail=f"the allowance is not covered: {answer.detail}",
        ),
        to=order["user_id"],
    )


# --- answers from the exchange ---------------------------------------------------------------


async def _exchange_order(ctx: Context, client_order_id: str) -> dict[str, Any] | None:
    order = await repo.order_by_exchange_id(ctx.connection, client_order_id)
    if order is None:
        log.warning("unknown_exchange_order", client_order_id=client_order_id)
    return order


async def on_accepted(answer: OrderAccepted, ctx: Context) -> None:
    order = await _exchange_order(ctx, answer.client_order_id)
    if order is not None:
        await repo.update_order(ctx.connection, order["order_id"], acceptance_number=answer.acceptance_number)


async def on_rejected(answer: OrderRejected, ctx: Context) -> None:
    order = await _exchange_order(ctx, answer.client_order_id)
    if order is None:
        return
    await repo.update_order(
        ctx.connection, order["order_id"], status="refused", reason=answer.reason.value, detail=answer.detail
    )
    await settling.give_up(ctx, order)
    ctx.emit(
        BrokeredOrderRefused(
            client_order_id=order["client_order_id"],
            reason=BrokerageRefusal.EXCHANGE_REJECTED,
            detail=f"{answer.reason.value}: {answer.detail}",
        ),
        to=order["user_id"],
    )


async def on_executed(fill: OrderExecuted, ctx: Context) -> None:
    order = await _exchange_order(ctx, fill.client_order_id)
    if order is not None:
        await repo.record_execution(ctx.connection, fill.matching_number, order["order_id"], fill.price, fill.quantity)
        await repo.last_price(ctx.connection, fill.issue_code, fill.price)


async def on_reversed(reversal: ExecutionReversed, ctx: Context) -> None:
    order = await _exchange_order(ctx, reversal.client_order_id)
    if order is not None:
        await repo.execution_status(ctx.connection, reversal.matching_number, "reversed")
        if reversal.remaining_quantity == 0:  # an order that cannot rest again: the shares are off
            await repo.update_order(
                ctx.connection,
                order["order_id"],
                cancelled=True,
                cancelled_quantity=order["cancelled_quantity"] + reversal.quantity,
            )
        await settling.settle_if_done(ctx, order["order_id"])


async def on_cancelled(notice: OrderCancelled, ctx: Context) -> None:
    order = await _exchange_order(ctx, notice.client_order_id)
    if order is not None:
        await repo.update_order(
            ctx.connection,
            order["order_id"],
            cancelled=True,
            detail=notice.reason.value,
            cancelled_quantity=order["cancelled_quantity"] + notice.cancelled_quantity,
        )
        await settling.settle_if_done(ctx, order["order_id"])


async def on_trade_completed(notice: TradeCompleted, ctx: Context) -> None:
    """Name transfer done: a buy asks for the nominee certificate (39); the order may now settle."""
    order = await _exchange_order(ctx, notice.client_order_id)
    if order is None:
        return
    await repo.execution_status(ctx.connection, notice.matching_number, "completed")
    if notice.side is Side.BUY:
        await settling.request_certificate(ctx, notice)
    elif notice.transferred_cert_id is not None:
        await repo.certificate_status(ctx.connection, notice.transferred_cert_id, "surrendered")
    await settling.settle_if_done(ctx, order["order_id"])


async def on_certificate(message: CertificateIssued, ctx: Context) -> None:
    certificate = verify_certificate(message.certificate, ctx.trust)
    await repo.keep_certificate(
        ctx.connection, certificate.cert_id, certificate.issue_code, certificate.shares, message.certificate
    )


async def on_remainder(message: RemainderCertificate, ctx: Context) -> None:
    certificate = verify_certificate(message.certificate, ctx.trust)
    await repo.certificate_status(ctx.connection, message.replaces_cert_id, "surrendered")
    await repo.keep_certificate(
        ctx.connection, certificate.cert_id, certificate.issue_code, certificate.shares, message.certificate
    )


async def on_street_settlement(notice: SettlementNotice | SettlementNoticeV1, ctx: Context) -> None:
    log.info("street_settlement", matching_number=notice.matching_number, settled=notice.settled)


async def on_street_instruction(status: InstructionStatus, ctx: Context) -> None:
    """The street trade's instruction (issue 11): the customer's side waits for it to settle; a
    failed one reaches the order as a reversed execution from the exchange."""
    log.info(
        "street_instruction",
        matching_number=status.instruction,
        settlement=status.status.settlement.value,
        reason=status.status.reason.value if status.status.reason else None,
    )


async def on_posted(answer: BrokeredSettlementPosted, ctx: Context) -> None:
    await settling.posted(ctx, answer)


async def on_posting_failed(answer: BrokeredSettlementFailed, ctx: Context) -> None:
    await settling.posting_failed(ctx, answer)


HANDLERS: dict[type[Message], Handler] = {
    IdentifyCustomer: on_identify,
    Balances: on_balances,
    BrokeredOrder: on_order,
    HoldPlaced: on_hold_placed,
    HoldRefused: on_hold_refused,
    OrderAccepted: on_accepted,
    OrderRejected: on_rejected,
    OrderExecuted: on_executed,
    ExecutionReversed: on_reversed,
    OrderCancelled: on_cancelled,
    TradeCompleted: on_trade_completed,
    CertificateIssued: on_certificate,
    RemainderCertificate: on_remainder,
    SettlementNotice: on_street_settlement,
    SettlementNoticeV1: on_street_settlement,
    InstructionStatus: on_street_instruction,
    BrokeredSettlementPosted: on_posted,
    BrokeredSettlementFailed: on_posting_failed,
    PriceUpdate: prices.on_price_update,
}

AGENT = AgentDefinition(
    id=BROKERAGE_ID,
    role=Role.BROKERAGE,
    handlers=HANDLERS,
    background=(prices.subscribe_prices, deferred.settle_due_job),
)
