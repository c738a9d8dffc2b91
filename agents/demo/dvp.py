"""Demo flow 4, delivery versus payment (issue 11, docs/dvp.md): an uncovered buy order refused
before it can trade, and a trade whose buyer could not pay on the day — pending for lack of cash,
both sides as they were — recycled and settled, both legs at once, once the buyer is funded."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from typing import TypeVar
from uuid import UUID

import asyncpg

from agents import render
from agents.demo.issuance import Say, held_certificate
from agents.exchange import report_repo, reporting
from agents.exchange.reports import ReportedTrade, TradeReport
from agents.investor import order_repo
from agents.investor.app import IssuanceOrder, request_certificates
from agents.investor.domain import Dividend
from agents.investor.reported import sign_purchase, sign_sale
from agents.investor.trading import OrderTicket, place_order
from agents.issuer.domain import Offering
from agents.settlement import app as settlement
from agents.settlement import dvp_repo, instruction_desk
from broker.runtime import AgentRuntime
from broker.trade_reports import ReportTerms
from schemas.identity import EXCHANGE_ID, SETTLEMENT_ID
from schemas.issuance import DividendMethod
from schemas.trading import Side

T = TypeVar("T")


async def dvp(runtimes: dict[str, AgentRuntime], offering: Offering, alice: str, bob: str, say: Say) -> None:
    say("\nFlow 4 — delivery versus payment (issue 11)")
    run = secrets.token_hex(3)
    ledger = runtimes[SETTLEMENT_ID]
    empty, alice_cash = f"{bob}-empty-{run}", f"{alice}-dvp-{run}"
    await ledger.command(SETTLEMENT_ID, settlement.open_account(empty, bob))
    await ledger.command(SETTLEMENT_ID, settlement.open_account(alice_cash, alice))
    await _uncovered(runtimes, offering, bob, empty, say)
    await _uncovered(runtimes, offering, bob, alice_cash, say)
    await _recycled(runtimes, offering, alice, bob, (alice_cash, empty), say)


async def _uncovered(runtimes: dict[str, AgentRuntime], offering: Offering, bob: str, account: str, say: Say) -> None:
    """R-001-23: settlement must hold the order's worst case on the buyer's own account first."""
    investor = runtimes["investor"]
    ticket = OrderTicket(
        f"uncovered-{secrets.token_hex(3)}",
        offering.issue_code,
        Side.BUY,
        100,
        account,
        offering.offer_price,
        holder_name=bob.capitalize(),
        holder_address=f"2-2 Kabuto-cho, Tokyo ({bob})",
    )
    sent = await investor.command(bob, place_order(ticket))
    await investor.outcomes.reply("order.rejected", sent, timeout=30)
    record = await investor.query(lambda c: order_repo.order(c, bob, ticket.client_order_id))
    assert record is not None
    say(
        f"  {bob} bids for 100 {offering.issue_code} at {offering.offer_price:,} paying from {account}: refused "
        f"before it could trade, {record.reason} — {record.detail}. Nothing moved."
    )


async def _recycled(
    runtimes: dict[str, AgentRuntime],
    offering: Offering,
    alice: str,
    bob: str,
    accounts: tuple[str, str],
    say: Say,
) -> None:
    investor, exchange, ledger = runtimes["investor"], runtimes[EXCHANGE_ID], runtimes[SETTLEMENT_ID]
    bob_cash = accounts[1]
    request = await investor.command(alice, request_certificates(_order(offering, alice)))
    await investor.outcomes.reply("certificate.issued", request, timeout=30)
    certificate = await held_certificate(investor, alice, offering.issue_code, 100)
    price = offering.offer_price
    terms = ReportTerms(
        f"negotiated-{certificate.cert_id}", offering.issue_code, offering.share_class, 100, price, alice, bob
    )
    holder = (bob.capitalize(), f"2-2 Kabuto-cho, Tokyo ({bob})")
    sale = await investor.command(alice, sign_sale(terms, certificate.cert_id, accounts[0]))  # each party signs
    purchase = await investor.command(bob, sign_purchase(terms, sale.certificate, accounts[1], holder))
    trade = TradeReport.of(terms, (sale.certificate, sale.account), (purchase.consent, purchase.account), holder)
    reported = await exchange.command(EXCHANGE_ID, lambda ctx: reporting.report(ctx, trade))
    number = reported.matching_number
    await ledger.outcomes.wait_for(reported.instruction_id, timeout=30)
    say(
        f"  {alice} and {bob} agree 100 shares at {price:,} off the order book; the exchange reports the trade "
        f"for settlement (instruction {number}). Such a trade has no order cover, so settlement checks {bob}'s "
        f"cash itself:"
    )
    await _show(ledger, number, say)
    say(
        f"  {alice}'s certificate is untouched at the issuer and {bob} paid nothing. Then {bob} is funded and "
        "settlement recycles its pending instructions:"
    )
    await ledger.command(SETTLEMENT_ID, settlement.deposit(bob_cash, price * 100, f"dvp-{number}"))
    await ledger.command(SETTLEMENT_ID, instruction_desk.recycle())
    # The recycled attempt's reserve opens a conversation that the commit answer closes.
    reserve = await ledger.query(
        lambda c: c.fetchval(
            "SELECT message_id FROM outbox_messages WHERE message_type = 'securities.reserve'"
            " ORDER BY seq DESC, place DESC LIMIT 1"
        )
    )
    await ledger.outcomes.reply("securities.committed", reserve, timeout=30)
    await _show(ledger, number, say)
    rows = []
    for account in accounts:
        statement = await ledger.command(SETTLEMENT_ID, settlement.statement(account))
        rows.append([account, statement.account.owner_user_id, f"{statement.account.balance:,.0f}"])
    say("  Both legs at once: the issuer registered the 100 shares to " + bob + ", and the cash moved:")
    say(render.table(["account", "owner", "balance JPY"], rows, indent="    "))
    ended = await _until(lambda: exchange.query(lambda c: report_repo.reported(c, number)), _ended)
    assert ended is not None and ended.new_cert_id is not None
    new_cert = ended.new_cert_id
    say(
        f"  The exchange kept the reported trade ({ended.status}) and moved its CertID list: {ended.new_cert_id} "
        f"is listed for {bob}, {ended.cert_id} of {alice} is retired."
    )
    wallet = await _until(lambda: investor.query(lambda c: _wallet(c, (alice, bob))), lambda w: new_cert in w)
    say(
        f"  Told by the exchange that the trade settled, {bob}'s agent asked the issuer for the new certificate and "
        f"holds it ({wallet[new_cert]}); {alice}'s agent gave the old one up "
        f"({wallet.get(ended.cert_id, 'not in the wallet')})."
    )


def _ended(trade: ReportedTrade | None) -> bool:
    return trade is not None and trade.status != "transfer_requested"


async def _wallet(connection: asyncpg.Connection, holders: tuple[str, ...]) -> dict[UUID, str]:
    """Each certificate of ``holders`` in the wallet: its holder and status."""
    rows = await connection.fetch(
        "SELECT cert_id, holder_user_id, status FROM wallet WHERE holder_user_id = ANY($1::text[])", list(holders)
    )
    return {r["cert_id"]: f"{r['holder_user_id']}, {r['status']}" for r in rows}


async def _until(read: Callable[[], Awaitable[T]], done: Callable[[T], bool], timeout: float = 30.0) -> T:
    """What ``read`` returns once ``done`` says so: another agent's answer, on its way."""
    async with asyncio.timeout(timeout):
        while not done(found := await read()):  # noqa: ASYNC110 — another agent's rows: no event for them
            await asyncio.sleep(0.05)
    return found


async def _show(ledger: AgentRuntime, number: int, say: Say) -> None:
    i = await ledger.query(lambda c: dvp_repo.instruction(c, number))
    assert i is not None
    say(
        render.table(
            ["instruction", "processing", "matching", "settlement", "reason", "settled", "attempt"],
            [
                [
                    number,
                    i.processing.value,
                    i.matching.value,
                    i.settlement.value,
                    i.reason.value if i.reason else "",
                    f"{i.settled_quantity}/{i.quantity}",
                    i.attempt,
                ]
            ],
            indent="    ",
        )
    )


def _order(offering: Offering, user: str) -> IssuanceOrder:
    return IssuanceOrder(
        issue_code=offering.issue_code,
        share_class=offering.share_class,
        shares=100,
        holder_name=user.capitalize(),
        holder_address=f"1-1 Kabuto-cho, Nihonbashi, Chuo-ku, Tokyo ({user})",
        dividend_delivery=Dividend(method=DividendMethod.SETTLEMENT_ACCOUNT, account=f"settlement:{user}"),
    )
