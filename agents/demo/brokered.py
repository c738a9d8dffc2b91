"""Demo flow 3 (seed 000's claims, seed 002): alice, a customer of the brokerage, identifies
herself, sees her accounts, and buys 5,000 shares at 300 through securities company X with the
funding split of seed 002's worked example; bob sells them on the exchange."""

from __future__ import annotations

import json
import secrets
from datetime import date
from decimal import Decimal

from agents import render
from agents.brokerage import operators
from agents.brokerage import repo as brokerage_repo
from agents.brokerage.customers import CustomerAccount
from agents.brokerage.ledger_legs import Design
from agents.demo.issuance import Say, held_certificate
from agents.exchange import order_repo as exchange_orders
from agents.investor.app import IssuanceOrder, request_certificates
from agents.investor.brokered import brokered_order, identify
from agents.investor.domain import Dividend
from agents.investor.trading import OrderTicket, place_order
from agents.issuer import repo as issuer_repo
from agents.issuer.domain import Offering
from agents.settlement import app as ledger
from agents.settlement import mandates
from agents.settlement.domain import AccountKind
from broker.runtime import AgentRuntime
from schemas.brokerage import FundingLeg
from schemas.certificates import ShareClass
from schemas.issuance import DividendMethod
from schemas.trading import Side


async def open_company(rt: dict[str, AgentRuntime], company: str, design: Design, capital: Decimal) -> None:
    """An intermediation contract with a securities company, and its accounts in the ledger (seed 002 §8)."""
    settlement = rt["settlement"]
    accounts = operators.company_accounts(company)
    await settlement.command("settlement", ledger.open_account(accounts.clearing, "brokerage", institution=company))
    await settlement.command("settlement", ledger.deposit(accounts.clearing, capital, f"capital-{company}"))
    for account in (accounts.commission, accounts.tax, accounts.im_account_at_sc, accounts.sc_account_at_im):
        await settlement.command(
            "settlement", ledger.open_account(account, "brokerage", kind=AccountKind.INSTITUTION, institution=company)
        )
    for account in (accounts.im_cash, accounts.im_fees):
        await settlement.command("settlement", ledger.open_institution_account_once(account, "intermediary"))
    await rt["brokerage"].command("brokerage", operators.add_company(company, company.upper(), design))


async def brokered(rt: dict[str, AgentRuntime], alice: str, bob: str, say: Say) -> None:
    investor, settlement, brokerage = rt["investor"], rt["settlement"], rt["brokerage"]
    run = secrets.token_hex(2)
    issue, company, customer = f"BRK-{run.upper()}", f"x-{run}", f"IM-{run.upper()}"
    say("\nFlow 3 — brokered order with account selection (seeds 000 and 002)")
    await _market(rt, issue, company, bob, say)
    accounts = (
        (f"kamata-{run}", "intermediary", "bank", 1, 2_000_000),
        (f"omori-{run}", "intermediary", "bank", 2, 500_000),
        (f"mrf-{run}", company, "fund", 3, 300_000),
    )
    for account, institution, _, _, amount in accounts:
        await settlement.command("settlement", ledger.open_account(account, alice, institution=institution))
        await settlement.command("settlement", mandates.grant(account, "brokerage"))  # alice's consent (issue 11)
        await settlement.command("settlement", ledger.deposit(account, Decimal(amount), f"in-{account}"))
    customer = await _customer(brokerage, alice, customer, [CustomerAccount(a, i, k, p) for a, i, k, p, _ in accounts])
    asked = await investor.command(alice, identify(customer, "2468"))
    await investor.outcomes.reply("brokerage.customer_view", asked, timeout=30)
    view = json.loads(
        await investor.query(lambda c: c.fetchval("SELECT view FROM customer_views WHERE user_id = $1", alice))
    )
    say(
        f"  {alice} identifies as customer {customer} with her PIN; the brokerage answers with prices, holdings "
        "and her accounts (balances from settlement):"
    )
    say(
        render.table(
            ["account", "held at", "priority", "available"],
            [
                [a["account"], a["institution"], a["priority"], f"{Decimal(a['available']):,.0f}"]
                for a in view["accounts"]
            ],
            indent="    ",
        )
    )
    funding = [
        FundingLeg(account=a, amount=Decimal(n), priority=p)
        for (a, _, _, p, _), n in zip(accounts, (1_000_000, 300_000, 210_500), strict=True)
    ]
    order = await investor.command(
        alice,
        brokered_order(f"bo-{run}", customer, "2468", company, issue, Side.BUY, 5000, funding, price=Decimal(300)),
    )
    await investor.outcomes.reply("brokerage.settlement_completed", order, timeout=60)
    await _statement(rt, alice, f"bo-{run}", say)


async def _customer(brokerage: AgentRuntime, user: str, customer: str, accounts: list[CustomerAccount]) -> str:
    """The demo registers alice once (PIN 2468); a later run adds this run's accounts to her."""
    registered = await brokerage.query(lambda c: brokerage_repo.customer_of(c, user))
    if registered is None:
        await brokerage.command("brokerage", operators.register_customer(customer, user, "2468", accounts))
        return customer
    await brokerage.command("brokerage", operators.add_accounts(registered, accounts))
    return registered


async def _market(rt: dict[str, AgentRuntime], issue: str, company: str, bob: str, say: Say) -> None:
    investor = rt["investor"]
    offering = Offering(
        issue,
        "Kabuto Brokered Industries K.K.",
        date(2003, 7, 1),
        ShareClass.COMMON,
        Decimal(300),
        100_000,
        100_000,
        100,
    )
    await rt["issuer"].command("issuer", lambda ctx: issuer_repo.open_offering(ctx.connection, offering))
    await rt["exchange"].command(
        "exchange", lambda ctx: exchange_orders.list_instrument(ctx.connection, issue, "common", Decimal(300))
    )
    await rt["brokerage"].command("brokerage", operators.set_reference_price(issue, Decimal(300)))
    await open_company(rt, company, Design.SC_HOLDS_IM_ACCOUNT, Decimal(100_000_000))
    dividend = Dividend(method=DividendMethod.SETTLEMENT_ACCOUNT, account=f"{bob}-{issue}")
    request = await investor.command(
        bob, request_certificates(IssuanceOrder(issue, ShareClass.COMMON, 5000, bob.capitalize(), "Tokyo", dividend))
    )
    await investor.outcomes.reply("certificate.issued", request, timeout=30)
    await rt["exchange"].outcomes.reply("certid_list.updated", request, timeout=30)
    certificate = await held_certificate(investor, bob, issue)
    account = f"{bob}-{issue.lower()}"
    await rt["settlement"].command("settlement", ledger.open_account(account, bob))
    sent = await investor.command(
        bob,
        place_order(
            OrderTicket(f"s-{issue}", issue, Side.SELL, 5000, account, Decimal(300), cert_id=certificate.cert_id)
        ),
    )
    await investor.outcomes.reply("order.accepted", sent, timeout=30)
    say(
        f"  Securities company {company} settles on the intermediary's account it holds (design 1, means 23); "
        f"{bob} offers 5,000 {issue} at 300 on the exchange."
    )


async def _statement(rt: dict[str, AgentRuntime], alice: str, client_order_id: str, say: Say) -> None:
    row = await rt["investor"].query(
        lambda c: c.fetchrow(
            "SELECT trial, statement, entry_id FROM brokered_orders WHERE user_id = $1 AND client_order_id = $2",
            alice,
            client_order_id,
        )
    )
    trial, statement = json.loads(row["trial"]), json.loads(row["statement"])
    say(
        f"  {alice} buys 5,000 at 300 funded 1,000,000 / 300,000 / 210,500 by priority. The brokerage checks her "
        f"conditions, holds the allowance of {Decimal(trial['allowance']):,.0f} at settlement, and relays the order "
        "to the exchange as her broker. On execution it produces the settlement information:"
    )
    figures = [
        ("consideration (5,000 × 300)", statement["consideration"]),
        ("commission", statement["commission"]),
        ("consumption tax", statement["consumption_tax"]),
        ("required", statement["total"]),
        ("intermediary fee share", statement["intermediary_fee"]),
    ]
    say(render.table(["", "JPY"], [[k, f"{Decimal(v):,.0f}"] for k, v in figures], indent="    "))
    say(
        render.table(
            ["account", "means", "amount"],
            [
                [c["account"], c["means"], f"{Decimal(c['amount']):,.0f}"]
                for c in statement["customer"] + statement["institutions"]
            ],
            indent="    ",
        )
    )
    say(
        f"  Settlement posted it as one balanced entry ({row['entry_id']}), consuming the hold; {alice} receives "
        "her trade statement and the settlement-completion notice."
    )
