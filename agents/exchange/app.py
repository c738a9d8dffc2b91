"""The exchange's handlers."""

from __future__ import annotations

from agents.exchange import order_repo, prices, repo, standing, standing_repo, trading
from agents.exchange.read_ahead import READ_AHEAD
from agents.exchange.warm_book import BOOKS
from broker import logs
from broker.context import Context
from broker.group_commit import scopes
from broker.running_totals import folding
from broker.runtime import AgentDefinition
from schemas.identity import EXCHANGE_ID, Role
from schemas.issuance import CertIdListUpdated
from schemas.prices import SubscribePrices

log = logs.get("kabuto.exchange")


async def on_certid_list(update: CertIdListUpdated, ctx: Context) -> None:
    """Seed 001 Phase 1.6 (R-001-19): store the issuer's CertID list, merged by version."""
    await repo.merge(ctx.connection, update)
    if update.retired:  # a CertID retired off the exchange (transfer, reissue) can back no order
        await trading.cancel_orders_backed_by(ctx, update.retired)
    log.info(
        "certid_list_stored",
        issue_code=update.issue_code,
        kind=update.kind,
        version=update.version,
        valid=len(update.valid),
        retired=len(update.retired),
    )


AGENT = AgentDefinition(
    id=EXCHANGE_ID,
    role=Role.EXCHANGE,
    # Every handler puts the books it used back warm (issue 8, agents/exchange/warm_book.py).
    # An order whose view was read ahead may leave its row to be written with its run's
    # (agents/exchange/read_ahead.py); any other handler writes them first.
    handlers=BOOKS.sealing_all(
        READ_AHEAD.writing_held_all(
            {CertIdListUpdated: on_certid_list, SubscribePrices: prices.on_subscribe, **trading.HANDLERS}
        )
    ),
    # and a group-committed batch passes them from handler to handler, sealed once at its end;
    # its trades' prices are recorded once per issue at its end, and reach the subscribers at
    # most once per KABUTO_PRICE_INTERVAL (prices.Conflation, the job prices.announce_owed).
    # and the acceptance views of its orders are read by runs, a statement for each
    # (agents/exchange/read_ahead.py).
    batch_scope=scopes(BOOKS.batch, prices.PRICES.batch, READ_AHEAD.batch),
    background=(
        folding(order_repo.OPEN_BUY_EXPOSURE, standing_repo.STANDING_COVER_DRAWN),
        standing.close_drained,
        prices.announce_owed,
    ),
)
