"""Book-entry trades at the exchange (issue 11 §2, docs/dvp.md): a custody client's order names
its safekeeping account instead of carrying a certificate, and trades only with other
book-entry orders of the issue. Each execution is instructed to settlement with a book-entry
securities leg — custody moves the position from the seller's account to the buyer's, against
the cash — and completes, like a certificate trade, only when both legs settled. There is no
name transfer and no CertID list change."""

from __future__ import annotations

from agents.exchange import instructions, order_repo
from agents.exchange.order_repo import Match, OrderRecord
from broker import logs
from broker.context import Context
from schemas.dvp import BookEntryLeg
from schemas.identity import SETTLEMENT_ID
from schemas.trading import TradeCompleted

log = logs.get("kabuto.exchange")
CUSTODY_ID = "custody"


async def instruct(ctx: Context, match: Match, sell: OrderRecord, buy: OrderRecord) -> None:
    assert sell.safekeeping_account is not None and buy.safekeeping_account is not None
    leg = BookEntryLeg(
        agent=CUSTODY_ID, deliverer_account=sell.safekeeping_account, receiver_account=buy.safekeeping_account
    )
    sealed = ctx.emit(instructions.for_execution(match, buy, sell, ctx.now.date(), leg, ctx.trust), to=SETTLEMENT_ID)
    await order_repo.transfer_requested(ctx.connection, match.matching_number, None, sealed.digest)
    log.info("book_entry_instructed", matching_number=match.matching_number)


async def settled(ctx: Context, match: Match) -> None:
    """Both legs are done: the trade completion notice (37) to buyer and seller."""
    conn = ctx.connection
    await order_repo.transfer_completed(conn, match.matching_number, None, None)
    for number in (match.buy_order, match.sell_order):
        record = await order_repo.order(conn, number)
        assert record is not None
        ctx.emit(
            TradeCompleted(
                matching_number=match.matching_number,
                name_transfer_number=None,
                client_order_id=record.order.client_order_id,
                acceptance_number=record.order.acceptance_number,
                side=record.order.side,
                issue_code=match.issue_code,
                price=match.price,
                quantity=match.shares,
                amount=match.price * match.shares,
            ),
            to=record.order.user_id,
        )
    log.info("book_entry_trade_completed", matching_number=match.matching_number)
