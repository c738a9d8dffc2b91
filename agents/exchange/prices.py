"""The exchange's prices as events: every last price, each day's close, and subscribers.

Integrators get ``market.last_price`` and ``market.close`` on the topic exchange; the
participants that subscribed (the credit holder, the brokerage) get the same facts as
``market.price_update`` messages, so they use the exchange's prices instead of their own
copies. At the close the reference price — the base of the daily price limits — rolls to the
day's close: the last trade's price, or the old reference price when nothing traded.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import asyncpg

from agents.exchange import order_repo
from broker import logs
from broker.context import Context
from schemas.catalogue import Message
from schemas.prices import DailyClose, LastPrice, PriceKind, PriceUpdate, SubscribePrices

log = logs.get("kabuto.exchange")


@dataclass(frozen=True, slots=True)
class Quote:
    issue_code: str
    reference_price: Decimal
    last_price: Decimal | None
    last_traded_at: datetime | None
    previous_close: Decimal | None
    closed_at: datetime | None

    @property
    def traded_since_close(self) -> bool:
        return self.last_traded_at is not None and (self.closed_at is None or self.last_traded_at > self.closed_at)

    def update(self, kind: PriceKind) -> PriceUpdate:
        return PriceUpdate(
            kind=kind,
            issue_code=self.issue_code,
            reference_price=self.reference_price,
            last_price=self.last_price,
            last_traded_at=self.last_traded_at,
            previous_close=self.previous_close,
            closed_at=self.closed_at,
        )


_QUOTE_FIELDS = ("issue_code", "reference_price", "last_price", "last_traded_at", "previous_close", "closed_at")
_QUOTE_COLUMNS = ", ".join(_QUOTE_FIELDS)
_QUOTE = f"SELECT {_QUOTE_COLUMNS} FROM instruments"


def _quote(row: asyncpg.Record) -> Quote:
    """A quote from a row that has the quote's columns (and maybe others)."""
    return Quote(**{name: row[name] for name in _QUOTE_FIELDS})


async def _quotes(connection: asyncpg.Connection, issue_code: str | None = None) -> list[Quote]:
    if issue_code is None:
        rows = await connection.fetch(_QUOTE + " ORDER BY issue_code FOR UPDATE")
    else:
        rows = await connection.fetch(_QUOTE + " WHERE issue_code = $1", issue_code)
    return [_quote(r) for r in rows]


async def _subscribers(connection: asyncpg.Connection) -> list[str]:
    return [r["participant"] for r in await connection.fetch("SELECT participant FROM price_subscribers ORDER BY 1")]


async def on_subscribe(_: SubscribePrices, ctx: Context) -> None:
    """Remember the subscriber and send it every listed issue's prices now."""
    assert ctx.sender is not None
    subscriber = ctx.sender.user_id
    await ctx.connection.execute(
        "INSERT INTO price_subscribers (participant) VALUES ($1) ON CONFLICT DO NOTHING", subscriber
    )
    for quote in await _quotes(ctx.connection):
        ctx.emit(quote.update(PriceKind.SNAPSHOT), to=subscriber)
    log.info("price_subscriber_added", subscriber=subscriber)


def listed(issue_code: str, share_class: str, reference: Decimal) -> Callable[[Context], Awaitable[None]]:
    """A command: list an issue (or set its reference price) and tell the subscribers."""

    async def action(ctx: Context) -> None:
        await order_repo.list_instrument(ctx.connection, issue_code, share_class, reference)
        (quote,) = await _quotes(ctx.connection, issue_code)
        for subscriber in await _subscribers(ctx.connection):
            ctx.emit(quote.update(PriceKind.SNAPSHOT), to=subscriber)

    return action


class Conflation:
    """Within one group-committed batch, an issue's last price is announced once, at the
    batch's end, with the price of its last trade there (issue 8: the price event and the
    subscribers' updates were three signed messages per trade). Market data is conflated, as
    feeds are: the last price is what subscribers need, and every trade is still its own
    ``trade.executed`` event. Outside a batch run all at once (a delivery alone, or a batch run
    again with a savepoint each) every trade is announced at once."""

    def __init__(self) -> None:
        self._pending: ContextVar[dict[str, tuple[Context, Decimal]] | None] = ContextVar("prices", default=None)

    @asynccontextmanager
    async def batch(self, _: asyncpg.Connection, __: Sequence[Message]) -> AsyncIterator[None]:
        pending: dict[str, tuple[Context, Decimal]] = {}
        reset = self._pending.set(pending)
        try:
            yield
            for issue_code, (ctx, price) in pending.items():  # announced by the delivery of its last trade
                await _announce(ctx, issue_code, price)
        finally:
            self._pending.reset(reset)

    async def trade(self, ctx: Context, issue_code: str, price: Decimal) -> None:
        pending = self._pending.get()
        if pending is None:
            await _announce(ctx, issue_code, price)
        else:
            pending.pop(issue_code, None)  # keep the issues in the order of their last trades
            pending[issue_code] = (ctx, price)


PRICES = Conflation()


async def announce_trade(ctx: Context, issue_code: str, price: Decimal) -> None:
    """An execution at ``price``: announced now, or at the end of its batch (``Conflation``)."""
    await PRICES.trade(ctx, issue_code, price)


async def _announce(ctx: Context, issue_code: str, price: Decimal) -> None:
    """The issue's last price recorded, the event, and each subscriber's update — one round
    trip for the record, the quote and the subscribers."""
    row = await ctx.connection.fetchrow(
        f"""UPDATE instruments SET last_price = $2, last_traded_at = now() WHERE issue_code = $1
            RETURNING {_QUOTE_COLUMNS}, ARRAY(SELECT participant FROM price_subscribers ORDER BY 1) AS subscribers""",
        issue_code,
        price,
    )
    assert row is not None  # an execution is of a listed issue
    quote = _quote(row)
    assert quote.last_traded_at is not None
    ctx.emit(LastPrice(issue_code=issue_code, price=price, traded_at=quote.last_traded_at))
    for subscriber in row["subscribers"]:
        ctx.emit(quote.update(PriceKind.LAST_TRADE), to=subscriber)


async def close_day(ctx: Context) -> int:
    """Each issue's close; the reference price rolls to it. Returns how many issues closed."""
    quotes = await _quotes(ctx.connection)
    subscribers = await _subscribers(ctx.connection)
    for quote in quotes:
        traded = quote.traded_since_close and quote.last_price is not None
        close = quote.last_price if traded and quote.last_price is not None else quote.reference_price
        await ctx.connection.execute(
            """UPDATE instruments SET previous_close = $2, closed_at = $3, reference_price = $2
               WHERE issue_code = $1""",
            quote.issue_code,
            close,
            ctx.now,
        )
        ctx.emit(DailyClose(issue_code=quote.issue_code, close=close, closed_at=ctx.now, traded_today=traded))
        closed = Quote(quote.issue_code, close, quote.last_price, quote.last_traded_at, close, ctx.now)
        for subscriber in subscribers:
            ctx.emit(closed.update(PriceKind.CLOSE), to=subscriber)
    log.info("day_closed", issues=len(quotes))
    return len(quotes)
