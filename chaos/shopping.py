"""Card purchases on securities-backed credit during the waves (seed 003, flow 5), so that the
credit agent — the line and the card issuer it hosts — and custody's collateral locks work
through every fault, kill -9 of either included.

Each purchase is above the card's limit: the card issuer asks the line, the line values the
shopper's shares at custody and locks them there for the secured part, the card issuer
approves; the merchant captures (the card issuer pays it through settlement), the shopper
repays in full (settlement debits the shopper's account), and the line releases the lock.
The suite plays a patient merchant and card holder: it sends a request or a capture again if
nothing moved for ``RESEND_AFTER`` seconds (the card issuer answers a repeated purchase id
with what it decided, and refuses a second capture without effect), and repays once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

import aio_pika
import asyncpg

from agents.credit import card_issuer, operators
from agents.credit.domain import Band, CardType, Method
from agents.exchange.trading import end_of_day
from agents.merchant.client import MerchantTerminal
from agents.settlement import app as settlement
from agents.settlement import mandates
from agents.settlement.domain import AccountKind
from broker.context import Context
from chaos.driver import OUTAGE, Driver, deposit_at_custody, until
from chaos.invariants import (
    CARD,
    CARD_ISSUER_CASH,
    CARD_LIMIT,
    CASH_ACCOUNT,
    ISSUE,
    LINE_CASH,
    MERCHANT,
    PURCHASE,
    SAFEKEEPING,
    SHOPPER,
    Market,
)
from schemas.identity import CARD_ISSUER_ID, CREDIT_ID

RESEND_AFTER = 10.0


async def open_credit(driver: Driver, db: asyncpg.Connection, market: Market) -> None:
    """The shopper's card, cash and shares at custody, the line's contract and the price of the
    issue at the credit agent (the exchange's previous close, before any order is placed)."""
    institution = AccountKind.INSTITUTION
    await driver.command("settlement", "settlement", settlement.open_account(LINE_CASH, CREDIT_ID, kind=institution))
    await driver.command(
        "settlement", "settlement", settlement.open_account(CARD_ISSUER_CASH, CARD_ISSUER_ID, kind=institution)
    )
    for owner in (SHOPPER, MERCHANT):
        await driver.command("settlement", "settlement", settlement.open_account(CASH_ACCOUNT[owner], owner))
    shopper_cash = CASH_ACCOUNT[SHOPPER]
    await driver.command(
        "settlement", "settlement", settlement.deposit(shopper_cash, market.shopper_deposit, "chaos-shopper")
    )
    consents = ((CASH_ACCOUNT[MERCHANT], CARD_ISSUER_ID), (shopper_cash, CARD_ISSUER_ID), (shopper_cash, CREDIT_ID))
    for account, agent in consents:
        await driver.command("settlement", "settlement", mandates.grant(account, agent))
    await deposit_at_custody(driver, db, SHOPPER, SAFEKEEPING[SHOPPER], market.shopper_shares)
    await _price_at_the_line(driver, db)
    card = operators.open_card(CARD, SHOPPER, CardType.CREDIT, CARD_LIMIT, shopper_cash)
    await driver.command("credit", CARD_ISSUER_ID, operators.issuer_policy(CARD_ISSUER_CASH, timedelta(days=1)))
    await driver.command("credit", CARD_ISSUER_ID, card)
    day = timedelta(days=1)
    policy = operators.line_policy(LINE_CASH, current_within=day, inquiry_timeout=timedelta(minutes=5))
    await driver.command("credit", CREDIT_ID, policy)
    contract = operators.contract(SHOPPER, Method.RATING, shopper_cash, (CARD,), ("custody",))
    await driver.command("credit", CREDIT_ID, contract)
    await driver.command("credit", CREDIT_ID, operators.haircut_bands((Band(0, None, Decimal("0.8")),)))
    await driver.command("credit", CREDIT_ID, operators.rating(ISSUE, "AA", Decimal("1.0")))


async def _price_at_the_line(driver: Driver, db: asyncpg.Connection) -> None:
    """The exchange closes the day (no order is open yet) and its close reaches the credit agent."""

    async def subscribed() -> bool:
        return bool(
            await db.fetchval("SELECT count(*) FROM exchange.price_subscribers WHERE participant = $1", CREDIT_ID)
        )

    await until(subscribed, time.monotonic() + 120, "the credit agent subscribed to prices")
    await driver.command("exchange", "exchange", end_of_day)

    async def priced() -> bool:
        closed = "SELECT previous_close FROM credit.prices WHERE issue_code = $1"
        return await db.fetchval(closed, ISSUE) is not None

    await until(priced, time.monotonic() + 120, "the exchange's close at the credit agent")


async def purchase(driver: Driver, shop: MerchantTerminal, n: int, deadline: float) -> None:
    """Purchase ``p<n>`` from request to repayment and the lock's release, or until ``deadline``
    (what is then unfinished is the invariants' to report)."""
    purchase_id = f"p{n}"
    db = await driver.books()
    try:
        await _resend_until(  # a refusal is never approved: the invariants report it at the deadline
            lambda: shop.request_purchase(purchase_id, CARD, PURCHASE, "chaos"),
            lambda: _status_is(db, purchase_id, "approved"),
            deadline,
        )
        await _resend_until(
            lambda: shop.capture(purchase_id, CASH_ACCOUNT[MERCHANT]),
            lambda: _status_is(db, purchase_id, "captured"),
            deadline,
        )
        await driver.command("credit", CARD_ISSUER_ID, _repay_once(purchase_id))
        await until(lambda: _released(db, purchase_id), deadline, f"purchase {purchase_id} repaid and released")
    except TimeoutError:
        return


# What a send raises while the broker is away: the outages, and any AMQP error of a session
# being torn down.
_BROKER_AWAY: tuple[type[BaseException], ...] = (*OUTAGE, aio_pika.exceptions.AMQPError)


async def _resend_until(
    send: Callable[[], Awaitable[Any]], done: Callable[[], Awaitable[bool]], deadline: float
) -> None:
    """Send, then look every 0.5 s until ``done``; send again after ``RESEND_AFTER`` s of nothing."""
    while time.monotonic() < deadline:
        try:
            await send()
        except _BROKER_AWAY:
            await asyncio.sleep(0.5)  # the broker is away: a merchant's retry, bounded by the deadline
            continue
        try:
            await until(done, min(deadline, time.monotonic() + RESEND_AFTER), "answered")
            return
        except TimeoutError:
            continue
    raise TimeoutError


def _repay_once(purchase_id: str) -> Callable[[Context], Awaitable[UUID | None]]:
    """The shopper repays everything once: nothing if a repayment was already asked."""

    async def action(ctx: Context) -> UUID | None:
        row = await ctx.connection.fetchrow(
            """SELECT a.authorisation_id, a.price, count(r.attempt_id) AS asked FROM authorisations a
               LEFT JOIN repayments r USING (authorisation_id)
               WHERE a.merchant = $1 AND a.purchase_id = $2 GROUP BY a.authorisation_id""",
            MERCHANT,
            purchase_id,
        )
        if row is None or row["asked"]:
            return None
        repaid: UUID = await card_issuer.repay(row["authorisation_id"], row["price"])(ctx)
        return repaid

    return action


async def _status_is(db: asyncpg.Pool, purchase_id: str, *statuses: str) -> bool:
    found = await db.fetchval(
        "SELECT status FROM credit.authorisations WHERE merchant = $1 AND purchase_id = $2", MERCHANT, purchase_id
    )
    return found in statuses


async def _released(db: asyncpg.Pool, purchase_id: str) -> bool:
    row = await db.fetchrow(
        """SELECT a.status, count(c.lock_id) FILTER (WHERE c.status <> 'released') AS held
           FROM credit.authorisations a LEFT JOIN credit.collateral c ON c.obligation_id = a.authorisation_id
           WHERE a.merchant = $1 AND a.purchase_id = $2 GROUP BY a.status""",
        MERCHANT,
        purchase_id,
    )
    return row is not None and row["status"] == "repaid" and row["held"] == 0
