"""The exchange's prices as events: every last price, each day's close, and subscribers.

Integrators get ``market.last_price`` and ``market.close`` on the topic exchange; the
participants that subscribed (the credit holder, the brokerage) get the same facts as
``market.price_update`` messages, so they use the exchange's prices instead of their own
copies. At the close the reference price — the base of the daily price limits — rolls to the
day's close: the last trade's price, or the old reference price when nothing traded.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager, suppress
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from uuid import UUID

import asyncpg

from agents.exchange import order_repo
from agents.exchange.warm_book import BOOKS, ROWS_WRITTEN
from broker import logs
from broker.context import Context
from broker.progress import stopping
from broker.runtime import AgentRuntime
from broker.settings import Settings
from schemas.catalogue import Message
from schemas.identity import EXCHANGE_ID
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
    """Market data is conflated, as feeds are: subscribers need the last price, not every one.

    * **Within a group-committed batch** an issue's last price is recorded and announced once,
      at the batch's end, with the price of its last trade there (the price event and the
      subscribers' updates were three signed messages per trade). Every trade is still its own
      ``trade.executed`` event. Outside a batch run all at once (a delivery alone, or a batch
      run again with a savepoint each) every trade is recorded at once.
    * **In time**: the integrators' ``market.last_price`` event goes with every record, but a
      subscriber is sent an issue's last price at most once per ``interval``
      (``KABUTO_PRICE_INTERVAL``; R-003-25 allows a delayed price). A price recorded within the
      interval is held back, owed (``instruments.price_owed``, in the trade's transaction), and
      the background job ``announce_owed`` sends the issue's last price then — the latest
      always, whatever came between. Under load that is one update per issue and interval
      instead of one per batch: at a few trades a batch, every batch's update was two more
      signed messages and two more transactions at the subscribers (docs/performance.md,
      stop 30). An exchange stopped with an update owed sends it when it starts again.
    """

    def __init__(self) -> None:
        self._pending: ContextVar[dict[str, tuple[Context, Decimal]] | None] = ContextVar("prices", default=None)
        # Set from the settings by ``announce_owed`` when the exchange starts.
        self.interval = Settings().price_interval
        self._owed: dict[str, float] = {}  # issue → when (monotonic) its held-back update is due
        self._listeners: set[asyncio.Event] = set()
        self.gave_way = 0  # rounds of the job that found a row held, to try it again: for the tests

    @asynccontextmanager
    async def batch(self, _: asyncpg.Connection, __: Sequence[Message]) -> AsyncIterator[None]:
        pending: dict[str, tuple[Context, Decimal]] = {}
        reset = self._pending.set(pending)
        try:
            yield
            # Announced by the delivery of its last trade, with the batch's seal when the books
            # are sealed (one write of the instrument rows where it was two), else on their own.
            if pending and not BOOKS.seal_with(functools.partial(_announce_sealing, dict(pending))):
                for issue_code, (ctx, price) in pending.items():
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

    def owe(self, issue_code: str, wait: float) -> None:
        """The issue's update was held back: due in ``wait`` seconds (the earliest, if owed twice).
        A hint only: what is owed is what the database says when it is due."""
        due = time.monotonic() + max(wait, 0.0)
        self._owed[issue_code] = min(due, self._owed.get(issue_code, due))
        for listener in self._listeners:
            listener.set()

    @contextmanager
    def listening(self, wake: asyncio.Event) -> Iterator[None]:
        """``wake`` is set whenever an update is held back, while inside."""
        self._listeners.add(wake)
        try:
            yield
        finally:
            self._listeners.discard(wake)

    async def due(self, wake: asyncio.Event) -> list[str]:
        """Wait until held-back updates are due (``wake`` being this waiter's ``listening``);
        the issues due, no longer counted as owed here."""
        while True:
            if stopping():
                raise asyncio.CancelledError
            now = time.monotonic()
            if due := [issue for issue, at in self._owed.items() if at <= now]:
                for issue in due:
                    del self._owed[issue]
                return due
            wake.clear()
            first = min(self._owed.values(), default=None)
            with suppress(TimeoutError):
                async with asyncio.timeout(None if first is None else first - now):
                    await wake.wait()


PRICES = Conflation()


async def announce_trade(ctx: Context, issue_code: str, price: Decimal) -> None:
    """An execution at ``price``: recorded now, or at the end of its batch (``Conflation``)."""
    await PRICES.trade(ctx, issue_code, price)


# The last price recorded, and whether its subscribers are sent it now or owed it: the
# columns an execution writes to its issue's row, for ``price`` at ``m.at`` (the clock's moment),
# with ``interval`` between two updates sent.
_PRICED = """last_price = {price}, last_traded_at = m.at,
    price_owed = {interval} > interval '0' AND announced_at IS NOT NULL AND m.at < announced_at + {interval},
    announced_at = CASE WHEN {interval} > interval '0' AND announced_at IS NOT NULL
                             AND m.at < announced_at + {interval}
                        THEN announced_at ELSE m.at END"""
_PRICED_RETURNING = f"""{_QUOTE_COLUMNS}, price_owed,
    extract(epoch FROM announced_at + {{interval}} - m.at)::float8 AS wait,
    ARRAY(SELECT participant FROM price_subscribers ORDER BY 1) AS subscribers"""
_ANNOUNCE = f"""WITH moment AS (SELECT clock_timestamp() AS at)
    UPDATE instruments SET {_PRICED.format(price="$2", interval="$3::interval")}
    FROM moment m WHERE issue_code = $1
    RETURNING {_PRICED_RETURNING.format(interval="$3::interval")}"""
# A batch's last prices ($1, $2) written with its books' seal ($4, $5: each issue's new token;
# warm_book.py), each row once, and the order rows the batch wrote as the database counted them.
_ANNOUNCE_SEALING = f"""WITH moment AS (SELECT clock_timestamp() AS at),
    priced AS (
        UPDATE instruments SET {_PRICED.format(price="p.price", interval="$3::interval")},
            book_token = CASE WHEN s.token IS NULL THEN book_token ELSE s.token END
        FROM moment m, unnest($1::text[], $2::numeric[]) AS p (p_issue, price)
            LEFT JOIN unnest($4::text[], $5::uuid[]) AS s (s_issue, token) ON s.s_issue = p.p_issue
        WHERE issue_code = p.p_issue
        RETURNING {_PRICED_RETURNING.format(interval="$3::interval")}),
    sealed AS (
        UPDATE instruments SET book_token = s.token FROM unnest($4::text[], $5::uuid[]) AS s (s_issue, token)
        WHERE issue_code = s.s_issue AND NOT (s.s_issue = ANY($1::text[])))
    SELECT priced.*, {ROWS_WRITTEN} AS rows_written FROM (SELECT) AS one LEFT JOIN priced ON true"""


async def _announce(ctx: Context, issue_code: str, price: Decimal) -> None:
    """The issue's last price recorded and the event; each subscriber's update too, unless the
    last went out less than the interval ago: then it is owed. One round trip for all of it.

    The trade's moment is the clock's, not the transaction's: two prices recorded in one
    transaction (a batch run again a savepoint each) get two moments, so a subscriber, who keeps
    the newest (``line_repo.store_price``), keeps the later price rather than the first."""
    row = await ctx.connection.fetchrow(_ANNOUNCE, issue_code, price, PRICES.interval)
    assert row is not None  # an execution is of a listed issue
    _told(ctx, issue_code, price, row)


async def _announce_sealing(
    pending: dict[str, tuple[Context, Decimal]],
    connection: asyncpg.Connection,
    tokens: dict[str, UUID],
    check: Callable[[int], None],
) -> None:
    """``_announce`` for each issue of a batch (``pending``, in the order of their last trades),
    in the statement that seals the batch's books (``warm_book.Sealer``)."""
    issues = list(pending)
    rows = await connection.fetch(
        _ANNOUNCE_SEALING,
        issues,
        [price for _, price in pending.values()],
        PRICES.interval,
        list(tokens),
        list(tokens.values()),
    )
    check(rows[0]["rows_written"])
    priced = {row["issue_code"]: row for row in rows if row["issue_code"] is not None}
    for issue_code, (ctx, price) in pending.items():
        _told(ctx, issue_code, price, priced[issue_code])  # an execution is of a listed issue


def _told(ctx: Context, issue_code: str, price: Decimal, row: asyncpg.Record) -> None:
    """The event of ``price`` recorded as ``row`` says, and each subscriber's update, or the update owed."""
    quote = _quote(row)
    assert quote.last_traded_at is not None
    ctx.emit(LastPrice(issue_code=issue_code, price=price, traded_at=quote.last_traded_at))
    if row["price_owed"]:
        PRICES.owe(issue_code, row["wait"])
        return
    for subscriber in row["subscribers"]:
        ctx.emit(quote.update(PriceKind.LAST_TRADE), to=subscriber)


async def announce_owed(runtime: AgentRuntime) -> None:
    """A background job: each held-back update sent when it is due (``Conflation``); when the
    exchange starts, every update a stop left owed. An issue whose row another transaction
    holds is tried again an interval later (``retry_held``); the others go."""
    PRICES.interval = runtime.settings.price_interval
    wake = asyncio.Event()
    with PRICES.listening(wake):
        issues: list[str] | None = None  # every issue owed
        while True:
            async with runtime.round_of(announce_owed):
                done = await runtime.command(EXCHANGE_ID, functools.partial(send_owed, issue_codes=issues))
            if done.held:
                PRICES.gave_way += 1
                log.debug("owed_prices_held", issues=done.held)
                for issue_code in done.held:
                    PRICES.owe(issue_code, retry_held(PRICES.interval))
            issues = await PRICES.due(wake)


def retry_held(interval: timedelta) -> float:
    """Seconds before the job tries again an issue whose row another transaction held: a batch
    (which, if it trades the issue past the interval, announces it itself) or the trade that owes
    it, not committed yet. An interval, not sooner: under load the issue's row is held most of
    the time, and the job would take a transaction every few milliseconds to find it held."""
    return max(interval.total_seconds(), 0.01)


@dataclass(frozen=True, slots=True)
class OwedSent:
    sent: list[str]  # the issues whose owed update went out
    held: list[str]  # the issues another transaction held: not looked at


async def send_owed(ctx: Context, issue_codes: Sequence[str] | None = None) -> OwedSent:
    """A command: the subscribers sent every update owed to them, of ``issue_codes`` (None: of
    every issue owed now).

    The rows are locked first, by issue code alone, skipping any another transaction holds: no
    wait, so no deadlock with a batch that locks its issues as its orders come, and one held
    issue holds back no other. Whether an issue is owed is judged on the row as its lock found
    it, not on the statement's snapshot: a trade owing it may have committed only a moment ago,
    and a judgement on a snapshot from before the lock would skip it, the update lost (found by
    review). ``FOR UPDATE`` returns the newest version of the row it locks (PostgreSQL's
    read-committed re-check), and the update follows that version too: one statement (``_SEND_OWED``)
    where it was a lock and then a read."""
    connection = ctx.connection
    if issue_codes is None:
        issue_codes = [r["issue_code"] for r in await connection.fetch(_OWED)]
    if not issue_codes:
        return OwedSent([], [])
    rows = await connection.fetch(_SEND_OWED, list(issue_codes))
    sent = [row for row in rows if row["sent"]]
    for row in sent:
        quote = _quote(row)
        for subscriber in row["subscribers"]:
            ctx.emit(quote.update(PriceKind.LAST_TRADE), to=subscriber)
    if sent:
        log.info("owed_prices_sent", issues=len(sent))
    held = sorted(set(issue_codes) - {row["locked"] for row in rows})
    return OwedSent([row["issue_code"] for row in sent], held)


# The issues ``$1`` locked, skipping those another transaction holds, and each one owed sent:
# a row per issue locked (``locked``), with the quote and the subscribers where it was sent.
_SEND_OWED = f"""WITH locked AS (
        SELECT issue_code, price_owed FROM instruments WHERE issue_code = ANY($1::text[])
        ORDER BY issue_code FOR UPDATE SKIP LOCKED),
    sent AS (
        UPDATE instruments i SET price_owed = false, announced_at = clock_timestamp()
        FROM locked l WHERE i.issue_code = l.issue_code AND l.price_owed
        RETURNING {", ".join(f"i.{c}" for c in _QUOTE_FIELDS)},
            ARRAY(SELECT participant FROM price_subscribers ORDER BY 1) AS subscribers)
    SELECT l.issue_code AS locked, s.issue_code IS NOT NULL AS sent, s.*
    FROM locked l LEFT JOIN sent s ON s.issue_code = l.issue_code ORDER BY l.issue_code"""
_OWED = "SELECT issue_code FROM instruments WHERE price_owed ORDER BY issue_code"


async def close_day(ctx: Context) -> int:
    """Each issue's close; the reference price rolls to it. Returns how many issues closed."""
    quotes = await _quotes(ctx.connection)
    subscribers = await _subscribers(ctx.connection)
    for quote in quotes:
        traded = quote.traded_since_close and quote.last_price is not None
        close = quote.last_price if traded and quote.last_price is not None else quote.reference_price
        await ctx.connection.execute(  # the close carries the last price: nothing is owed after it
            """UPDATE instruments SET previous_close = $2, closed_at = $3, reference_price = $2,
                   price_owed = false, announced_at = clock_timestamp()
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
