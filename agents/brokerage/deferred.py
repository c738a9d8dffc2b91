"""Regular ("4th-day") brokered trades settle their customer legs on the intended settlement date
(issue 11; seed 002 §7.3, R-002-72..77). The street trade already settled at the exchange, the
brokerage holding the shares as nominee; until the date the customer's hold stays, revised to
what the settlement information will debit (S22). On or after the date the due legs are posted;
a customer who cannot pay is a recorded customer fail — never a refused order — retried until
the cut-off, after which the nominee keeps the position and the amount stays owed."""

from __future__ import annotations

import json
import os
from datetime import date
from typing import Any

from agents.brokerage import repo
from agents.brokerage.settlement_date import cut_off, holidays, settlement_date
from broker import logs
from broker.context import Context
from broker.progress import pause
from broker.runtime import AgentRuntime
from schemas.brokerage import (
    CustomerSettlementStatus,
    HoldLeg,
    LedgerLeg,
    PostBrokeredSettlement,
    ReleaseHold,
    ReviseHold,
    SettlementInformation,
    TradeStatement,
)
from schemas.identity import SETTLEMENT_ID
from schemas.trading import Side

log = logs.get("kabuto.brokerage")
LACK_OF_CASH = "lack_of_cash"
DUE = ("awaiting_settlement_date", "customer_fail")


async def defer(
    ctx: Context, order: dict[str, Any], information: SettlementInformation, legs: tuple[LedgerLeg, ...]
) -> None:
    """Keep the legs for the date, tell the customer the date, and hold exactly the allocation."""
    closed = holidays()
    due = settlement_date(ctx.now.date(), closed)
    await repo.update_order(
        ctx.connection,
        order["order_id"],
        status="awaiting_settlement_date",
        information=information.model_dump_json(),
        legs=json.dumps([leg.model_dump(mode="json") for leg in legs]),
        settlement_date=due,
        cut_off=cut_off(due, closed),
    )
    _statement(ctx, order, information, due, CustomerSettlementStatus.AWAITING_SETTLEMENT_DATE)
    if information.side is Side.BUY:
        revised = tuple(HoldLeg(account=a.account, amount=a.amount) for a in information.customer if a.amount > 0)
        ctx.emit(ReviseHold(hold_id=order["order_id"], legs=revised), to=SETTLEMENT_ID)
    log.info("settlement_deferred", order_id=str(order["order_id"]), settlement_date=due.isoformat())


async def settle_due(ctx: Context, as_of: date) -> int:
    """Post every customer settlement due on ``as_of``; a fail past its cut-off is closed. Returns
    how many postings were sent."""
    rows = await ctx.connection.fetch(
        """SELECT * FROM orders WHERE status = ANY($1::text[]) AND settlement_date <= $2
           ORDER BY settlement_date, created_at FOR UPDATE SKIP LOCKED""",
        list(DUE),
        as_of,
    )
    sent = 0
    for order in map(dict, rows):
        if order["status"] == "customer_fail" and as_of > order["cut_off"]:
            await _past_cut_off(ctx, order)
            continue
        legs = tuple(LedgerLeg.model_validate(leg) for leg in json.loads(order["legs"]))
        information = SettlementInformation.model_validate_json(order["information"])
        await repo.update_order(
            ctx.connection, order["order_id"], status="settling", attempts=order["attempts"] + 1, last_attempt_on=as_of
        )
        ctx.emit(
            PostBrokeredSettlement(
                order_id=order["order_id"],
                hold_id=order["order_id"],
                customer=order["user_id"],
                description=f"brokered {information.side.value} {information.executed_quantity} {order['issue_code']}"
                f" due {order['settlement_date'].isoformat()}",
                legs=legs,
                keep_hold_on_shortfall=True,
            ),
            to=SETTLEMENT_ID,
        )
        sent += 1
    return sent


async def customer_fail(ctx: Context, order: dict[str, Any], detail: str) -> None:
    """The customer could not pay on the day: recorded, the hold kept, retried until the cut-off."""
    information = SettlementInformation.model_validate_json(order["information"])
    first = order["failed_on"] is None
    await repo.update_order(
        ctx.connection,
        order["order_id"],
        status="customer_fail",
        fail_reason=LACK_OF_CASH,
        fail_amount=information.total,
        failed_on=order["failed_on"] or order["last_attempt_on"],
        detail=detail,
    )
    if first:
        _statement(ctx, order, information, order["settlement_date"], CustomerSettlementStatus.CUSTOMER_FAIL)
    log.info("customer_fail", order_id=str(order["order_id"]), attempts=order["attempts"], detail=detail)


async def _past_cut_off(ctx: Context, order: dict[str, Any]) -> None:
    """Past the cut-off the brokerage stops retrying: the hold is freed, the nominee keeps the
    shares, and the amount stays recorded as owed by the customer."""
    information = SettlementInformation.model_validate_json(order["information"])
    await repo.update_order(ctx.connection, order["order_id"], status="customer_failed")
    ctx.emit(ReleaseHold(hold_id=order["order_id"]), to=SETTLEMENT_ID)
    _statement(ctx, order, information, order["settlement_date"], CustomerSettlementStatus.CUSTOMER_FAILED)
    log.info("customer_failed", order_id=str(order["order_id"]), owed=str(information.total))


def _statement(
    ctx: Context,
    order: dict[str, Any],
    information: SettlementInformation,
    due: date,
    status: CustomerSettlementStatus,
) -> None:
    failed = status in (CustomerSettlementStatus.CUSTOMER_FAIL, CustomerSettlementStatus.CUSTOMER_FAILED)
    ctx.emit(
        TradeStatement(
            client_order_id=order["client_order_id"],
            order_id=order["order_id"],
            issue_code=order["issue_code"],
            information=information,
            settlement_date=due,
            settlement_status=status,
            fail_amount=information.total if failed else None,
        ),
        to=order["user_id"],
    )


def interval() -> float:
    return float(os.environ.get("KABUTO_BROKERAGE_SETTLE_INTERVAL", "60"))


async def settle_due_job(runtime: AgentRuntime) -> None:
    """Background: post what is due today, every ``KABUTO_BROKERAGE_SETTLE_INTERVAL`` seconds.
    A malformed holiday list or interval stops the agent at start, not at the first trade."""
    holidays()
    interval()
    while True:
        async with runtime.round_of(settle_due_job):
            sent = await runtime.command(runtime.id, lambda ctx: settle_due(ctx, ctx.now.date()))
        if sent:
            log.info("settle_due", sent=sent)
        await pause(interval())
