"""Demo flow 5 (seed 003): a purchase above the card limit carried by securities held at custody.

Seed 003's worked example exactly — price 200,000, limit 50,000, shortfall 150,000; holdings
6,000 × 1,000 (issue A) and 2,000 × 2,000 (issue B); haircut 0.8 and ratings 1.0 / 0.5 both give
8,000,000; only issue A is locked — then a refusal, a repayment that releases the collateral and
a default in which custody sells the collateral through the exchange.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Awaitable, Callable
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

from agents import render
from agents.credit import card_issuer, operators
from agents.credit.domain import Band, CardType, Holding, Method, Price, PriceSource, value
from agents.custody import repo as custody_repo
from agents.demo.issuance import Say, held_certificate
from agents.exchange import order_repo as exchange_orders
from agents.exchange.trading import end_of_day
from agents.investor import credit_notices
from agents.investor.app import IssuanceOrder, request_certificates
from agents.investor.domain import Dividend
from agents.investor.lifecycle import hand_over
from agents.investor.trading import OrderTicket, place_order
from agents.issuer import repo as issuer_repo
from agents.issuer.domain import Offering
from agents.merchant.client import MerchantTerminal
from agents.settlement import app as ledger
from agents.settlement import mandates
from agents.settlement.domain import AccountKind
from broker.consumer import Settled
from broker.context import Context
from broker.pki import KeyStore, default_participant
from broker.runtime import AgentRuntime
from broker.settings import Settings
from schemas.certificates import ShareClass
from schemas.identity import Role
from schemas.issuance import DividendMethod
from schemas.trading import Side

MERCHANT = "demo-shop"


async def credit(rt: dict[str, AgentRuntime], settings: Settings, alice: str, bob: str, say: Say) -> None:
    run = secrets.token_hex(2)
    a, b = f"CA-{run.upper()}", f"CB-{run.upper()}"
    say("\nFlow 5 — securities-backed credit (seed 003)")
    KeyStore(settings.key_dir).enrol(default_participant(MERCHANT, Role.MERCHANT))
    accounts = await _institutions(rt, run, alice, bob)
    await _holdings(rt, run, alice, ((a, 1_000, 6_000), (b, 2_000, 2_000)), say)
    await _line(rt, run, alice, accounts, a, b)
    async with MerchantTerminal.connect(settings, MERCHANT) as shop:
        tv = await _worked_example(rt, shop, run, alice, a, b, say)
        await _refusal(rt, shop, run, say)
        await _repayment(rt, shop, tv, accounts, alice, say)
        await _default(rt, shop, run, accounts, alice, bob, a, say)


async def _institutions(rt: dict[str, AgentRuntime], run: str, alice: str, bob: str) -> dict[str, str]:
    settlement = rt["settlement"]
    accounts = {
        "line": f"credit-line-{run}",
        "issuer": f"card-issuer-{run}",
        "shop": f"shop-{run}",
        "alice": f"{alice}-card-{run}",
        "bob": f"{bob}-bid-{run}",
    }
    for key, owner in (("line", "credit"), ("issuer", "card-issuer")):
        await settlement.command("settlement", ledger.open_account(accounts[key], owner, kind=AccountKind.INSTITUTION))
    for key, owner in (("shop", MERCHANT), ("alice", alice), ("bob", bob)):
        await settlement.command("settlement", ledger.open_account(accounts[key], owner))
    await settlement.command("settlement", ledger.deposit(accounts["alice"], Decimal(200_000), f"salary-{run}"))
    await settlement.command("settlement", ledger.deposit(accounts["bob"], Decimal(1_000_000), f"bid-{run}"))
    await settlement.command("settlement", ledger.open_institution_account_once("custody-cash", "custody", "custody"))
    grants = ((accounts["shop"], "card-issuer"), (accounts["alice"], "card-issuer"), (accounts["alice"], "credit"))
    for account, agent in (*grants, ("custody-cash", "credit")):
        await settlement.command("settlement", mandates.grant(account, agent))
    return accounts


async def _holdings(
    rt: dict[str, AgentRuntime], run: str, alice: str, issues: tuple[tuple[str, int, int], ...], say: Say
) -> None:
    """alice subscribes to issues A and B and deposits the certificates with custody (book entry)."""
    investor, custody, exchange = rt["investor"], rt["custody"], rt["exchange"]
    account = f"{alice}-sk-{run}"
    await custody.command("custody", lambda ctx: custody_repo.open_account(ctx.connection, account, alice, "custody"))
    for issue, price, shares in issues:
        await rt["issuer"].command("issuer", _offer(issue, price))
        await exchange.command("exchange", _list(issue, price))
        asked = await investor.command(alice, request_certificates(_order(issue, alice, shares)))
        await investor.outcomes.reply("certificate.issued", asked)
        certificate = await held_certificate(investor, alice, issue, shares)
        await investor.command(alice, hand_over(certificate.cert_id, "custody", f"account:{account}"))
        handed = await investor.query(
            lambda c: c.fetchval(
                "SELECT message_id FROM outbox_messages WHERE message_type = 'certificate.handover'"
                " ORDER BY seq DESC, place DESC"
            )
        )
        await custody.outcomes.reply("certificate.issued", handed, timeout=30)  # 43 answered: in custody's vault
    say(
        f"  {alice} deposits 6,000 {issues[0][0]} and 2,000 {issues[1][0]} with custody"
        f" (book entry, account {account})."
    )
    await _close_the_day(rt, [issue for issue, _, _ in issues])
    say(
        f"  The exchange closes the day: {issues[0][0]} at 1,000 and {issues[1][0]} at 2,000,"
        " sent to the line as prices."
    )


async def _close_the_day(rt: dict[str, AgentRuntime], issues: list[str]) -> None:
    """The exchange closes; wait until the line has this close of each of ``issues``."""
    await rt["exchange"].command("exchange", end_of_day)
    sent_sql = """SELECT message_id, body FROM outbox_messages WHERE message_type = 'market.price_update'
                  AND routing_key = 'credit' ORDER BY seq DESC, place DESC LIMIT 200"""
    sent = await rt["exchange"].query(lambda c: c.fetch(sent_sql))
    for issue in issues:
        latest = next(r["message_id"] for r in sent if json.loads(r["body"])["payload"]["issue_code"] == issue)
        await rt["credit"].outcomes.wait_for(latest, timeout=30)


async def _line(rt: dict[str, AgentRuntime], run: str, alice: str, accounts: dict[str, str], a: str, b: str) -> None:
    credit = rt["credit"]
    card = _card(run)
    await credit.command("card-issuer", operators.issuer_policy(accounts["issuer"], timedelta(days=7)))
    await credit.command("card-issuer", operators.open_card(card, alice, CardType.CREDIT, 50_000, accounts["alice"]))
    await credit.command("credit", operators.line_policy(accounts["line"]))
    pledged = (f"{alice}-sk-{run}",)  # this run's account only: a rerun's earlier holdings stay out
    await credit.command(
        "credit", operators.contract(alice, Method.RATING, accounts["alice"], (card,), ("custody",), pledged)
    )
    await credit.command("credit", operators.haircut_bands((Band(0, None, Decimal("0.8")),)))
    await credit.command("credit", operators.rating(a, "AA", Decimal("1.0")))
    await credit.command("credit", operators.rating(b, "BB", Decimal("0.5")))


def _card(run: str) -> str:
    return f"4000-{int(run, 16):05d}"


async def _worked_example(
    rt: dict[str, AgentRuntime], shop: MerchantTerminal, run: str, alice: str, a: str, b: str, say: Say
) -> UUID:
    credit = rt["credit"]
    say(f"  {alice}'s card: credit card, limit 50,000. {MERCHANT} asks the card issuer to approve 200,000.")
    await shop.request_purchase(f"tv-{run}", _card(run), 200_000, "a television")
    answer = await shop.answer(f"tv-{run}", timeout=30)
    assert answer.approved and answer.authorisation_id is not None, answer
    [ob] = [
        o for o in await credit.query(lambda c: _obligations(c, alice)) if o["obligation_id"] == answer.authorisation_id
    ]
    say(
        f"  Remaining credit 50,000 < 200,000: shortfall F1 = 200,000 − 50,000 = {ob['shortfall']:,} asked of the line."
    )
    say(f"  The line refreshed {alice}'s holdings from custody and valued them:")
    await _both_methods(credit, ob["obligation_id"], say)
    locks = await credit.query(
        lambda c: c.fetch("SELECT * FROM collateral WHERE obligation_id = $1", ob["obligation_id"])
    )
    say(
        f"  Largest first until ≥ {ob['shortfall']:,}: S = {ob['accumulated']:,} after one position"
        " — locked at custody:"
    )
    columns = ("issue_code", "quantity", "price", "price_source", "credit_value", "status")
    say(render.table(columns, [[r[k] for k in columns] for r in locks], indent="    "))
    positions_sql = """SELECT issue_code, available, locked FROM positions JOIN accounts USING (account_id)
                       WHERE client = $1 AND issue_code = ANY($2::text[]) ORDER BY issue_code"""
    positions = await rt["custody"].query(lambda c: c.fetch(positions_sql, alice, [a, b]))
    say(
        "  Custody's positions: "
        + ", ".join(f"{p['issue_code']} available {p['available']:,} locked {p['locked']:,}" for p in positions)
    )
    say(f"  Approved: covered {answer.covered:,} by the card, secured {answer.secured:,} by the line. {alice} is told:")
    wanted = {"card.payment_answer": f"tv-{run}", "credit.collateral_statement": str(answer.authorisation_id)}
    await _notices(rt, alice, say, wanted)
    return answer.authorisation_id


async def _both_methods(credit: AgentRuntime, obligation: UUID, say: Say) -> None:
    """Seed 003 F3 and F4 on the same holdings: both give 8,000,000."""
    first = await credit.query(lambda c: c.fetchrow("SELECT * FROM valuations WHERE obligation_id = $1", obligation))
    held = json.loads(first["positions"])
    columns = ("issue_code", "quantity", "price", "price_source", "price_age_seconds", "market_value", "coefficient")
    say(
        render.table(
            [*columns, "credit_value"], [[p[k] for k in (*columns, "credit_value")] for p in held], indent="    "
        )
    )
    total = first["total_market_value"]
    say(f"    rating method (the contract's): Σ market value × discount rate = {first['grantable']:,}")
    holdings = [Holding(p["custodian"], p["issue_code"], p["quantity"]) for p in held]
    prices = {p["issue_code"]: price for p in held if (price := _price(p))}
    haircut = value(Method.HAIRCUT, holdings, prices, [Band(0, None, Decimal("0.8"))], {})
    say(f"    haircut method, for comparison: {total:,} × 0.8 = {haircut.grantable:,}")


def _price(p: dict[str, Any]) -> Price:
    return Price(
        p["issue_code"],
        Decimal(p["price"]),
        PriceSource(p["price_source"]),
        datetime.fromisoformat(p["price_as_of"]),
        timedelta(seconds=p["price_age_seconds"]),
    )


async def _refusal(rt: dict[str, AgentRuntime], shop: MerchantTerminal, run: str, say: Say) -> None:
    await shop.request_purchase(f"car-{run}", _card(run), 9_000_000, "a car")
    answer = await shop.answer(f"car-{run}", timeout=30)
    say(f"\n  {MERCHANT} asks for 9,000,000: {'approved' if answer.approved else 'refused'} — {answer.detail}.")
    say("  Nothing was locked for it.")


async def _repayment(
    rt: dict[str, AgentRuntime], shop: MerchantTerminal, tv: UUID, accounts: dict[str, str], alice: str, say: Say
) -> None:
    credit, purchase = rt["credit"], await _purchase_id(rt, tv)
    await shop.capture(purchase, accounts["shop"])
    captured = await shop.capture_answer(purchase, timeout=30)
    say(f"\n  {MERCHANT} delivers and captures: the card issuer pays it {captured.amount:,} (R-003-42).")
    await credit.command("card-issuer", card_issuer.repay(tv, 200_000))
    await credit.outcomes.wait(lambda s: s.type == "custody.lock.released", timeout=30)
    say(f"  {alice} repays 200,000 from {accounts['alice']}: the secured obligation is repaid, its lock released.")
    await _notices(rt, alice, say, {"credit.collateral_released": str(tv)})


async def _default(
    rt: dict[str, AgentRuntime], shop: MerchantTerminal, run: str, accounts: dict[str, str], alice: str, bob: str,
    a: str, say: Say,
) -> None:  # fmt: skip
    credit = rt["credit"]
    await shop.request_purchase(f"sofa-{run}", _card(run), 200_000, "a sofa")
    answer = await shop.answer(f"sofa-{run}", timeout=30)
    assert answer.approved and answer.authorisation_id is not None, answer
    await shop.capture(f"sofa-{run}", accounts["shop"])
    await shop.capture_answer(f"sofa-{run}", timeout=30)
    ticket = OrderTicket(
        f"bid-{run}",
        a,
        Side.BUY,
        200,
        accounts["bob"],
        Decimal(1_000),
        holder_name=bob.capitalize(),
        holder_address="Tokyo",
    )
    sent = await rt["investor"].command(bob, place_order(ticket))
    await rt["investor"].outcomes.reply("order.accepted", sent)
    say(f"\n  {alice} buys a sofa for 200,000 the same way ({a} locked again); {bob} bids for 200 {a} at 1,000.")
    await credit.command("card-issuer", card_issuer.repay(answer.authorisation_id, 200_000))
    say(
        f"  The card issuer's withdrawal of 200,000 fails ({accounts['alice']} is empty):"
        " the shortage goes to the line."
    )
    await rt["investor"].outcomes.wait(lambda s: s.type == "credit.assets_sold", timeout=90)
    [ob] = await credit.query(
        lambda c: c.fetch("SELECT * FROM obligations WHERE obligation_id = $1", answer.authorisation_id)
    )
    say(
        f"  The line paid the card issuer {ob['advanced']:,}, custody sold the locked {a} at the exchange"
        f" for {ob['proceeds']:,};"
    )
    say(
        f"  the surplus {ob['surplus']:,} went back to {alice}, deficit {ob['deficit']:,};"
        " what did not sell was released."
    )
    await _notices(rt, alice, say, {"credit.assets_sold": str(answer.authorisation_id)})
    trail_sql = "SELECT step, action FROM audit_trail WHERE obligation_id = $1 ORDER BY seq"
    trail = await credit.query(lambda c: c.fetch(trail_sql, answer.authorisation_id))
    say("  Audit trail of the default (R-003-63): " + " → ".join(f"{r['step']} {r['action']}" for r in trail))


async def _purchase_id(rt: dict[str, AgentRuntime], auth: UUID) -> str:
    found: str = await rt["credit"].query(
        lambda c: c.fetchval("SELECT purchase_id FROM authorisations WHERE authorisation_id = $1", auth)
    )
    return found


async def _obligations(connection: Any, purchaser: str) -> list[Any]:
    return list(await connection.fetch("SELECT * FROM obligations WHERE purchaser = $1", purchaser))


async def _notices(rt: dict[str, AgentRuntime], alice: str, say: Say, wanted: dict[str, str]) -> None:
    """What alice's terminal received of each kind about each reference (purchase or obligation)."""
    for kind in wanted:
        await rt["investor"].outcomes.wait(_is(kind), timeout=30)
    found = await rt["investor"].query(lambda c: credit_notices.notices(c, alice))
    for notice in found:
        if wanted.get(notice.kind) == notice.reference:
            summary = {
                k: v
                for k, v in notice.content.items()
                if k
                in ("approved", "amount", "merchant", "reason", "shortfall", "proceeds", "surplus_returned", "deficit")
            }
            issues = [p["issue_code"] for p in notice.content.get("positions", [])]
            say(
                f"    {notice.kind} from {notice.sender}: {summary}"
                + (f" positions {', '.join(issues)}" if issues else "")
            )


def _offer(issue: str, price: int) -> Callable[[Context], Awaitable[None]]:
    async def action(ctx: Context) -> None:
        await issuer_repo.open_offering(ctx.connection, _offering(issue, price))

    return action


def _list(issue: str, price: int) -> Callable[[Context], Awaitable[None]]:
    async def action(ctx: Context) -> None:
        await exchange_orders.list_instrument(ctx.connection, issue, "common", Decimal(price))

    return action


def _is(kind: str) -> Callable[[Settled], bool]:
    return lambda s: s.type == kind


def _offering(issue: str, price: int) -> Offering:
    return Offering(
        issue_code=issue,
        company_name=f"Company {issue[1]} K.K.",
        incorporated_on=date(2001, 4, 1),
        share_class=ShareClass.COMMON,
        offer_price=Decimal(price),
        shares_offered=100_000,
        shares_remaining=100_000,
        minimum_lot=100,
        par_value_per_share=Decimal("50"),
    )


def _order(issue: str, user: str, shares: int) -> IssuanceOrder:
    return IssuanceOrder(
        issue_code=issue,
        share_class=ShareClass.COMMON,
        shares=shares,
        holder_name=user.capitalize(),
        holder_address=f"1-1 Kabuto-cho, Tokyo ({user})",
        dividend_delivery=Dividend(method=DividendMethod.SETTLEMENT_ACCOUNT, account=f"settlement:{user}"),
    )
