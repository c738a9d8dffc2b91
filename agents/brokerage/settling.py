"""From execution to settlement information (seed 000 claim 1, seed 002 §8–§9): when a brokered
order is done, compute consideration, commission, tax and the intermediary fee on what executed,
divide the total over the indicated accounts by the mismatch rule, build the ledger legs of the
company's settlement design, and ask settlement to post them against the order's hold."""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from uuid import UUID

import asyncpg

from agents.brokerage import deferred, repo
from agents.brokerage.allocation import FundingShortfall, allocate
from agents.brokerage.customers import Refused
from agents.brokerage.fees import DEFAULT_FEES, AllowancePolicy, FeeSchedule, settlement_total
from agents.brokerage.ledger_legs import settlement_legs
from broker import logs
from broker.context import Context
from broker.sealed_box import sealed_dividend
from schemas.brokerage import (
    AccountAmount,
    BrokerageRefusal,
    BrokeredOrderRefused,
    BrokeredSettlementCompleted,
    BrokeredSettlementFailed,
    BrokeredSettlementPosted,
    BrokeredTradeSettled,
    FundingLeg,
    HoldLeg,
    MismatchRule,
    PostBrokeredSettlement,
    ReleaseHold,
    SettlementInformation,
    SettlementType,
    TradeStatement,
    TrialAmounts,
)
from schemas.certificates import IssuerSignature, SignedCertificate
from schemas.identity import ISSUER_ID, SETTLEMENT_ID
from schemas.issuance import DividendMethod
from schemas.trading import CertificateRequestAfterTransfer, Side, TradeCompleted

log = logs.get("kabuto.brokerage")
# The holder of record for every share the brokerage buys for its customers.
NOMINEE_NAME = "Kabuto Brokerage K.K. (nominee)"
NOMINEE_ADDRESS = "Kabuto-cho, Nihonbashi, Chuo-ku, Tokyo"


@dataclass(frozen=True, slots=True)
class Fees:
    schedule: FeeSchedule
    policy: AllowancePolicy


async def fee_schedule(connection: asyncpg.Connection) -> Fees:
    """The configured commission table, tax rate, fee share and allowance policy, or the defaults."""
    row = await connection.fetchrow("SELECT * FROM fee_schedule")
    if row is None:
        return Fees(DEFAULT_FEES, AllowancePolicy())
    bands = tuple((Decimal(str(a)), Decimal(str(b))) for a, b in json.loads(row["bands"]))
    schedule = FeeSchedule(
        bands=bands,
        above_rate=row["above_rate"],
        consumption_tax_rate=row["consumption_tax_rate"],
        intermediary_share=row["intermediary_share"],
    )
    return Fees(schedule, AllowancePolicy(factor=row["allowance_factor"], regular_share=row["regular_share"]))


def hold_for(funding: tuple[FundingLeg, ...], allowance: Decimal, rule: MismatchRule) -> tuple[HoldLeg, ...]:
    """Issue 11: hold on each account what the mismatch rule would debit it if the order cost its
    whole allowance — the most any execution can take from it, since the rule's debit per account
    only grows with the amount — not a pro-rata share, which left the priority-1 account under-held."""
    if allowance > 0 and not any(leg.amount for leg in funding):
        raise Refused(BrokerageRefusal.NO_FUNDING, "a buy order indicates how much each account pays")
    unbounded = {leg.account: Decimal(10) ** 16 for leg in funding}  # settlement checks what is available
    debits = allocate(Side.BUY, funding, allowance, rule, unbounded)
    return tuple(HoldLeg(account=account, amount=amount) for account, amount in debits if amount > 0)


def trial_of(order: dict[str, Any]) -> TrialAmounts:
    return TrialAmounts.model_validate_json(order["trial"])


def funding_of(order: dict[str, Any]) -> tuple[FundingLeg, ...]:
    # The instruction is kept without the PIN, so it is read field by field, not as a whole order.
    return tuple(FundingLeg.model_validate(leg) for leg in json.loads(order["instruction"])["funding"])


async def certificate_to_sell(
    conn: asyncpg.Connection, customer_id: str, company_id: str, issue_code: str, quantity: int
) -> UUID:
    """A customer sells from its book-entry position, through a nominee certificate that covers it."""
    if await repo.position(conn, customer_id, company_id, issue_code) < quantity:
        raise Refused(BrokerageRefusal.INSUFFICIENT_HOLDINGS, f"the customer holds fewer than {quantity} {issue_code}")
    found = await repo.certificate_for(conn, issue_code, quantity)
    if found is None:
        raise Refused(
            BrokerageRefusal.INSUFFICIENT_HOLDINGS,
            f"no single nominee certificate covers {quantity} {issue_code}; merge certificates first",
        )
    return found[0]


async def nominee_certificate(conn: asyncpg.Connection, cert_id: UUID) -> SignedCertificate:
    row = await conn.fetchrow(
        "SELECT content, issuer_signature, issuer_certificate FROM nominee_certificates WHERE cert_id = $1", cert_id
    )
    return SignedCertificate(
        content=row["content"],
        issuer_signature=IssuerSignature(certificate=row["issuer_certificate"], signature=row["issuer_signature"]),
    )


async def give_up(ctx: Context, order: dict[str, Any]) -> None:
    """Nothing will settle: free the hold (buy) or the nominee certificate (sell)."""
    if order["side"] == "buy":
        ctx.emit(ReleaseHold(hold_id=order["order_id"]), to=SETTLEMENT_ID)
    elif order["cert_id"] is not None:
        await repo.certificate_status(ctx.connection, order["cert_id"], "held")


async def request_certificate(ctx: Context, notice: TradeCompleted) -> None:
    """Message 39 as nominee: the brokerage holds the shares of record for its customers."""
    assert notice.name_transfer_number is not None, "the brokerage trades certificates only"
    ctx.emit(
        CertificateRequestAfterTransfer(
            name_transfer_number=notice.name_transfer_number,
            holder_name=NOMINEE_NAME,
            holder_address=NOMINEE_ADDRESS,
            dividend_delivery=sealed_dividend(
                ctx.trust, ctx.identity.user_id, DividendMethod.SETTLEMENT_ACCOUNT, "brokerage-dividends"
            ),  # R-001-44
        ),
        to=ISSUER_ID,
    )


async def settle_if_done(ctx: Context, order_id: UUID) -> None:
    """An order is done when every execution finished its name transfer and nothing more can fill."""
    conn = ctx.connection
    order = await repo.order(conn, order_id)
    if order is None or order["status"] != "relayed":
        return
    executions = await repo.executions(conn, order_id)
    if any(e["status"] == "executed" for e in executions):
        return  # a name transfer is still under way
    done = [e for e in executions if e["status"] == "completed"]
    filled = sum(e["quantity"] for e in done)
    if filled + order["cancelled_quantity"] < order["quantity"]:
        return  # still working at the exchange, or a fill we have not heard of yet
    if filled == 0:
        await repo.update_order(conn, order_id, status="cancelled", reason="order_cancelled")
        await give_up(ctx, order)
        ctx.emit(
            BrokeredOrderRefused(
                client_order_id=order["client_order_id"],
                reason=BrokerageRefusal.ORDER_CANCELLED,
                detail=f"nothing executed ({order['detail'] or 'cancelled'})",
            ),
            to=order["user_id"],
        )
        return
    await _settle(ctx, order, done)


async def _settle(ctx: Context, order: dict[str, Any], done: list[Any]) -> None:
    conn = ctx.connection
    fees = (await fee_schedule(conn)).schedule
    side = Side(order["side"])
    consideration = sum((e["price"] * e["quantity"] for e in done), Decimal(0))
    quantity = sum(e["quantity"] for e in done)
    commission = fees.commission(consideration)
    tax, fee = fees.consumption_tax(commission), fees.intermediary_fee(commission)
    total = settlement_total(side, consideration, commission, tax)
    funding = funding_of(order)
    rule = MismatchRule(order["rule"])
    customer = await repo.customer(conn, order["customer_id"])
    company = await repo.company(conn, order["company_id"])
    assert customer is not None and company is not None
    try:
        amounts = _allocation(order, side, funding, total, rule)
    except FundingShortfall as exc:
        await repo.update_order(
            conn, order["order_id"], status="settlement_failed", reason="funding_shortfall", detail=str(exc)
        )
        await give_up(ctx, order)
        ctx.emit(
            BrokeredOrderRefused(
                client_order_id=order["client_order_id"], reason=BrokerageRefusal.SETTLEMENT_FAILED, detail=str(exc)
            ),
            to=order["user_id"],
        )
        return
    at_im = {a.account_id: a.at_intermediary for a in customer.accounts}
    legs = settlement_legs(
        side,
        [(a, amount, at_im[a]) for a, amount in amounts],
        company.accounts,
        company.design,
        consideration,
        commission,
        tax,
        fee,
    )
    customer_accounts = {a for a, _ in amounts}
    information = SettlementInformation(
        side=side,
        executed_quantity=quantity,
        average_price=(consideration / quantity).quantize(Decimal("0.0001")),
        consideration=consideration,
        commission=commission,
        consumption_tax=tax,
        intermediary_fee=fee,
        total=total,
        rule=rule,
        design=company.design.value,
        customer=tuple(
            AccountAmount(account=a, amount=amount, means="39" if at_im[a] else "22") for a, amount in amounts
        ),
        institutions=tuple(
            AccountAmount(account=leg.account, amount=leg.amount, means=leg.means)
            for leg in legs
            if leg.account not in customer_accounts
        ),
    )
    if SettlementType(order["settlement_type"]) is SettlementType.REGULAR:
        await deferred.defer(ctx, order, information, legs)
        return
    await repo.update_order(conn, order["order_id"], status="settling", information=information.model_dump_json())
    ctx.emit(
        TradeStatement(
            client_order_id=order["client_order_id"],
            order_id=order["order_id"],
            issue_code=order["issue_code"],
            information=information,
        ),
        to=order["user_id"],
    )
    ctx.emit(
        PostBrokeredSettlement(
            order_id=order["order_id"],
            hold_id=order["order_id"],
            customer=order["user_id"],
            description=f"brokered {side.value} {quantity} {order['issue_code']}",
            legs=legs,
        ),
        to=SETTLEMENT_ID,
    )
    log.info("settlement_information", order_id=str(order["order_id"]), total=str(total), design=company.design.value)


def _allocation(
    order: dict[str, Any], side: Side, funding: tuple[FundingLeg, ...], total: Decimal, rule: MismatchRule
) -> tuple[tuple[str, Decimal], ...]:
    """The mismatch-rule allocation; a regular trade's excess that today's balances cannot take
    is still placed by the rule (issue 11): the customer has until the settlement date to pay it,
    and a customer who does not is a customer fail, not a refused order (R-002-77)."""
    try:
        return allocate(side, funding, total, rule, _limits(order))
    except FundingShortfall:
        if SettlementType(order["settlement_type"]) is not SettlementType.REGULAR:
            raise
        unbounded = {leg.account: total + leg.amount for leg in funding}
        return allocate(side, funding, total, rule, unbounded)


def _limits(order: dict[str, Any]) -> dict[str, Decimal]:
    """What each account can pay: still free, plus this order's hold, which the posting consumes."""
    return {k: Decimal(v) for k, v in json.loads(order["balances"] or "{}").items()}


async def posted(ctx: Context, answer: BrokeredSettlementPosted) -> None:
    """The settlement-completion notice (R-002-49); the customer's position moves; the fee is recorded."""
    conn = ctx.connection
    order = await repo.order(conn, answer.order_id)
    if order is None or order["status"] != "settling":
        return
    information = SettlementInformation.model_validate_json(order["information"])
    await repo.update_order(conn, answer.order_id, status="settled", entry_id=answer.entry_id)
    sign = 1 if information.side is Side.BUY else -1
    await repo.move_position(
        conn, order["customer_id"], order["company_id"], order["issue_code"], sign * information.executed_quantity
    )
    await repo.record_fee(conn, answer.order_id, order["company_id"], information.intermediary_fee, answer.entry_id)
    ctx.emit(
        BrokeredSettlementCompleted(
            client_order_id=order["client_order_id"],
            order_id=answer.order_id,
            entry_id=answer.entry_id,
            released=answer.released,
        ),
        to=order["user_id"],
    )
    ctx.emit(
        BrokeredTradeSettled(
            order_id=answer.order_id,
            issue_code=order["issue_code"],
            side=information.side,
            executed_quantity=information.executed_quantity,
            consideration=information.consideration,
            commission=information.commission,
            consumption_tax=information.consumption_tax,
            intermediary_fee=information.intermediary_fee,
            design=information.design,
            entry_id=answer.entry_id,
        )
    )


async def posting_failed(ctx: Context, answer: BrokeredSettlementFailed) -> None:
    order = await repo.order(ctx.connection, answer.order_id)
    if order is None:
        return
    if order["settlement_date"] is not None and answer.reason == "insufficient_funds":
        await deferred.customer_fail(ctx, order, answer.detail)
        return
    await repo.update_order(
        ctx.connection, answer.order_id, status="settlement_failed", reason=answer.reason, detail=answer.detail
    )
    ctx.emit(
        BrokeredOrderRefused(
            client_order_id=order["client_order_id"],
            reason=BrokerageRefusal.SETTLEMENT_FAILED,
            detail=f"{answer.reason}: {answer.detail}",
        ),
        to=order["user_id"],
    )
