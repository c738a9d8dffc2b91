"""SQL for the exchange's orders and its order matching list; records never leave this module.

Every accepted order is a row; the open ones, in priority order, are the unexecuted-order
queue (seed 001 §3.9) from which the book is rebuilt for each decision, so a restart at any
moment brings the book back exactly as committed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from uuid import UUID

import asyncpg

from agents.exchange.acceptance import Books, Instrument
from agents.exchange.book import Execution, Order, OrderBook
from agents.exchange.standing_repo import STANDING_COVER_DRAWN, Room
from broker import db, group_commit
from broker.db import Writes, unnest_columns
from broker.running_totals import RunningTotal
from schemas.certificates import EndorsedCertificate
from schemas.money import plain
from schemas.trading import CancelReason, Fill, OrderType, Side, SubmitOrder, TimeInForce

# The notional of each user's open buy orders (remaining × price), kept beside the orders
# (migration 0068; broker.running_totals) so that it costs the same however many rest.
OPEN_BUY_EXPOSURE = RunningTotal("open_buy_exposure", "user_id")


@dataclass(frozen=True, slots=True)
class OrderRecord:
    """An order as the exchange keeps it: the book's view plus what settlement and transfer need."""

    order: Order
    issue_code: str
    status: str
    settlement_account: str
    holder_name: str | None
    holder_address: str | None
    certificate: EndorsedCertificate | None
    cover_id: UUID | None = None
    safekeeping_account: str | None = None
    cover_unit: Decimal | None = None  # set when cover_id is a standing cover the order drew on
    # Whether that standing cover was closing, where the read said (``complete``); None: not read.
    standing_closing: bool | None = None

    @property
    def standing_cover(self) -> UUID | None:
        return self.cover_id if self.cover_unit is not None else None


async def list_instrument(
    connection: asyncpg.Connection, issue_code: str, share_class: str, reference_price: Decimal
) -> None:
    await connection.execute(
        """INSERT INTO instruments (issue_code, share_class, reference_price) VALUES ($1, $2, $3)
           ON CONFLICT (issue_code) DO UPDATE SET reference_price = excluded.reference_price""",
        issue_code,
        share_class,
        reference_price,
    )


async def instrument(connection: asyncpg.Connection, issue_code: str) -> Instrument | None:
    row = await connection.fetchrow(
        "SELECT issue_code, share_class, reference_price, last_price FROM instruments WHERE issue_code = $1",
        issue_code,
    )
    return Instrument(**dict(row)) if row else None


@dataclass(frozen=True, slots=True)
class AcceptanceView:
    """Everything the acceptance checks read about one submitted order, read in one statement."""

    instrument: Instrument | None
    books: Books
    existing: tuple[int, str | None] | None  # the order already under this client order id: OAN, payload digest
    pending: bool  # a buy order under this client order id waits for its cover
    # Drawn when the view was read for booking a new order (a sell, or a buy whose cover came),
    # or for a buy order that may draw on a standing cover.
    acceptance_number: int | None = None
    standing: Room | None = None  # the buyer's active standing cover for the order's account box


@dataclass(frozen=True, slots=True)
class ViewKey:
    """What an acceptance view is read for: the order's user, client order id, issue and the
    CertID it names. ``booking``: the order is booked if it passes, so its acceptance number is
    drawn with the view (an order the checks then refuse leaves a gap in the numbers, as a
    rolled-back one does). ``account_box``: a buy order's sealed account, to find the standing
    cover it may draw on (then a number is drawn too: the order is booked at once if the cover
    has room)."""

    user_id: str
    client_order_id: str
    issue_code: str
    cert_id: UUID | None
    booking: bool = False
    account_box: str | None = None


async def acceptance_view(connection: asyncpg.Connection, key: ViewKey) -> AcceptanceView:
    """One round trip for what S71–S88 and idempotent resubmission need (issue 8: every
    statement of order entry is a round trip on the exchange's hottest path)."""
    (view,) = await acceptance_views(connection, [key])
    return view


async def acceptance_views(connection: asyncpg.Connection, keys: Sequence[ViewKey]) -> list[AcceptanceView]:
    """``acceptance_view`` for several orders in one statement, in the order of ``keys``, all read
    from the same snapshot: each is right only if no order of the others changes what it reads
    (agents/exchange/read_ahead.py). The acceptance numbers drawn are handed out in the order of
    ``keys``, whatever order PostgreSQL drew them in, so orders read together keep their priority."""
    rows = await connection.fetch(
        f"""SELECT k.n, i.issue_code, i.share_class, i.reference_price, i.last_price,
                  CASE WHEN (k.booking OR s.cover_id IS NOT NULL) AND i.issue_code IS NOT NULL
                            AND o.acceptance_number IS NULL
                       THEN nextval('acceptance_numbers') END AS acceptance_number,
                  s.cover_id AS standing_cover, s.amount - {STANDING_COVER_DRAWN.of("s.cover_id")} AS standing_room,
                  o.acceptance_number AS existing, o.payload_digest,
                  EXISTS (SELECT 1 FROM pending_orders p
                          WHERE p.user_id = k.user_id AND p.client_order_id = k.client_order_id) AS pending,
                  {OPEN_BUY_EXPOSURE.of("k.user_id")} AS exposure,
                  (SELECT l.user_id FROM certid_list l
                    WHERE l.cert_id = k.cert_id AND l.status = 'valid') AS listed_holder,
                  (SELECT c.acceptance_number FROM orders c
                    WHERE c.cert_id = k.cert_id AND c.status = 'open' AND c.side = 'sell') AS committed_to
           FROM unnest($1::text[], $2::text[], $3::text[], $4::uuid[], $5::bool[], $6::text[])
                WITH ORDINALITY AS k (user_id, client_order_id, issue_code, cert_id, booking, account_box, n)
           LEFT JOIN instruments i ON i.issue_code = k.issue_code
           LEFT JOIN orders o ON o.user_id = k.user_id AND o.client_order_id = k.client_order_id
           LEFT JOIN standing_covers s
                  ON s.user_id = k.user_id AND s.account = k.account_box AND s.status = 'active'""",
        [k.user_id for k in keys],
        [k.client_order_id for k in keys],
        [k.issue_code for k in keys],
        [k.cert_id for k in keys],
        [k.booking for k in keys],
        [k.account_box for k in keys],
    )
    rows = sorted(rows, key=lambda row: row["n"])
    assert len(rows) == len(keys)  # one row per key: every join is on a unique key
    numbers = iter(sorted(row["acceptance_number"] for row in rows if row["acceptance_number"] is not None))
    return [_view(row, next(numbers) if row["acceptance_number"] is not None else None) for row in rows]


def _view(row: asyncpg.Record, acceptance_number: int | None) -> AcceptanceView:
    instrument = (
        Instrument(row["issue_code"], row["share_class"], row["reference_price"], row["last_price"])
        if row["issue_code"] is not None
        else None
    )
    books = Books(
        duplicate_client_order_id=row["existing"] is not None,
        listed_holder=row["listed_holder"],
        committed_to=row["committed_to"],
        open_buy_exposure=row["exposure"],
    )
    existing = (row["existing"], row["payload_digest"]) if row["existing"] is not None else None
    standing = Room(row["standing_cover"], row["standing_room"]) if row["standing_cover"] is not None else None
    return AcceptanceView(instrument, books, existing, row["pending"], acceptance_number, standing)


async def client_order_used(connection: asyncpg.Connection, user_id: str, client_order_id: str) -> bool:
    return bool(
        await connection.fetchval(
            "SELECT true FROM orders WHERE user_id = $1 AND client_order_id = $2", user_id, client_order_id
        )
    )


async def open_buy_exposure(connection: asyncpg.Connection, user_id: str) -> Decimal:
    """The notional of the user's open buy orders (``OPEN_BUY_EXPOSURE``)."""
    exposure: Decimal = await connection.fetchval(f"SELECT {OPEN_BUY_EXPOSURE.of('$1')}", user_id)
    return exposure


async def exposure_drift(connection: asyncpg.Connection) -> list[tuple[str, Decimal, Decimal]]:
    """Every user whose kept open buy exposure differs from the sum over their open buy orders:
    (user, kept, summed). Empty unless a write bypassed migration 0068's trigger."""
    return await OPEN_BUY_EXPOSURE.drift(
        connection,
        """SELECT user_id AS key, sum(remaining * price) AS summed FROM orders
           WHERE side = 'buy' AND status = 'open' AND price IS NOT NULL GROUP BY user_id""",
    )


async def next_acceptance_number(connection: asyncpg.Connection) -> int:
    number: int = await connection.fetchval("SELECT nextval('acceptance_numbers')")
    return number


async def next_matching_number(connection: asyncpg.Connection) -> int:
    number: int = await connection.fetchval("SELECT nextval('matching_numbers')")
    return number


_COLUMNS = """acceptance_number, client_order_id, user_id, issue_code, side, order_type,
        price, quantity, remaining, time_in_force, priority, status, settlement_account,
        holder_name, holder_address, cert_id, certificate, request_hash, cover_id, safekeeping_account,
        payload_digest, cancel_reason, cover_unit"""
# New order rows in one statement (one execution, where one per row cost the database a
# statement's overhead for each order: docs/performance.md, stop 24); an array for each column.
_INSERT_ORDERS = f"""INSERT INTO orders ({_COLUMNS})
    SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::numeric[],
                         $8::bigint[], $9::bigint[], $10::text[], $11::bigint[], $12::text[], $13::text[],
                         $14::text[], $15::text[], $16::uuid[], $17::jsonb[], $18::text[], $19::uuid[],
                         $20::text[], $21::text[], $22::text[], $23::numeric[])"""
_ROW_WIDTH = 23
# Where a row of _INSERT_ORDERS's columns holds what a touch changes (``_touched_arrays``).
_ROW_CLIENT_ORDER_ID, _ROW_QUANTITY, _ROW_REMAINING, _ROW_STATUS = 1, 7, 8, 11

Then = Callable[["Matched"], Awaitable[None]]


@dataclass(slots=True)
class _Trading:
    """An order's part of the held statement: its executions, ``count`` of them from place
    ``first`` of the held ones, and what its handler does once they are entered (``then``)."""

    first: int
    count: int
    then: Then


@dataclass(slots=True)
class _Held:
    """What a batch's orders wrote, held for one statement (``write_held``): each row at its last
    state, once. ``rows``: new orders, as _INSERT_ORDERS's columns; ``touched``: resting orders
    already in the table, as ``_touched_arrays`` writes them; ``executions``: in the order they were
    made, with each one's issue and the CertID it sold."""

    rows: dict[int, list[object]] = field(default_factory=dict)
    touched: dict[int, tuple[int, int, str, str]] = field(default_factory=dict)
    executions: list[tuple[str, Execution, UUID | None]] = field(default_factory=list)
    trading: list[_Trading] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.rows or self.touched)

    def hold(self, row: tuple[object, ...], touched: Sequence[Order]) -> int:
        """The new order's ``row`` and the resting orders it ``touched``; how many rows the
        statement will write for them that it did not already (a row touched again is written
        once, at its last state)."""
        number = row[0]
        assert isinstance(number, int)
        self.rows[number] = list(row)
        written = 1
        for order in touched:
            state = (order.remaining, order.quantity, _status(order, None), order.client_order_id)
            new = self.rows.get(order.acceptance_number)
            if new is not None:
                new[_ROW_REMAINING], new[_ROW_QUANTITY], new[_ROW_STATUS], new[_ROW_CLIENT_ORDER_ID] = state
                continue
            written += order.acceptance_number not in self.touched
            self.touched[order.acceptance_number] = state
        return written

    def take(self) -> _Held:
        """Everything held, leaving nothing held."""
        taken = _Held(self.rows, self.touched, self.executions, self.trading)
        self.rows, self.touched, self.executions, self.trading = {}, {}, [], []
        return taken


# What a batch's orders wrote, held while its orders are decided (read_ahead.py).
_HELD: ContextVar[_Held | None] = ContextVar("order_rows_held", default=None)


async def insert_order(
    connection: asyncpg.Connection,
    order: Order,
    request: SubmitOrder,
    request_hash: str,
    payload_digest: str,
    cover_id: UUID | None = None,
    cancel_reason: CancelReason | None = None,
    cover_unit: Decimal | None = None,
    *,
    touched: Sequence[Order] = (),
    executions: Sequence[Execution] = (),
    then: Then | None = None,
) -> None:
    """A newly accepted order as its submission left it (open, filled or cancelled), the resting
    orders it ``touched`` as it left them, and its ``executions`` entered in the order matching
    list: one statement, then ``then`` with the executions' matching numbers and the sell
    orders' instruction views (``Matched``).
    ``cover_unit``: the worst price per share it drew on the standing cover ``cover_id``.
    Inside ``holding_rows`` all of it is held, to be written with the batch's other orders in
    one statement, and ``then`` runs once it is (``write_held``)."""
    certificate = request.certificate.model_dump_json() if request.certificate else None
    row = (
        order.acceptance_number,
        order.client_order_id,
        order.user_id,
        request.issue_code,
        order.side.value,
        order.order_type.value,
        order.price,
        order.quantity,
        order.remaining,
        order.time_in_force.value,
        order.priority,
        _status(order, cancel_reason),
        request.settlement_account,
        request.holder_name,
        request.holder_address,
        order.cert_id,
        certificate,
        request_hash,
        cover_id,
        request.safekeeping_account,
        payload_digest,
        cancel_reason.value if cancel_reason else None,
        cover_unit,
    )
    if touched and not executions:  # a defect: a resting order is touched only by trading with it
        raise ValueError(f"order {order.acceptance_number} touched resting orders without an execution")
    batch = _HELD.get()
    held = batch if batch is not None else _Held()  # alone: held for its own statement, written now
    written = held.hold(row, touched)
    sold = {o.acceptance_number: o.cert_id for o in (order, *touched)}
    if then is not None:
        held.trading.append(_Trading(len(held.executions), len(executions), then))
    held.executions.extend((request.issue_code, e, sold[e.sell]) for e in executions)
    _wrote(request.issue_code, f"INSERT 0 {written}")
    if batch is None:
        await _write(connection, held)


@contextmanager
def holding_rows() -> Iterator[None]:
    """What ``insert_order`` writes is held until ``write_held``; the holder writes it before
    any statement that could read it (read_ahead.py) and before the commit. Transfer requests
    are held too, until ``write_held_transfers``. Left with rows still held, they are dropped:
    the transaction is failing."""
    reset, transfers = _HELD.set(_Held()), _TRANSFERS.set({})
    try:
        yield
    finally:
        _HELD.reset(reset)
        _TRANSFERS.reset(transfers)


async def write_held(connection: asyncpg.Connection) -> None:
    """Write everything held, if anything is, in one statement: the new orders, the resting
    orders they touched, and their executions entered in the order matching list in the order
    they were made (so a sell order's executions are numbered oldest first, as S95 reads them);
    then each trading order's ``then``, in that order, with its executions' numbers and the sell
    orders' instruction views as the statement left them (docs/performance.md, stop 40)."""
    held = _HELD.get()
    if held:
        await _write(connection, held.take())


async def _write(connection: asyncpg.Connection, taken: _Held) -> None:
    """``write_held``'s statement for what was ``taken``, then its trading orders' ``then``."""
    if not taken.executions:
        await connection.execute(_INSERT_ORDERS, *unnest_columns([tuple(r) for r in taken.rows.values()], _ROW_WIDTH))
        matched = NOT_MATCHED
    else:
        matched = await _write_trading(connection, taken)
    instructed: set[int] = set()
    for part in taken.trading:
        numbers = matched.matching_numbers[part.first : part.first + part.count]
        sells = {execution.sell for _, execution, _ in taken.executions[part.first : part.first + part.count]}
        await part.then(Matched(numbers, matched.views, frozenset(instructed)))
        instructed |= sells


async def _write_trading(connection: asyncpg.Connection, held: _Held) -> Matched:
    """``write_held``'s statement when orders traded: the touched rows updated, the new ones
    inserted, the executions entered, and the instruction views of every sell order they name,
    read from the rows as the statement wrote them: one round trip, where it was two for an
    order alone (docs/performance.md, stop 36), and one for a batch (stop 40). Every touched
    order is the counterparty of an execution, so one the table does not hold fails the
    statement whole (the execution's foreign key)."""
    touched = [(number, *state) for number, state in held.touched.items()]
    first_touched = _ROW_WIDTH + 1
    sells = f"${first_touched + 5 + 2}::bigint[]"  # _entering's sell orders
    rows = await connection.fetch(
        f"""{_saving_touched(first_touched, returning="orders.*")},
            incoming AS ({_INSERT_ORDERS} RETURNING *),
            written AS (SELECT * FROM touched UNION ALL SELECT * FROM incoming),
            {_entering(first_touched + 5)}
            {_instruction_view_sql(sells, entered="entered", written="written")}""",
        *unnest_columns([tuple(r) for r in held.rows.values()], _ROW_WIDTH),
        *unnest_columns(touched, 5),
        *_entering_arguments([(issue, e) for issue, e, _ in held.executions], (c for _, _, c in held.executions)),
    )
    return _matched(rows, [e for _, e, _ in held.executions])


def _wrote(issue_code: str, status: str) -> None:
    """Every order row the exchange writes is written here and reported to the warm books
    (warm_book.py: a batch passes books from handler to handler only while it saw every write)."""
    from agents.exchange.warm_book import BOOKS  # the cache builds on this module

    BOOKS.wrote(issue_code, int(status.rsplit(" ", 1)[-1]))


def _status(order: Order, cancel_reason: CancelReason | None) -> str:
    return "open" if order.remaining else ("cancelled" if cancel_reason else "filled")


async def insert_replacement(
    connection: asyncpg.Connection, order: Order, replaced: OrderRecord, request_hash: str
) -> None:
    """A replacement order inherits the replaced one's accounts, holder details and certificate."""
    status = await connection.execute(
        """INSERT INTO orders (acceptance_number, client_order_id, user_id, issue_code, side, order_type,
               price, quantity, remaining, time_in_force, priority, status, settlement_account,
               holder_name, holder_address, cert_id, certificate, request_hash, cover_id, safekeeping_account,
               cover_unit)
           SELECT $1, $2, user_id, issue_code, side, order_type, $3, $4, $4, time_in_force, $1, 'open',
                  settlement_account, holder_name, holder_address, cert_id, certificate, $5, cover_id,
                  safekeeping_account, cover_unit
           FROM orders WHERE acceptance_number = $6""",
        order.acceptance_number,
        order.client_order_id,
        order.price,
        order.quantity,
        request_hash,
        replaced.order.acceptance_number,
    )
    _wrote(replaced.issue_code, status)


async def save(
    connection: asyncpg.Connection,
    issue_code: str,
    order: Order,
    cancel_reason: CancelReason | None = None,
    touched: Sequence[Order] = (),
) -> None:
    """Write back what the book changed: open quantity, status, and why it stopped; with the
    resting orders a submission of ``order`` ``touched``, as it left them, in the same statement."""
    args = (
        order.acceptance_number,
        order.remaining,
        order.quantity,
        _status(order, cancel_reason),
        cancel_reason.value if cancel_reason else None,
        order.client_order_id,
    )
    update = """UPDATE orders SET remaining = $2, quantity = $3, status = $4,
               cancel_reason = coalesce($5, cancel_reason), client_order_id = $6, updated_at = now()
           WHERE acceptance_number = $1"""
    if not touched:
        _wrote(issue_code, await connection.execute(update, *args))
        return
    if order.acceptance_number in {o.acceptance_number for o in touched}:
        raise ValueError(f"order {order.acceptance_number} is saved and touched: a row is written once a statement")
    rows = await connection.fetch(
        f"{_saving_touched(len(args) + 1)} {update} RETURNING (SELECT count(*) FROM touched)",
        *args,
        *_touched_arrays(touched),
    )
    _all_touched(rows[0][0] if rows else 0, touched)
    _wrote(issue_code, f"UPDATE {len(rows) + len(touched)}")


def _saving_touched(first: int, returning: str = "1") -> str:
    """A ``touched`` CTE for the statement that writes a submitted order: the resting orders its
    submission touched, written as the book left them (what ``save`` writes, without a cancel
    reason: a touched order that stops is filled), their arrays from parameter ``first`` on
    (``_touched_arrays``). One round trip a trade less than a ``save`` each (docs/performance.md,
    stop 31)."""
    a, b, c, d, e = (f"${first + i}" for i in range(5))
    return f"""WITH touched AS (
            UPDATE orders SET remaining = t.remaining, quantity = t.quantity, status = t.status,
                   client_order_id = t.client_order_id, updated_at = now()
            FROM unnest({a}::bigint[], {b}::bigint[], {c}::bigint[], {d}::text[], {e}::text[])
                 AS t (acceptance_number, remaining, quantity, status, client_order_id)
            WHERE orders.acceptance_number = t.acceptance_number
            RETURNING {returning})"""


def _all_touched(saved: int, touched: Sequence[Order]) -> None:
    """A touched order not in the table is a defect: the batch fails (and runs again a delivery at
    a time, failing that delivery alone) rather than the book's change being lost."""
    if saved != len(touched):
        numbers = [o.acceptance_number for o in touched]
        raise RuntimeError(f"resting orders {numbers} touched, {saved} of them written")


def _touched_arrays(touched: Sequence[Order]) -> list[list[Any]]:
    return unnest_columns(
        [(o.acceptance_number, o.remaining, o.quantity, _status(o, None), o.client_order_id) for o in touched], 5
    )


async def replace_certificate(
    connection: asyncpg.Connection,
    issue_code: str,
    acceptance_number: int,
    cert_id: UUID,
    certificate: EndorsedCertificate,
) -> None:
    """After a partial sale the order is backed by the seller's remainder certificate."""
    status = await connection.execute(
        "UPDATE orders SET cert_id = $2, certificate = $3::jsonb WHERE acceptance_number = $1",
        acceptance_number,
        cert_id,
        certificate.model_dump_json(),
    )
    _wrote(issue_code, status)


def _order(row: asyncpg.Record) -> Order:
    return Order(
        acceptance_number=row["acceptance_number"],
        client_order_id=row["client_order_id"],
        user_id=row["user_id"],
        side=Side(row["side"]),
        order_type=OrderType(row["order_type"]),
        price=plain(row["price"]),
        quantity=row["quantity"],
        remaining=row["remaining"],
        time_in_force=TimeInForce(row["time_in_force"]),
        priority=row["priority"],
        cert_id=row["cert_id"],
    )


def _record(row: asyncpg.Record) -> OrderRecord:
    certificate = row["certificate"]
    return OrderRecord(
        order=_order(row),
        issue_code=row["issue_code"],
        status=row["status"],
        settlement_account=row["settlement_account"],
        holder_name=row["holder_name"],
        holder_address=row["holder_address"],
        certificate=EndorsedCertificate.model_validate_json(certificate) if certificate else None,
        cover_id=row["cover_id"],
        safekeeping_account=row["safekeeping_account"],
        cover_unit=row.get("cover_unit"),
        standing_closing=row.get("standing_closing"),
    )


async def load_book(connection: asyncpg.Connection, issue_code: str, book_entry: bool = False) -> OrderBook:
    """The issue's book, locked for this decision: the warm one if it matches the rows (warm_book.py);
    certificate orders and book-entry orders are separate segments that never match each other."""
    from agents.exchange.warm_book import BOOKS  # the cache builds on this module

    return await BOOKS.load(connection, issue_code, book_entry)


async def rebuild_book(connection: asyncpg.Connection, issue_code: str, book_entry: bool) -> OrderBook:
    """One segment of the issue's book, rebuilt from its open orders in priority order
    (the instrument row is locked)."""
    rows = await connection.fetch(
        """SELECT * FROM orders WHERE issue_code = $1 AND status = 'open'
           AND (safekeeping_account IS NOT NULL) = $2 ORDER BY priority""",
        issue_code,
        book_entry,
    )
    book = OrderBook(issue_code)
    for row in rows:
        book.load(_order(row))
    return book


async def order(connection: asyncpg.Connection, acceptance_number: int) -> OrderRecord | None:
    row = await connection.fetchrow("SELECT * FROM orders WHERE acceptance_number = $1", acceptance_number)
    return _record(row) if row else None


async def orders(connection: asyncpg.Connection, acceptance_numbers: Sequence[int]) -> dict[int, OrderRecord]:
    """Several orders in one round trip, by acceptance number (those that exist)."""
    rows = await connection.fetch(
        "SELECT * FROM orders WHERE acceptance_number = ANY($1::bigint[])", list(acceptance_numbers)
    )
    return {row["acceptance_number"]: _record(row) for row in rows}


async def order_by_client_id(connection: asyncpg.Connection, user_id: str, client_order_id: str) -> OrderRecord | None:
    row = await connection.fetchrow(
        "SELECT * FROM orders WHERE user_id = $1 AND client_order_id = $2", user_id, client_order_id
    )
    return _record(row) if row else None


@dataclass(frozen=True, slots=True)
class Match:
    matching_number: int
    issue_code: str
    buy_order: int
    sell_order: int
    cert_id: UUID | None
    shares: int
    price: Decimal
    buyer_user_id: str
    seller_user_id: str
    status: str
    transfer_request_hash: str | None


_MATCH_TYPES = {
    "matching_number": "bigint",
    "issue_code": "text",
    "buy_order": "bigint",
    "sell_order": "bigint",
    "cert_id": "uuid",
    "shares": "bigint",
    "price": "numeric",
    "buyer_user_id": "text",
    "seller_user_id": "text",
    "status": "text",
    "transfer_request_hash": "text",
}
_MATCH_COLUMNS = ", ".join(_MATCH_TYPES)
_UNFINISHED = "('pending_transfer', 'transfer_requested')"


@dataclass(frozen=True, slots=True)
class InstructionView:
    """What S95 reads to instruct a sell order's next execution: its unfinished executions,
    oldest first (``unfinished_matches``), and the sell order with the buy orders they name
    (``orders``), by acceptance number."""

    unfinished: list[Match]
    orders: dict[int, OrderRecord]


def _instruction_view_sql(sell_orders: str, entered: str | None = None, written: str = "orders") -> str:
    """The rows of the ``InstructionView`` of each sell order of ``sell_orders`` (an SQL array):
    the sell order's with no execution, then an execution's with its buy order. ``entered``: a
    statement's CTE of the executions it entered in the list, which its own snapshot does not
    show; ``written``: where the sell orders and those executions' buy orders are read, ``orders``
    or the statement's CTE of the order rows it wrote, as it wrote them. The buy orders of
    executions already in the list are read from ``orders``, as the statement found them: a
    batch's statement (``write_held``) may also have touched one, but what S95 reads of a buy
    order (its holder, its accounts, its cover) no trade changes."""
    sql = f"""SELECT {_NO_EXECUTION}, false AS entered, o.* FROM {written} o
              WHERE o.acceptance_number = ANY({sell_orders})
              UNION ALL
              SELECT {_execution("m")}, false, o.* FROM matches m JOIN orders o ON o.acceptance_number = m.buy_order
              WHERE m.sell_order = ANY({sell_orders}) AND m.status IN {_UNFINISHED}"""
    if entered is not None:
        sql += f"""
              UNION ALL
              SELECT {_execution("n")}, true, o.* FROM {entered} n
              JOIN {written} o ON o.acceptance_number = n.buy_order"""
    return sql + "\n              ORDER BY m_matching_number NULLS FIRST"


# An order's row beside no execution, or beside one (``_execution``), in one row shape: the
# executions' columns prefixed ``m_``, then the order's (``_match_of`` reads them back).
_NO_EXECUTION = ", ".join(f"NULL::{kind} AS m_{name}" for name, kind in _MATCH_TYPES.items())


def _execution(alias: str) -> str:
    return ", ".join(f"{alias}.{name} AS m_{name}" for name in _MATCH_TYPES)


def _match_of(row: asyncpg.Record) -> Match | None:
    """The execution of a row of that shape, if it has one, as the held transfer requests leave it."""
    return _as_held(Match(**{name: row[f"m_{name}"] for name in _MATCH_TYPES})) if row["m_matching_number"] else None


def _instruction_views(rows: Sequence[asyncpg.Record]) -> dict[int, InstructionView]:
    """Each sell order's ``InstructionView`` from ``_instruction_view_sql``'s rows, by acceptance number."""
    views: dict[int, InstructionView] = {}
    for row in rows:
        match = _match_of(row)
        sell_order = match.sell_order if match is not None else row["acceptance_number"]
        view = views.setdefault(sell_order, InstructionView([], {}))
        if match is not None:
            view.unfinished.append(match)
        view.orders[row["acceptance_number"]] = _record(row)
    return views


async def instruction_view(connection: asyncpg.Connection, sell_order: int) -> InstructionView:
    """A sell order's ``InstructionView``, in one round trip (docs/performance.md, stop 28)."""
    rows = await connection.fetch(_instruction_view_sql("$1::bigint[]"), [sell_order])
    return _instruction_views(rows).get(sell_order, InstructionView([], {}))


@dataclass(frozen=True, slots=True)
class Matched:
    """Executions entered in the order matching list: their matching numbers, in the order of
    the executions, and each sell order's ``InstructionView`` as the statement left it, the
    executions among its unfinished ones (S95 instructs from it: stop 30)."""

    matching_numbers: list[int]
    views: dict[int, InstructionView]
    # Sell orders an earlier order of the same held statement traded with: its handler instructed
    # (or found nothing to instruct for) each from the same views, so this one has nothing to do.
    instructed: frozenset[int] = frozenset()


NOT_MATCHED = Matched([], {})


def _entering(first: int) -> str:
    """CTEs ``listed`` and ``entered`` (S92–S94): executions enter the order matching list under
    new matching numbers, their name transfers pending, and the CertIDs sold leave the list at
    once, so a copy cannot be sold again (stop 28). Their parameters from ``first`` on:
    ``_entering_arguments``. The numbers are drawn as ``unnest`` yields the executions, in
    order (``_matched`` checks it)."""
    issue, buys, sells, shares, prices, buyers, sellers, certs = (f"${first + i}" for i in range(8))
    return f"""listed AS (UPDATE certid_list SET status = 'in_transfer' WHERE cert_id = ANY({certs}::uuid[])),
        entered AS (
            INSERT INTO matches (matching_number, issue_code, buy_order, sell_order, shares, price,
                buyer_user_id, seller_user_id, status)
            SELECT nextval('matching_numbers'), e.issue, e.buy, e.sell, e.shares, e.price, e.buyer, e.seller,
                   'pending_transfer'
            FROM unnest({issue}::text[], {buys}::bigint[], {sells}::bigint[], {shares}::bigint[], {prices}::numeric[],
                        {buyers}::text[], {sellers}::text[]) AS e (issue, buy, sell, shares, price, buyer, seller)
            RETURNING {_MATCH_COLUMNS})"""


def _entering_arguments(executions: Sequence[tuple[str, Execution]], certificates: Iterable[UUID | None]) -> list[Any]:
    """``_entering``'s parameters: each execution with its issue, and the CertIDs sold."""
    columns = unnest_columns([(i, e.buy, e.sell, e.quantity, e.price, e.buyer, e.seller) for i, e in executions], 7)
    return [*columns, sorted({c for c in certificates if c is not None})]


def _matched(rows: Sequence[asyncpg.Record], executions: Sequence[Execution]) -> Matched:
    """``Matched`` from ``_instruction_view_sql``'s rows with ``entered``; executions entered in an
    order other than theirs are a defect, and fail the transaction."""
    entered = sorted((r["m_matching_number"], r["m_buy_order"], r["m_sell_order"]) for r in rows if r["entered"])
    if [(buy, sell) for _, buy, sell in entered] != [(e.buy, e.sell) for e in executions]:
        raise RuntimeError(f"executions {[(e.buy, e.sell) for e in executions]} entered as {entered}")
    return Matched([number for number, _, _ in entered], _instruction_views(rows))


async def insert_matches(
    connection: asyncpg.Connection,
    issue_code: str,
    executions: Sequence[Execution],
    certificates: Iterable[UUID | None] = (),
) -> Matched:
    """S92–S94 for a submission's executions, their orders already written, in one round trip
    with the sell orders' instruction views (``_entering``). ``certificates``: the CertIDs sold."""
    if not executions:
        return NOT_MATCHED
    await write_held(connection)  # the executions held first: a sell order's are numbered oldest first
    rows = await connection.fetch(
        f"WITH {_entering(1)} {_instruction_view_sql('$3::bigint[]', entered='entered')}",
        *_entering_arguments([(issue_code, e) for e in executions], certificates),
    )
    return _matched(rows, executions)


async def settlement_status(
    connection: asyncpg.Connection, matching_number: int, status: str, failure: str | None
) -> Match | None:
    """Keep what settlement last said of the execution's instruction; the execution, locked by
    the update, in the same round trip (None if there is no such execution)."""
    return (await settlement_statuses(connection, [(matching_number, status, failure)])).get(matching_number)


async def settlement_statuses(
    connection: asyncpg.Connection, said: Sequence[tuple[int, str, str | None]]
) -> dict[int, Match]:
    """``settlement_status`` for executions of distinct matching numbers, in one statement: by
    matching number, those that exist."""
    rows = await connection.fetch(
        f"""UPDATE matches SET settlement_status = s.said_status, settlement_failure = s.said_failure
            FROM unnest($1::bigint[], $2::text[], $3::text[]) AS s (said_number, said_status, said_failure)
            WHERE matching_number = s.said_number
            RETURNING {_MATCH_COLUMNS}""",
        [number for number, _, _ in said],
        [status for _, status, _ in said],
        [failure for _, _, failure in said],
    )
    return {row["matching_number"]: Match(**dict(row)) for row in rows}


def next_transfer(unfinished: list[Match]) -> Match | None:
    """Of a sell order's unfinished executions (``unfinished_matches``), the oldest awaiting
    transfer, unless one is already with the issuer: transfers of one certificate go one at a
    time, each on the CertID the last one left."""
    if not unfinished or unfinished[0].status == "transfer_requested":
        return None
    return unfinished[0]


# Transfer requests (S95) held while a batch's orders are decided (``holding_rows``), by matching
# number: the certificate and the instruction's digest. A batch of trading orders instructed a
# statement each; held, they are written in one at the batch's end, or before any handler that
# is not an order's (read_ahead.writing_held). An order's handler reads the executions only
# through ``_instruction_views``, which shows a held request as written (``_as_held``): so a later
# execution of the same sell order waits for it, as S95 says, and nothing else reads them.
_TRANSFERS: ContextVar[dict[int, tuple[UUID | None, str]] | None] = ContextVar("transfers_held", default=None)
_TRANSFER_REQUESTED = """UPDATE matches SET status = 'transfer_requested', cert_id = t.cert_id,
           transfer_request_hash = t.request_hash
    FROM unnest($1::bigint[], $2::uuid[], $3::text[]) AS t (matching_number, cert_id, request_hash)
    WHERE matches.matching_number = t.matching_number AND matches.status = 'pending_transfer'"""


async def transfer_requested(
    connection: asyncpg.Connection, matching_number: int, cert_id: UUID | None, request_hash: str
) -> None:
    """S95: the execution's instruction is sent (held until the batch writes it, in one)."""
    held = _TRANSFERS.get()
    if held is not None:
        held[matching_number] = (cert_id, request_hash)
        return
    await _write_transfers(connection, {matching_number: (cert_id, request_hash)})


async def write_held_transfers(connection: asyncpg.Connection) -> None:
    """Write every transfer request held (one statement for all of them), if any."""
    held = _TRANSFERS.get()
    if held:
        transfers = dict(held)
        held.clear()
        await _write_transfers(connection, transfers)


async def ride_held_transfers(connection: asyncpg.Connection) -> None:
    """At a batch's end: every transfer request held, written by the statement that claims the
    batch (``group_commit.ride``: nothing the batch runs after its handlers reads an execution),
    or at once where there is none."""
    held = _TRANSFERS.get()
    if held:
        writes = _transfer_writes(dict(held))
        held.clear()
        await group_commit.ride_or_write(connection, writes)


async def _write_transfers(connection: asyncpg.Connection, transfers: dict[int, tuple[UUID | None, str]]) -> None:
    await _transfer_writes(transfers).execute(connection)


def _transfer_writes(transfers: dict[int, tuple[UUID | None, str]]) -> Writes:
    """The transfer requests written, checked to be one pending execution each: otherwise a
    defect (an execution instructed not in the list, or not pending), and the batch fails."""
    numbers = sorted(transfers)
    return Writes(
        f"transferred AS ({_TRANSFER_REQUESTED} RETURNING matches.matching_number)",
        (numbers, [transfers[n][0] for n in numbers], [transfers[n][1] for n in numbers], len(numbers)),
        check="(SELECT count(*) FROM transferred) = $4",
        what=f"transfer requests for {numbers}",
    )


def _as_held(match: Match) -> Match:
    """``match`` as its held transfer request (if any) will write it."""
    held = _TRANSFERS.get()
    if not held or match.matching_number not in held:
        return match
    cert_id, request_hash = held[match.matching_number]
    return dataclasses.replace(match, status="transfer_requested", cert_id=cert_id, transfer_request_hash=request_hash)


# The executions ``$1`` completed: the name transfer ``$2`` done, the new CertID ``$3``, the trade settled.
_COMPLETING = """UPDATE matches SET status = 'completed', name_transfer_number = c.ntn, new_cert_id = c.new_cert_id,
        completed_at = now(), settled = true, settlement_failure = NULL
    FROM unnest($1::bigint[], $2::bigint[], $3::uuid[]) AS c (done_number, ntn, new_cert_id)
    WHERE matching_number = c.done_number"""


async def transfer_completed(
    connection: asyncpg.Connection, matching_number: int, ntn: int | None, new_cert_id: UUID | None
) -> None:
    """The name transfer is done and the trade settled (both legs, docs/dvp.md)."""
    await transfers_completed(connection, [(matching_number, ntn, new_cert_id)])


async def transfers_completed(
    connection: asyncpg.Connection, completed: Sequence[tuple[int, int | None, UUID | None]]
) -> None:
    """``transfer_completed`` for several executions, in one statement."""
    await connection.execute(
        _COMPLETING,
        [number for number, _, _ in completed],
        [ntn for _, ntn, _ in completed],
        [cert_id for _, _, cert_id in completed],
    )


# Whether the standing cover order ``o`` drew on is closing (NULL: it drew on none), read with
# the order so that the trades' end looks at closing a cover only when it is closing
# (settling.release_cover_when_done): most trades end with their cover active.
_STANDING_CLOSING = """(SELECT s.status = 'closing' FROM standing_covers s
    WHERE s.cover_id = o.cover_id AND o.cover_unit IS NOT NULL) AS standing_closing"""


@dataclass(frozen=True, slots=True)
class Completed:
    """What the end of settled trades reads once their executions are completed (``complete``)."""

    orders: dict[int, OrderRecord]  # by acceptance number
    unfinished: dict[int, list[Match]]  # each sell order's executions not yet settled or failed, oldest first


async def complete(
    connection: asyncpg.Connection,
    completed: Sequence[tuple[int, int | None, UUID | None]],
    order_numbers: Sequence[int],
    sell_orders: Sequence[int],
    riding: Writes | None = None,
) -> Completed:
    """``transfers_completed``, and in the same round trip what the trades' ends read after it
    (stop 39; three statements before): the orders ``order_numbers``, and each of ``sell_orders``'
    unfinished executions. The statement's snapshot is from before its own update, so the
    executions it completes are left out of the unfinished by their numbers. ``riding``: other
    writes of the trades' end, made by the same statement (the CertID list's, ``repo.listing``);
    they must not write what it reads (matches and orders)."""
    numbers = [number for number, _, _ in completed]
    riders = [riding] if riding is not None else []
    assert all(r.check is None for r in riders)  # the statement returns the orders, not a check
    rides, _, ridden = db.riding(riders, 6)
    rows = await connection.fetch(
        f"""WITH done AS ({_COMPLETING}){rides}
            SELECT {_NO_EXECUTION}, o.*, {_STANDING_CLOSING} FROM orders o WHERE o.acceptance_number = ANY($4::bigint[])
            UNION ALL
            SELECT {_execution("m")}, o.*, {_STANDING_CLOSING}
            FROM matches m JOIN orders o ON o.acceptance_number = m.buy_order
            WHERE m.sell_order = ANY($5::bigint[]) AND m.status IN {_UNFINISHED}
              AND NOT (m.matching_number = ANY($1::bigint[]))
            ORDER BY m_matching_number NULLS FIRST""",
        numbers,
        [ntn for _, ntn, _ in completed],
        [cert_id for _, _, cert_id in completed],
        list(order_numbers),
        list(sell_orders),
        *ridden,
    )
    done = Completed({}, {order: [] for order in sell_orders})
    for row in rows:
        done.orders[row["acceptance_number"]] = _record(row)
        if (match := _match_of(row)) is not None:
            done.unfinished[match.sell_order].append(match)
    return done


async def transfer_failed(connection: asyncpg.Connection, matching_number: int, failure: str) -> None:
    await connection.execute(
        "UPDATE matches SET status = 'failed', failure = $2, completed_at = now() WHERE matching_number = $1",
        matching_number,
        failure,
    )


async def unfinished_matches(connection: asyncpg.Connection, sell_order: int) -> list[Match]:
    return (await unfinished_matches_of(connection, [sell_order]))[sell_order]


async def unfinished_matches_of(connection: asyncpg.Connection, sell_orders: Sequence[int]) -> dict[int, list[Match]]:
    """Each sell order's executions not yet settled or failed, oldest first, in one statement."""
    rows = await connection.fetch(
        f"""SELECT {_MATCH_COLUMNS} FROM matches WHERE sell_order = ANY($1::bigint[])
            AND status IN {_UNFINISHED} ORDER BY matching_number""",
        list(sell_orders),
    )
    unfinished: dict[int, list[Match]] = {order: [] for order in sell_orders}
    for row in rows:
        unfinished[row["sell_order"]].append(Match(**dict(row)))
    return unfinished


async def unfinished_buys(connection: asyncpg.Connection, buy_order: int) -> int:
    """How many executions of this buy order are not yet settled or failed."""
    count: int = await connection.fetchval(
        f"SELECT count(*) FROM matches WHERE buy_order = $1 AND status IN {_UNFINISHED}",
        buy_order,
    )
    return count


async def fills(connection: asyncpg.Connection, acceptance_number: int) -> list[Fill]:
    rows = await connection.fetch(
        """SELECT matching_number, price, shares, status FROM matches
           WHERE buy_order = $1 OR sell_order = $1 ORDER BY matching_number""",
        acceptance_number,
    )
    return [
        Fill(matching_number=r["matching_number"], price=r["price"], quantity=r["shares"], status=r["status"])
        for r in rows
    ]


async def settlement_result(
    connection: asyncpg.Connection, matching_number: int, settled: bool, failure: str | None
) -> None:
    await connection.execute(
        "UPDATE matches SET settled = $2, settlement_failure = $3 WHERE matching_number = $1",
        matching_number,
        settled,
        failure,
    )


async def open_day_orders(connection: asyncpg.Connection) -> list[OrderRecord]:
    rows = await connection.fetch(
        "SELECT * FROM orders WHERE status = 'open' AND time_in_force = 'day' ORDER BY issue_code, priority"
    )
    return [_record(r) for r in rows]


async def matching_list(connection: asyncpg.Connection) -> list[dict[str, object]]:
    """The order matching list 22 with each trade's transfer and settlement, for operators."""
    rows = await connection.fetch(
        """SELECT matching_number AS omn, issue_code, buy_order, sell_order, shares, price, status,
                  name_transfer_number AS ntn, settled, settlement_status, settlement_failure
           FROM matches ORDER BY matching_number"""
    )
    return [dict(r) for r in rows]


async def open_sell_orders_backed_by(connection: asyncpg.Connection, cert_ids: list[UUID]) -> list[OrderRecord]:
    rows = await connection.fetch(
        "SELECT * FROM orders WHERE status = 'open' AND side = 'sell' AND cert_id = ANY($1::uuid[])", cert_ids
    )
    return [_record(r) for r in rows]
