"""The exchange's matching engine (agents/exchange/book.py): each rule by example, then properties.

The properties replay random sequences of submits, cancels and reduces from three users at five
prices, both through `OrderBook` and through `ReferenceBook` below — the same rules written the
slowest obvious way, one list sorted by (price, priority) on every look — and compare what each
one did at every step, besides checking the invariants that need no model at all.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.exchange.book import Execution, Order, OrderBook, Result
from schemas.trading import CancelReason, OrderType, Side, TimeInForce

BUY, SELL = Side.BUY, Side.SELL
DAY, GTC, IOC, FOK = TimeInForce.DAY, TimeInForce.GTC, TimeInForce.IOC, TimeInForce.FOK


def order(oan: int, user: str, side: Side, quantity: int, price: int | None, tif: TimeInForce = DAY) -> Order:
    """An order as the exchange accepted it; no price means a market order."""
    order_type = OrderType.MARKET if price is None else OrderType.LIMIT
    limit = None if price is None else Decimal(price)
    return Order(oan, f"c{oan}", user, side, order_type, limit, quantity, quantity, tif)


def book_with(*resting: Order) -> OrderBook:
    book = OrderBook("KBT")
    for each in resting:
        assert book.submit(each).rested
    return book


def trades(result: Result) -> list[tuple[int, int, int, int]]:
    """(buy OAN, sell OAN, price, quantity) of each execution, in order."""
    return [(e.buy, e.sell, int(e.price), e.quantity) for e in result.executions]


def oans(book: OrderBook, side: Side) -> list[int]:
    return [o.acceptance_number for o in book.resting(side)]


# Price priority, time priority, execution price


def test_the_highest_bid_trades_first_whatever_its_arrival() -> None:
    book = book_with(order(1, "alice", BUY, 5, 100), order(2, "bob", BUY, 5, 101))
    assert trades(book.submit(order(3, "carol", SELL, 5, 100))) == [(2, 3, 101, 5)]


def test_the_lowest_ask_trades_first_whatever_its_arrival() -> None:
    book = book_with(order(1, "alice", SELL, 5, 101), order(2, "bob", SELL, 5, 100))
    assert trades(book.submit(order(3, "carol", BUY, 5, 101))) == [(3, 2, 100, 5)]


def test_within_a_price_level_the_earlier_order_trades_first() -> None:
    book = book_with(order(1, "alice", SELL, 5, 100), order(2, "bob", SELL, 5, 100))
    assert trades(book.submit(order(3, "carol", BUY, 7, 100))) == [(3, 1, 100, 5), (3, 2, 100, 2)]
    assert oans(book, SELL) == [2]


@pytest.mark.parametrize(
    ("resting", "incoming", "price"),
    [
        (order(1, "alice", SELL, 5, 100), order(2, "bob", BUY, 5, 105), 100),
        (order(1, "alice", BUY, 5, 100), order(2, "bob", SELL, 5, 95), 100),
    ],
)
def test_an_execution_happens_at_the_resting_orders_price(resting: Order, incoming: Order, price: int) -> None:
    result = book_with(resting).submit(incoming)
    assert [e.price for e in result.executions] == [Decimal(price)]
    assert result.executions[0].aggressor is incoming.side


def test_an_execution_names_both_orders_and_both_users() -> None:
    result = book_with(order(1, "alice", BUY, 5, 100)).submit(order(2, "bob", SELL, 5, 100))
    assert result.executions == [Execution(1, 2, Decimal(100), 5, "alice", "bob", SELL)]


def test_limit_orders_that_do_not_cross_both_rest() -> None:
    book = book_with(order(1, "alice", BUY, 5, 99), order(2, "bob", SELL, 5, 100))
    assert (book.best_bid(), book.best_ask()) == (Decimal(99), Decimal(100))


# Partial fills


def test_a_partly_filled_resting_order_keeps_its_place_at_the_front() -> None:
    book = book_with(order(1, "alice", SELL, 10, 100), order(2, "bob", SELL, 10, 100))
    result = book.submit(order(3, "carol", BUY, 4, 100))
    assert trades(result) == [(3, 1, 100, 4)]
    assert result.touched == [book.orders[1]] and book.orders[1].remaining == 6
    assert oans(book, SELL) == [1, 2]


def test_a_partly_filled_incoming_limit_order_rests_its_remainder() -> None:
    book = book_with(order(1, "alice", SELL, 3, 100))
    incoming = order(2, "bob", BUY, 10, 100)
    result = book.submit(incoming)
    assert trades(result) == [(2, 1, 100, 3)]
    assert result.rested and result.cancel_reason is None and incoming.remaining == 7
    assert book.depth(BUY) == [(Decimal(100), 7)] and book.best_ask() is None


# Market orders and times in force


def test_a_market_order_sweeps_several_levels_and_cancels_what_is_left() -> None:
    book = book_with(order(1, "alice", SELL, 2, 100), order(2, "bob", SELL, 3, 101), order(3, "alice", SELL, 4, 102))
    result = book.submit(order(4, "carol", BUY, 20, None))
    assert trades(result) == [(4, 1, 100, 2), (4, 2, 101, 3), (4, 3, 102, 4)]
    assert (result.cancelled_quantity, result.cancel_reason) == (11, CancelReason.MARKET_REMAINDER)
    assert not result.rested and book.depth(SELL) == [] and book.depth(BUY) == []


def test_a_market_order_on_an_empty_side_is_cancelled_whole() -> None:
    result = book_with(order(1, "alice", BUY, 5, 100)).submit(order(2, "bob", BUY, 5, None))
    assert result.executions == []
    assert (result.cancelled_quantity, result.cancel_reason) == (5, CancelReason.MARKET_REMAINDER)


def test_an_ioc_order_fills_what_crosses_and_cancels_the_rest() -> None:
    book = book_with(order(1, "alice", SELL, 3, 100), order(2, "bob", SELL, 3, 102))
    result = book.submit(order(3, "carol", BUY, 10, 101, IOC))
    assert trades(result) == [(3, 1, 100, 3)]
    assert (result.cancelled_quantity, result.cancel_reason) == (7, CancelReason.IOC_REMAINDER)
    assert not result.rested and book.best_bid() is None and oans(book, SELL) == [2]


def test_a_fok_order_fills_completely_when_enough_crosses() -> None:
    book = book_with(order(1, "alice", SELL, 3, 100), order(2, "bob", SELL, 3, 101))
    result = book.submit(order(3, "carol", BUY, 5, 101, FOK))
    assert trades(result) == [(3, 1, 100, 3), (3, 2, 101, 2)]
    assert result.cancel_reason is None and result.cancelled_quantity == 0
    assert book.depth(SELL) == [(Decimal(101), 1)]


def test_a_fok_order_that_cannot_fill_completely_leaves_the_book_untouched() -> None:
    book = book_with(order(1, "alice", SELL, 3, 100), order(2, "bob", SELL, 3, 102))
    before = book.depth(SELL)
    result = book.submit(order(3, "carol", BUY, 5, 101, FOK))
    assert result.executions == [] and result.touched == []
    assert (result.cancelled_quantity, result.cancel_reason) == (5, CancelReason.FOK_NOT_FILLABLE)
    assert book.depth(SELL) == before and book.orders[1].remaining == 3


def test_a_fok_order_counts_no_liquidity_behind_its_own_resting_order() -> None:
    book = book_with(order(1, "bob", SELL, 3, 100), order(2, "carol", SELL, 3, 100), order(3, "alice", SELL, 9, 101))
    result = book.submit(order(4, "carol", BUY, 4, 101, FOK))
    assert result.executions == [] and result.cancel_reason is CancelReason.FOK_NOT_FILLABLE
    assert book.depth(SELL) == [(Decimal(100), 6), (Decimal(101), 9)]


@pytest.mark.parametrize("tif", [DAY, GTC])
def test_day_and_gtc_remainders_rest_on_the_book(tif: TimeInForce) -> None:
    book = book_with(order(1, "alice", SELL, 2, 100))
    result = book.submit(order(2, "bob", BUY, 5, 100, tif))
    assert result.rested and result.cancel_reason is None
    assert book.orders[2].time_in_force is tif and book.depth(BUY) == [(Decimal(100), 3)]


# Cancel and reduce


def test_cancel_removes_a_resting_order_and_its_empty_level() -> None:
    book = book_with(order(1, "alice", BUY, 5, 100), order(2, "bob", BUY, 5, 99))
    cancelled = book.cancel(1)
    assert cancelled is not None and cancelled.acceptance_number == 1
    assert 1 not in book.orders and book.depth(BUY) == [(Decimal(99), 5)]


@pytest.mark.parametrize("cancelled", [1, 2, 3], ids=["oldest", "middle", "newest"])
def test_cancel_anywhere_in_a_level_keeps_the_others_in_time_order(cancelled: int) -> None:
    book = book_with(order(1, "alice", SELL, 5, 100), order(2, "bob", SELL, 5, 100), order(3, "dave", SELL, 5, 100))
    assert book.cancel(cancelled) is not None
    left = [oan for oan in (1, 2, 3) if oan != cancelled]
    assert oans(book, SELL) == left and book.depth(SELL) == [(Decimal(100), 10)]
    result = book.submit(order(4, "carol", BUY, 7, 100))
    assert trades(result) == [(4, left[0], 100, 5), (4, left[1], 100, 2)]


@pytest.mark.parametrize(
    ("side", "prices", "cancelled", "best"),
    [
        (BUY, (99, 100, 101), 3, 100),  # the best bid is the highest price, the last one the book keeps
        (BUY, (99, 100, 101), 2, 101),
        (BUY, (99, 100, 101), 1, 101),
        (SELL, (99, 100, 101), 1, 100),  # the best ask is the lowest, the first one
        (SELL, (99, 100, 101), 2, 99),
        (SELL, (99, 100, 101), 3, 99),
    ],
)
def test_a_level_emptied_by_cancel_is_gone_from_best_price_and_depth(
    side: Side, prices: tuple[int, ...], cancelled: int, best: int
) -> None:
    book = book_with(*(order(oan, "alice", side, 5, p) for oan, p in enumerate(prices, start=1)))
    book.cancel(cancelled)
    best_price = book.best_bid() if side is BUY else book.best_ask()
    assert best_price == Decimal(best)
    assert Decimal(prices[cancelled - 1]) not in dict(book.depth(side)) and len(book.depth(side)) == 2


@pytest.mark.parametrize(("side", "taken"), [(BUY, 101), (SELL, 99)])
def test_a_level_emptied_by_a_match_is_gone_and_the_next_price_is_best(side: Side, taken: int) -> None:
    book = book_with(order(1, "alice", side, 5, 99), order(2, "bob", side, 5, 100), order(3, "dave", side, 5, 101))
    result = book.submit(order(4, "carol", SELL if side is BUY else BUY, 5, None))
    assert [e.price for e in result.executions] == [Decimal(taken)]
    assert [price for price, _ in book.depth(side)] == [Decimal(100), Decimal(99 if side is BUY else 101)]
    assert (book.best_bid() if side is BUY else book.best_ask()) == Decimal(100)


def test_an_order_that_crosses_nothing_rests_without_touching_the_other_side() -> None:
    book = book_with(order(1, "alice", SELL, 5, 101))
    result = book.submit(order(2, "bob", BUY, 5, 100))
    assert result == Result([], True, 0, None, [])
    assert book.depth(SELL) == [(Decimal(101), 5)] and book.depth(BUY) == [(Decimal(100), 5)]


def test_a_cancelled_order_submitted_again_rests_once_in_its_own_time_priority() -> None:
    """The exchange resubmits the very object it cancelled when a trade is reversed (trading.restore_buy)."""
    book = book_with(order(1, "alice", BUY, 5, 100), order(2, "bob", BUY, 5, 100))
    cancelled = book.cancel(1)
    assert cancelled is not None and book.submit(cancelled).rested
    assert oans(book, BUY) == [1, 2] and book.depth(BUY) == [(Decimal(100), 10)]
    result = book.submit(order(3, "carol", SELL, 20, 100))
    assert trades(result) == [(1, 3, 100, 5), (2, 3, 100, 5)] and book.depth(BUY) == []


def test_cancelling_an_unknown_or_finished_order_does_nothing() -> None:
    book = book_with(order(1, "alice", SELL, 5, 100))
    book.submit(order(2, "bob", BUY, 5, 100))
    assert book.cancel(1) is None and book.cancel(99) is None


def test_a_reduced_order_keeps_its_time_priority() -> None:
    book = book_with(order(1, "alice", SELL, 10, 100), order(2, "bob", SELL, 10, 100))
    reduced = book.reduce(1, 4)
    assert (reduced.quantity, reduced.remaining) == (4, 4)
    assert trades(book.submit(order(3, "carol", BUY, 5, 100))) == [(3, 1, 100, 4), (3, 2, 100, 1)]


def test_reducing_a_partly_filled_order_lowers_its_quantity_by_the_same_amount() -> None:
    book = book_with(order(1, "alice", SELL, 10, 100))
    book.submit(order(2, "bob", BUY, 3, 100))
    reduced = book.reduce(1, 5)
    assert (reduced.quantity, reduced.remaining, reduced.filled) == (8, 5, 3)


@pytest.mark.parametrize("quantity", [11, 0, -1])
def test_reduce_refuses_an_increase_or_nothing_left_and_changes_nothing(quantity: int) -> None:
    book = book_with(order(1, "alice", SELL, 10, 100))
    with pytest.raises(ValueError):
        book.reduce(1, quantity)
    assert (book.orders[1].quantity, book.orders[1].remaining) == (10, 10)


# Self-trade prevention


def test_self_trade_prevention_cancels_only_the_incoming_remainder() -> None:
    book = book_with(order(1, "bob", SELL, 2, 99), order(2, "alice", SELL, 5, 100), order(3, "carol", SELL, 5, 100))
    result = book.submit(order(4, "alice", BUY, 10, 100))
    assert trades(result) == [(4, 1, 99, 2)]
    assert (result.cancelled_quantity, result.cancel_reason) == (8, CancelReason.SELF_TRADE_PREVENTED)
    assert not result.rested and book.best_bid() is None
    assert oans(book, SELL) == [2, 3] and book.orders[2].remaining == 5


def test_self_trade_prevention_also_stops_a_market_order() -> None:
    book = book_with(order(1, "alice", BUY, 5, 100))
    result = book.submit(order(2, "alice", SELL, 5, None))
    assert result.executions == [] and result.cancel_reason is CancelReason.SELF_TRADE_PREVENTED
    assert oans(book, BUY) == [1]


# What the book shows


def test_an_empty_book_has_no_best_prices_and_no_depth() -> None:
    book = OrderBook("KBT")
    assert (book.best_bid(), book.best_ask(), book.depth(BUY), book.depth(SELL)) == (None, None, [], [])


def test_depth_sums_each_level_best_price_first() -> None:
    book = book_with(
        order(1, "alice", BUY, 5, 99),
        order(2, "bob", BUY, 3, 100),
        order(3, "carol", BUY, 2, 99),
        order(4, "alice", SELL, 4, 102),
        order(5, "bob", SELL, 6, 101),
    )
    assert book.depth(BUY) == [(Decimal(100), 3), (Decimal(99), 7)]
    assert book.depth(SELL) == [(Decimal(101), 6), (Decimal(102), 4)]
    assert (book.best_bid(), book.best_ask()) == (Decimal(100), Decimal(101))
    assert oans(book, BUY) == [2, 1, 3]


def test_a_loaded_order_with_older_priority_goes_ahead_in_its_level() -> None:
    book = book_with(order(5, "alice", SELL, 5, 100))
    older = order(7, "bob", SELL, 5, 100)
    older.priority = 3
    book.load(older)
    assert oans(book, SELL) == [7, 5]


def test_an_execution_is_an_immutable_record_named_by_field() -> None:
    execution = book_with(order(1, "alice", SELL, 5, 100)).submit(order(2, "bob", BUY, 3, None)).executions[0]
    assert (execution.buy, execution.sell, execution.price, execution.quantity) == (2, 1, Decimal(100), 3)
    assert (execution.buyer, execution.seller, execution.aggressor) == ("bob", "alice", BUY)
    with pytest.raises(AttributeError):
        execution.quantity = 5  # type: ignore[misc]


def test_a_cancelled_remainder_is_not_reported_as_filled() -> None:
    ioc = order(1, "alice", BUY, 10, 100, IOC)
    result = OrderBook("KBT").submit(ioc)
    assert (result.executions, result.cancelled_quantity) == ([], 10)
    assert ioc.filled == 0


# Properties against a reference model

USERS = ("alice", "bob", "carol")
PRICES = tuple(Decimal(p) for p in range(98, 103))


@dataclass(frozen=True)
class Submit:
    user: str
    side: Side
    price: Decimal | None  # None: a market order
    quantity: int
    tif: TimeInForce


@dataclass(frozen=True)
class Cancel:
    pick: int  # which submitted order, modulo how many there are


@dataclass(frozen=True)
class Reduce:
    pick: int  # which resting order, modulo how many there are
    quantity: int


Action = Submit | Cancel | Reduce


@dataclass
class Resting:
    oan: int  # also the time priority: no action here replaces an order
    user: str
    side: Side
    price: Decimal
    remaining: int


@dataclass(frozen=True)
class Outcome:
    """What a submit did, in terms both books can be compared on."""

    executions: tuple[Execution, ...]
    cancelled: int
    reason: CancelReason | None
    rested: bool


def crosses(incoming: Submit, price: Decimal) -> bool:
    if incoming.price is None:
        return True
    return price <= incoming.price if incoming.side is BUY else price >= incoming.price


def execution(incoming: Submit, oan: int, resting: Resting, quantity: int) -> Execution:
    buy, buyer, sell, seller = oan, incoming.user, resting.oan, resting.user
    if incoming.side is SELL:
        buy, buyer, sell, seller = sell, seller, buy, buyer
    return Execution(buy, sell, resting.price, quantity, buyer, seller, incoming.side)


class ReferenceBook:
    """Price-time priority as a plain list, re-sorted by (price, priority) on every look."""

    def __init__(self) -> None:
        self.resting: list[Resting] = []

    def queue(self, side: Side) -> list[Resting]:
        best_first = -1 if side is BUY else 1
        return sorted((o for o in self.resting if o.side is side), key=lambda o: (best_first * o.price, o.oan))

    def submit(self, incoming: Submit, oan: int) -> Outcome:
        opposite = BUY if incoming.side is SELL else SELL
        crossing = [o for o in self.queue(opposite) if crosses(incoming, o.price)]
        if incoming.tif is FOK and self._available(crossing, incoming.user) < incoming.quantity:
            return Outcome((), incoming.quantity, CancelReason.FOK_NOT_FILLABLE, False)
        executions, open_quantity, reason = self._take(incoming, oan, crossing)
        self.resting = [o for o in self.resting if o.remaining]
        if reason is None and open_quantity:
            reason = self._remainder_reason(incoming)
        if open_quantity and reason is None:
            assert incoming.price is not None
            self.resting.append(Resting(oan, incoming.user, incoming.side, incoming.price, open_quantity))
            return Outcome(tuple(executions), 0, None, True)
        return Outcome(tuple(executions), open_quantity, reason, False)

    def cancel(self, oan: int) -> int | None:
        found = [o for o in self.resting if o.oan == oan]
        self.resting = [o for o in self.resting if o.oan != oan]
        return found[0].remaining if found else None

    def reduce(self, oan: int, quantity: int) -> int | str:
        found = [o for o in self.resting if o.oan == oan]
        if not found:
            return "unknown"
        if not 0 < quantity <= found[0].remaining:
            return "refused"
        found[0].remaining = quantity
        return quantity

    @staticmethod
    def _available(crossing: list[Resting], user: str) -> int:
        total = 0
        for resting in crossing:
            if resting.user == user:
                break
            total += resting.remaining
        return total

    @staticmethod
    def _take(incoming: Submit, oan: int, crossing: list[Resting]) -> tuple[list[Execution], int, CancelReason | None]:
        executions: list[Execution] = []
        open_quantity = incoming.quantity
        for resting in crossing:
            if not open_quantity:
                break
            if resting.user == incoming.user:
                return executions, open_quantity, CancelReason.SELF_TRADE_PREVENTED
            quantity = min(open_quantity, resting.remaining)
            resting.remaining -= quantity
            open_quantity -= quantity
            executions.append(execution(incoming, oan, resting, quantity))
        return executions, open_quantity, None

    @staticmethod
    def _remainder_reason(incoming: Submit) -> CancelReason | None:
        if incoming.price is None:
            return CancelReason.MARKET_REMAINDER
        if incoming.tif in (IOC, FOK):
            return CancelReason.IOC_REMAINDER
        return None


@dataclass
class Ledger:
    """What the test itself knows about one submitted order, whatever the engine says."""

    order: Order
    original: int
    cancelled: int = 0
    reduced: int = 0


class Session:
    """Drives the engine and the reference with the same actions, recording what each did."""

    def __init__(self) -> None:
        self.book = OrderBook("KBT")
        self.reference = ReferenceBook()
        self.ledgers: dict[int, Ledger] = {}
        self.executions: list[Execution] = []
        self.engine_did: object = None
        self.reference_did: object = None

    def run(self, actions: Sequence[Action]) -> Iterator[Action]:
        for action in actions:
            if isinstance(action, Submit):
                self._submit(action)
            elif isinstance(action, Cancel):
                self._cancel(action)
            else:
                self._reduce(action)
            yield action

    def _submit(self, action: Submit) -> None:
        oan = len(self.ledgers) + 1
        order_type = OrderType.MARKET if action.price is None else OrderType.LIMIT
        incoming = Order(
            oan,
            f"c{oan}",
            action.user,
            action.side,
            order_type,
            action.price,
            action.quantity,
            action.quantity,
            action.tif,
        )
        self.reference_did = self.reference.submit(action, oan)
        result = self.book.submit(incoming)
        self.engine_did = Outcome(
            tuple(result.executions), result.cancelled_quantity, result.cancel_reason, result.rested
        )
        self.ledgers[oan] = Ledger(incoming, action.quantity, cancelled=result.cancelled_quantity)
        self.executions.extend(result.executions)

    def _cancel(self, action: Cancel) -> None:
        if not self.ledgers:
            self.engine_did = self.reference_did = None
            return
        oan = action.pick % len(self.ledgers) + 1
        self.reference_did = self.reference.cancel(oan)
        cancelled = self.book.cancel(oan)
        self.engine_did = None if cancelled is None else cancelled.remaining
        if cancelled is not None:
            self.ledgers[oan].cancelled += cancelled.remaining

    def _reduce(self, action: Reduce) -> None:
        resting = sorted(self.book.orders)
        if not resting:
            self.engine_did = self.reference_did = None
            return
        oan = resting[action.pick % len(resting)]
        before = self.book.orders[oan].remaining
        self.reference_did = self.reference.reduce(oan, action.quantity)
        try:
            self.engine_did = self.book.reduce(oan, action.quantity).remaining
        except ValueError:
            self.engine_did = "refused"
            return
        self.ledgers[oan].reduced += before - action.quantity

    def open_quantity(self, oan: int) -> int:
        return self.ledgers[oan].order.remaining if oan in self.book.orders else 0

    def executed(self, oan: int) -> int:
        return sum(e.quantity for e in self.executions if oan in (e.buy, e.sell))


@st.composite
def submits(draw: st.DrawFn) -> Submit:
    market = draw(st.integers(0, 4)) == 0
    price = None if market else draw(st.sampled_from(PRICES))
    side, tif = draw(st.sampled_from(Side)), draw(st.sampled_from(TimeInForce))
    return Submit(draw(st.sampled_from(USERS)), side, price, draw(st.integers(1, 10)), tif)


actions = st.lists(
    st.one_of(
        submits(),
        submits(),
        submits(),
        st.builds(Cancel, st.integers(0, 50)),
        st.builds(Reduce, st.integers(0, 50), st.integers(0, 11)),
    ),
    max_size=40,
)
properties = settings(max_examples=250, deadline=None, database=None)


@properties
@given(actions)
def test_the_book_is_never_crossed_at_rest(steps: list[Action]) -> None:
    session = Session()
    for _ in session.run(steps):
        bid, ask = session.book.best_bid(), session.book.best_ask()
        assert bid is None or ask is None or bid < ask


@properties
@given(actions)
def test_every_order_accounts_for_its_whole_quantity(steps: list[Action]) -> None:
    session = Session()
    for _ in session.run(steps):
        assert all(ledger.order.remaining >= 0 for ledger in session.ledgers.values())
        assert all(o.remaining > 0 for o in session.book.orders.values())
    for oan, ledger in session.ledgers.items():
        accounted = session.executed(oan) + ledger.cancelled + session.open_quantity(oan)
        assert ledger.order.quantity == accounted
        assert ledger.original == ledger.order.quantity + ledger.reduced


@properties
@given(actions)
def test_buy_orders_and_sell_orders_lose_the_same_quantity_to_executions(steps: list[Action]) -> None:
    session = Session()
    for _ in session.run(steps):
        pass
    lost = {BUY: 0, SELL: 0}
    for oan, ledger in session.ledgers.items():
        lost[ledger.order.side] += ledger.order.quantity - ledger.cancelled - session.open_quantity(oan)
    assert lost[BUY] == lost[SELL] == sum(e.quantity for e in session.executions)


@properties
@given(actions)
def test_every_step_matches_the_price_time_reference_model(steps: list[Action]) -> None:
    session = Session()
    for _ in session.run(steps):
        assert session.engine_did == session.reference_did
        for side in Side:
            expected = [(o.oan, o.remaining) for o in session.reference.queue(side)]
            assert [(o.acceptance_number, o.remaining) for o in session.book.resting(side)] == expected


@properties
@given(actions)
def test_no_execution_is_a_self_trade(steps: list[Action]) -> None:
    session = Session()
    for _ in session.run(steps):
        pass
    users = {oan: ledger.order.user_id for oan, ledger in session.ledgers.items()}
    for e in session.executions:
        assert e.buyer != e.seller
        assert (users[e.buy], users[e.sell]) == (e.buyer, e.seller)


@properties
@given(actions)
def test_order_filled_equals_its_executed_quantity(steps: list[Action]) -> None:
    session = Session()
    for _ in session.run(steps):
        pass
    for oan, ledger in session.ledgers.items():
        assert ledger.order.filled == session.executed(oan)


def reference_depth(reference: ReferenceBook, side: Side) -> list[tuple[Decimal, int]]:
    levels: dict[Decimal, int] = {}
    for resting in reference.queue(side):
        levels[resting.price] = levels.get(resting.price, 0) + resting.remaining
    return list(levels.items())


@properties
@given(actions)
def test_best_prices_and_depth_match_the_reference_at_every_step(steps: list[Action]) -> None:
    """Levels come and go by matches, cancels and FOK look-aheads: none is left behind empty."""
    session = Session()
    for _ in session.run(steps):
        for side in Side:
            expected = reference_depth(session.reference, side)
            assert session.book.depth(side) == expected
            best = session.book.best_bid() if side is BUY else session.book.best_ask()
            assert best == (expected[0][0] if expected else None)
