"""What the securities-backed credit tests share: seed 003's worked example set up across the
exchange, settlement, custody and the credit agent's two institutions."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

from agents.credit import operators
from agents.credit.domain import Band, CardType, Method
from agents.custody import books
from agents.custody import repo as custody_repo
from agents.custody.domain import Balances
from agents.exchange import order_repo
from agents.exchange.trading import end_of_day
from agents.settlement import app as ledger
from agents.settlement import mandates
from agents.settlement.domain import AccountKind
from broker.context import Context
from broker.runtime import AgentRuntime
from tests import support

AGENTS = ("investor", "exchange", "settlement", "custody", "credit")
ISSUE_A, ISSUE_B = "CMPA", "CMPB"
CARD = "4000-0001"
LINE_ACCOUNT, ISSUER_ACCOUNT, SHOP_ACCOUNT = "credit-line", "card-issuer-cash", "shop-cash"


def deposit_shares(account: str, client: str, issue: str, quantity: int) -> Any:
    """Shares arrive in a safekeeping account (custody's books, as its deposit would write them)."""

    async def action(ctx: Context) -> None:
        await custody_repo.open_account(ctx.connection, account, client, "custody")
        acct = await custody_repo.account(ctx.connection, account)
        assert acct is not None
        await custody_repo.lock_clients(ctx.connection, [client])
        before = await custody_repo.position_for_update(ctx.connection, account, issue) or Balances()
        after = Balances(before.available + quantity, before.locked, before.pending_delivery, before.pending_receipt)
        await books.apply(ctx, acct, issue, after, "deposit", f"test-{issue}-{quantity}")

    return action


async def prices_from_the_exchange(rt: dict[str, AgentRuntime]) -> None:
    """Seed 003's prices as the exchange's previous close: A 1,000 and B 2,000 (R-003-25)."""
    exchange, credit = rt["exchange"], rt["credit"]
    for issue, price in ((ISSUE_A, 1_000), (ISSUE_B, 2_000)):
        await exchange.command(
            "exchange",
            lambda ctx, i=issue, p=price: order_repo.list_instrument(ctx.connection, i, "common", Decimal(p)),
        )
    await exchange.outcomes.wait(lambda s: s.type == "market.subscribe_prices")
    await exchange.command("exchange", end_of_day)
    await credit.outcomes.wait_count(lambda s: s.type == "market.price_update", 2)


async def seed_003_worked_example(
    rt: dict[str, AgentRuntime], *, method: Method = Method.RATING, card_type: CardType = CardType.CREDIT
) -> None:
    """Limit 50,000; holdings 6,000 × 1,000 (A) and 2,000 × 2,000 (B); haircut 0.8; ratings 1.0 / 0.5."""
    settlement, credit, custody = rt["settlement"], rt["credit"], rt["custody"]
    institution = AccountKind.INSTITUTION
    await settlement.command("settlement", ledger.open_account(LINE_ACCOUNT, "credit", kind=institution))
    await settlement.command("settlement", ledger.open_account(ISSUER_ACCOUNT, "card-issuer", kind=institution))
    await settlement.command("settlement", ledger.open_account(SHOP_ACCOUNT, "shop"))
    await support.fund(settlement, "alice", Decimal(1_000_000))
    # The owners' consent that the card issuer and the line may post on their accounts.
    for account, agent in ((SHOP_ACCOUNT, "card-issuer"), ("alice-cash", "card-issuer"), ("alice-cash", "credit")):
        await settlement.command("settlement", mandates.grant(account, agent))
    await prices_from_the_exchange(rt)
    await credit.command("card-issuer", operators.issuer_policy(ISSUER_ACCOUNT, timedelta(days=7)))
    await credit.command("card-issuer", operators.open_card(CARD, "alice", card_type, 50_000, "alice-cash"))
    await credit.command("credit", operators.line_policy(LINE_ACCOUNT, inquiry_timeout=timedelta(seconds=30)))
    await credit.command("credit", operators.contract("alice", method, "alice-cash", (CARD,), ("custody",)))
    await credit.command("credit", operators.haircut_bands((Band(0, None, Decimal("0.8")),)))
    await credit.command("credit", operators.rating(ISSUE_A, "AA", Decimal("1.0")))
    await credit.command("credit", operators.rating(ISSUE_B, "BB", Decimal("0.5")))
    await custody.command("custody", deposit_shares("alice-sk", "alice", ISSUE_A, 6_000))
    await custody.command("custody", deposit_shares("alice-sk", "alice", ISSUE_B, 2_000))


async def custody_positions(custody: AgentRuntime, account: str = "alice-sk") -> dict[str, tuple[int, int]]:
    found = await support.rows(
        custody, "SELECT issue_code, available, locked FROM positions WHERE account_id = $1", account
    )
    return {r["issue_code"]: (r["available"], r["locked"]) for r in found}


async def collateral(credit: AgentRuntime) -> list[dict[str, Any]]:
    return await support.rows(credit, "SELECT * FROM collateral ORDER BY issue_code")


async def notices(investor: AgentRuntime, kind: str) -> list[dict[str, Any]]:
    return await support.rows(investor, "SELECT * FROM credit_notices WHERE kind = $1 ORDER BY received_at", kind)


async def balances(settlement: AgentRuntime) -> dict[str, Decimal]:
    """Every account's balance: the sum of its postings."""
    found = await support.rows(
        settlement,
        """SELECT a.account_id, coalesce(sum(p.amount), 0) AS balance FROM accounts a
           LEFT JOIN postings p USING (account_id) GROUP BY a.account_id""",
    )
    return {r["account_id"]: r["balance"] for r in found}
