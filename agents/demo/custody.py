"""Demo flow 4 (issue 11): alice deposits a certificate into custody — the custodian becomes
holder of record at the issuer and her position rises once the issuer confirms — then sells
book-entry to bob, also a custody client, through the exchange; settlement and custody settle
it delivery versus payment: the position moves at custody against the cash, both or neither."""

from __future__ import annotations

import secrets
from decimal import Decimal

from agents import render
from agents.custody import operators
from agents.custody.deposits import ACCOUNT_NOTE
from agents.demo.issuance import Say, held_certificate
from agents.investor.lifecycle import hand_over
from agents.investor.trading import OrderTicket, place_order
from agents.settlement import app as settlement
from broker.runtime import AgentRuntime
from schemas.identity import SETTLEMENT_ID
from schemas.trading import Side

CUSTODY_ID = "custody"


async def custody(
    runtimes: dict[str, AgentRuntime], issue: str, price: Decimal, alice: str, bob: str, say: Say
) -> None:
    investor, keeper, ledger = runtimes["investor"], runtimes[CUSTODY_ID], runtimes[SETTLEMENT_ID]
    run = secrets.token_hex(3)
    accounts = {user: f"{user}-sk-{run}" for user in (alice, bob)}
    cash = {user: f"{user}-dvp-{run}" for user in (alice, bob)}
    for user in (alice, bob):
        await keeper.command(CUSTODY_ID, operators.open_account(accounts[user], user))
        await ledger.command(SETTLEMENT_ID, settlement.open_account(cash[user], user))
    await ledger.command(SETTLEMENT_ID, settlement.deposit(cash[bob], Decimal(1_000_000), f"dvp-{run}"))
    say("\nFlow 4, book entry — custody clients trade, delivery versus payment (issue 11)")
    say(
        f"  Custody opens safekeeping accounts {accounts[alice]} and {accounts[bob]}; "
        f"1,000,000 JPY arrives in {cash[bob]}."
    )

    certificate = await held_certificate(investor, alice, issue)
    await investor.command(alice, hand_over(certificate.cert_id, CUSTODY_ID, f"{ACCOUNT_NOTE}{accounts[alice]}"))
    await keeper.outcomes.wait(lambda s: s.type == "certificate.issued", timeout=30)
    say(
        f"  {alice} hands her {certificate.shares}-share certificate to custody; custody verifies it, claims it "
        f"at the issuer (41 → 42) and becomes holder of record; only then is her position available."
    )
    await _positions(keeper, accounts, say)

    shares = min(100, certificate.shares)
    ask = OrderTicket(
        f"be-sell-{run}", issue, Side.SELL, shares, cash[alice], price, safekeeping_account=accounts[alice]
    )
    bid = OrderTicket(f"be-buy-{run}", issue, Side.BUY, shares, cash[bob], price, safekeeping_account=accounts[bob])
    await investor.outcomes.reply("order.accepted", await investor.command(alice, place_order(ask)), timeout=30)
    bid_id = await investor.command(bob, place_order(bid))
    # custody delivered against the earmarked cash, and settlement posted it: both notices of this trade
    await investor.outcomes.wait_count(
        lambda s: s.type == "settlement.notice" and s.correlation_id == str(bid_id), 2, timeout=30
    )
    say(
        f"\n  {alice} offers {shares} book-entry from {accounts[alice]} at {price:,}; {bob} bids from "
        f"{accounts[bob]}. The exchange matches them and instructs settlement; settlement earmarks {bob}'s cash "
        f"and asks custody to deliver against it: custody reserves {alice}'s shares and moves them to {bob} in "
        f"one step, then settlement posts the earmarked cash; the trade completes only then."
    )
    await _positions(keeper, accounts, say)
    rows = []
    for user in (alice, bob):
        statement = await ledger.command(SETTLEMENT_ID, settlement.statement(cash[user]))
        rows.append([cash[user], user, f"{statement.account.balance:,.0f}"])
    say(render.table(["account", "owner", "balance JPY"], rows, indent="    "))


async def _positions(keeper: AgentRuntime, accounts: dict[str, str], say: Say) -> None:
    rows = []
    for user, account in accounts.items():
        for view in await keeper.command(CUSTODY_ID, operators.positions(user)):
            if view.account == account:
                b = view.balances
                rows.append([account, view.issue_code, b.available, b.locked, b.pending_delivery, b.pending_receipt])
    say(
        render.table(
            ["account", "issue", "available", "locked", "pending delivery", "pending receipt"], rows, indent="    "
        )
    )
