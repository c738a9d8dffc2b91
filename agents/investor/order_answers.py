"""What the exchange answers about an investor's order, kept in sets (broker.set_based): its
acceptance (R-001-27), its executions, and the completion of each trade (R-001-40), after which
a buyer asks the issuer for its certificate by name-transfer number (message 39).

The investor agent takes an acceptance, two executions and two completions a trade, and one at
a time they were most of its statements (docs/performance.md, stop 28). A set holds any of the
three for different orders, and for one order in the steps an order goes through — accepted,
then executed, then completed — which is the order the set applies them in: every acceptance,
then every execution, then every completion, each kind with one statement per table.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol
from uuid import UUID

from agents.investor import order_repo, repo
from broker import group_commit, logs
from broker.context import Context
from broker.errors import Reason, SecurityRejected
from broker.sealed_box import sealed_dividend
from broker.set_based import OneByOne, SetBased
from schemas.identity import ISSUER_ID
from schemas.issuance import DividendMethod
from schemas.trading import CertificateRequestAfterTransfer, OrderAccepted, OrderExecuted, Side, TradeCompleted

log = logs.get("kabuto.investor")

Answer = OrderAccepted | OrderExecuted | TradeCompleted
_STEP: dict[type[Answer], int] = {OrderAccepted: 0, OrderExecuted: 1, TradeCompleted: 2}


async def _on_answers(items: Sequence[tuple[Answer, Context]]) -> None:
    accepted = [(m, ctx) for m, ctx in items if isinstance(m, OrderAccepted)]
    executed = [(m, ctx) for m, ctx in items if isinstance(m, OrderExecuted)]
    completed = [(m, ctx) for m, ctx in items if isinstance(m, TradeCompleted)]
    _check_set_wise(items)
    await _accepted(accepted, alone=len(items) == 1)
    await _executed(executed)
    await _completed(completed)


def _check_set_wise(items: Sequence[tuple[Answer, Context]]) -> None:
    """A user's row of a trade is keyed by the trade, not the order: in a self-trade (the user
    on both sides) a completion naming one order completes the row an execution naming the
    other wrote. Applied step by step, an execution after such a completion in the set would
    be applied before it, where one at a time the completion found no row yet. The set's keys
    are orders, so such a set is given back (found by an independent test suite, stop 28)."""
    completed: dict[tuple[str, int], str] = {}
    for message, ctx in items:
        if isinstance(message, OrderAccepted):
            continue
        trade = (ctx.identity.user_id, message.matching_number)
        if isinstance(message, TradeCompleted):
            completed.setdefault(trade, message.client_order_id)
        elif (
            isinstance(message, OrderExecuted)
            and completed.get(trade, message.client_order_id) != message.client_order_id
        ):
            raise OneByOne(
                f"trade {message.matching_number} completed for another order of its user before this execution"
            )


async def _accepted(items: Sequence[tuple[OrderAccepted, Context]], *, alone: bool) -> None:
    """R-001-27: verify the echoed hash of our request and keep the acceptance number. A refusal
    rolls the set back; run again one at a time, the answer at fault is refused alone."""
    if not items:
        return
    connection = items[0][1].connection
    rows = [(ctx.identity.user_id, m.client_order_id, m.acceptance_number) for m, ctx in items]
    records = {(r.user_id, r.client_order_id): r for r in await order_repo.accept_orders(connection, rows)}
    for message, ctx in items:
        user = ctx.identity.user_id
        record = records.get((user, message.client_order_id))
        if record is None:
            raise SecurityRejected(Reason.UNSOLICITED, f"no order {message.client_order_id} of {user}")
        if message.request_hash != record.request_hash:
            raise SecurityRejected(Reason.SIGNATURE_INVALID, "order acceptance echoes another request (R-001-07)")
        if record.replaces is None:
            continue
        # The replacement takes over: one live order, one commitment. Retiring the order it
        # replaces reaches into another order's rows, which the set's other answers may name.
        if not alone:
            raise OneByOne(f"order {record.client_order_id} replaces {record.replaces}")
        await order_repo.replaced(connection, record.user_id, record.replaces, record.client_order_id)


async def _executed(items: Sequence[tuple[OrderExecuted, Context]]) -> None:
    if not items:
        return
    fills = [
        order_repo.Fill(
            ctx.identity.user_id, m.client_order_id, m.matching_number, m.side.value, m.issue_code, m.price, m.quantity
        )
        for m, ctx in items
    ]
    found = await order_repo.record_executions(items[0][1].connection, fills)
    for fill, has_order in zip(fills, found, strict=True):
        if not has_order:
            raise SecurityRejected(Reason.UNSOLICITED, f"no order {fill.client_order_id} of {fill.user_id}")


async def _completed(items: Sequence[tuple[TradeCompleted, Context]]) -> None:
    """R-001-40: each execution completed; a seller's transferred certificate surrendered, a
    buyer's new one asked for by name-transfer number (message 39)."""
    if not items:
        return
    connection = items[0][1].connection
    rows = [(ctx.identity.user_id, m.client_order_id, m.matching_number, m.name_transfer_number) for m, ctx in items]
    records = await order_repo.complete_executions(connection, rows)
    surrendered, requests = [], []
    for message, ctx in items:
        user = ctx.identity.user_id
        record = records.get((user, message.client_order_id))
        if record is None:  # the change is rolled back with the set
            raise SecurityRejected(Reason.UNSOLICITED, f"no order {message.client_order_id} of {user}")
        with ctx.bound():
            if message.name_transfer_number is None:  # a book-entry trade: the shares moved at custody
                log.info("book_entry_trade_completed", matching_number=message.matching_number, side=message.side.value)
            elif message.side is Side.SELL:
                assert message.transferred_cert_id is not None
                surrendered.append(message.transferred_cert_id)
            else:
                assert message.name_transfer_number is not None
                requests.append(
                    ask_certificate(ctx, record, message.name_transfer_number, message.issue_code, message.quantity)
                )
                log.info("trade_completed", ntn=message.name_transfer_number, side=message.side.value)
    await order_repo.surrender_all(connection, surrendered)
    if requests:  # new ids nothing else in the batch can name: made by the statement that claims it
        await group_commit.ride_or_write(connection, repo.requests_recorded(requests))


class Buyer(Protocol):
    """Who asks for a new certificate, as an order or a signed report keeps it."""

    @property
    def user_id(self) -> str: ...
    @property
    def settlement_account(self) -> str: ...
    @property
    def holder_name(self) -> str | None: ...
    @property
    def holder_address(self) -> str | None: ...
    @property
    def dividend_method(self) -> str | None: ...
    @property
    def dividend_account(self) -> str | None: ...


def ask_certificate(
    ctx: Context, buyer: Buyer, name_transfer_number: int, issue_code: str, shares: int
) -> tuple[UUID, str, str, str, int]:
    """The buyer's request for its certificate by NTN (message 39), emitted; the row to record it."""
    delivery = sealed_dividend(
        ctx.trust,
        buyer.user_id,
        DividendMethod(buyer.dividend_method or DividendMethod.SETTLEMENT_ACCOUNT),
        buyer.dividend_account or buyer.settlement_account,
    )  # R-001-44: the dividend account for settlement's eyes only
    sealed = ctx.emit(
        CertificateRequestAfterTransfer(
            name_transfer_number=name_transfer_number,
            holder_name=buyer.holder_name or buyer.user_id,
            holder_address=buyer.holder_address or "",
            dividend_delivery=delivery,
        ),
        to=ISSUER_ID,
    )
    return sealed.envelope.message_id, buyer.user_id, "after_transfer", issue_code, shares


# Keyed by the order (its client order id; another user's order of the same id only cuts a run
# more often than needed), at the step the answer takes it to.
on_answer: SetBased[Answer] = SetBased(_on_answers, keys=lambda m: (m.client_order_id,), phase=lambda m: _STEP[type(m)])
