"""The brokerage's price information comes from the exchange (design flow 5): it subscribes when
it starts and keeps each issue's reference price (the base of the daily price limits, hence of
the allowance for market orders) and last price as the exchange's ``market.price_update`` tell.
``kabuto brokerage price`` stays for an issue the exchange has not listed yet."""

from __future__ import annotations

import asyncio

from agents.brokerage import repo
from broker import logs
from broker.context import Context
from broker.runtime import AgentRuntime
from schemas.identity import EXCHANGE_ID
from schemas.prices import PriceUpdate, SubscribePrices

log = logs.get("kabuto.brokerage")


async def on_price_update(update: PriceUpdate, ctx: Context) -> None:
    await repo.set_price(ctx.connection, update.issue_code, update.reference_price)
    if update.last_price is not None:
        await repo.last_price(ctx.connection, update.issue_code, update.last_price)
    log.info("price_received", issue_code=update.issue_code, kind=update.kind.value)


async def _subscribe(ctx: Context) -> None:
    ctx.emit(SubscribePrices(), to=EXCHANGE_ID)


async def subscribe_prices(runtime: AgentRuntime) -> None:
    """Background: ask the exchange for every price once per start (the exchange keeps subscribers).

    A supervised task runs until cancelled (``broker.supervision``), so it then stays; when the
    supervisor restarts it after an outage it subscribes again, which the exchange absorbs.
    """
    async with runtime.round_of(subscribe_prices):
        await runtime.command(runtime.id, _subscribe)
    await asyncio.Event().wait()
