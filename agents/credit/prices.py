"""The line's prices come from the exchange (R-003-25): it subscribes once and keeps each
issue's last trade and previous close as the exchange's ``market.price_update`` tell them."""

from __future__ import annotations

from agents.credit import line_repo
from broker import logs
from broker.context import Context
from schemas.identity import EXCHANGE_ID
from schemas.prices import PriceUpdate, SubscribePrices

log = logs.get("kabuto.credit.prices")


async def on_price_update(update: PriceUpdate, ctx: Context) -> None:
    await line_repo.store_price(
        ctx.connection,
        update.issue_code,
        update.reference_price,
        update.last_price,
        update.last_traded_at,
        update.previous_close,
        update.closed_at,
        ctx.now,
    )
    log.info("price_received", issue_code=update.issue_code, kind=update.kind.value, last=str(update.last_price))


async def subscribe(ctx: Context) -> None:
    """A command: ask the exchange for every price from now on (idempotent at the exchange)."""
    ctx.emit(SubscribePrices(), to=EXCHANGE_ID)
