"""Flow 3 end to end (seed 000 claims 1–4, seed 002): a customer identifies itself, orders through
the brokerage with an account indication, and seed 002's worked example settles exactly."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from agents.brokerage import operators
from agents.brokerage.customers import CustomerAccount
from agents.investor.brokered import brokered_order, identify
from agents.settlement import app as ledger
from agents.settlement import mandates
from broker.runtime import AgentRuntime
from broker.settings import Settings
from schemas.brokerage import FundingLeg
from schemas.trading import Side
from tests import support

AGENTS = ("investor", "issuer", "exchange", "settlement", "brokerage")
ACCOUNTS = (
    ("kamata-alice", "intermediary", "bank", 1, 2_000_000),
    ("omori-alice", "intermediary", "bank", 2, 500_000),
    ("x-mrf-alice", "x-sec", "fund", 3, 300_000),
)


async def customer_alice(rt: dict[str, AgentRuntime]) -> None:
    settlement = rt["settlement"]
    for account, institution, _, _, amount in ACCOUNTS:
        await settlement.command("settlement", ledger.open_account(account, "alice", institution=institution))
        # Issue 11: alice's written consent that the brokerage posts her settlement legs.
        await settlement.command("settlement", mandates.grant(account, "brokerage"))
        await settlement.command("settlement", ledger.deposit(account, Decimal(amount), f"in-{account}"))
    await rt["brokerage"].command(
        "brokerage",
        operators.register_customer(
            "IM-0001",
            "alice",
            "2468",
            [CustomerAccount(a, i, k, p) for a, i, k, p, _ in ACCOUNTS],
            company_ids={"x-sec": "X-778899"},
        ),
    )


def balances(rows: list[dict[str, Any]]) -> dict[str, Decimal]:
    return {r["account_id"]: r["balance"] for r in rows}


async def test_seed_002s_worked_example_settles_exactly(settings: Settings) -> None:
    async with support.agents(settings, *AGENTS) as rt:
        investor, settlement = rt["investor"], rt["settlement"]
        await support.brokerage_market(rt)
        await customer_alice(rt)
        await support.seller_bob(rt)

        asked = await investor.command("alice", identify("IM-0001", "2468"))
        await investor.outcomes.reply("brokerage.customer_view", asked)
        view = json.loads((await support.rows(investor, "SELECT view FROM customer_views"))[0]["view"])
        assert [(a["account"], Decimal(a["available"])) for a in view["accounts"]] == [
            ("kamata-alice", 2_000_000),
            ("omori-alice", 500_000),
            ("x-mrf-alice", 300_000),
        ]
        assert view["securities"][0]["issue_code"] == "BRK"

        funding = [
            FundingLeg(account="kamata-alice", amount=Decimal(1_000_000), priority=1),
            FundingLeg(account="omori-alice", amount=Decimal(300_000), priority=2),
            FundingLeg(account="x-mrf-alice", amount=Decimal(210_500), priority=3),
        ]
        order = await investor.command(
            "alice",
            brokered_order("a-1", "IM-0001", "2468", "x-sec", "BRK", Side.BUY, 5000, funding, price=Decimal(300)),
        )
        await investor.outcomes.reply("brokerage.settlement_completed", order, timeout=30)

        row = (await support.rows(investor, "SELECT * FROM brokered_orders WHERE client_order_id = 'a-1'"))[0]
        trial, statement = json.loads(row["trial"]), json.loads(row["statement"])
        assert (
            Decimal(trial["consideration"]),
            Decimal(trial["commission"]),
            Decimal(trial["consumption_tax"]),
            Decimal(trial["required"]),
        ) == (1_500_000, 10_000, 500, 1_510_500)
        assert Decimal(statement["total"]) == 1_510_500
        assert [(c["account"], Decimal(c["amount"])) for c in statement["customer"]] == [
            ("kamata-alice", 1_000_000),
            ("omori-alice", 300_000),
            ("x-mrf-alice", 210_500),
        ]
        assert row["status"] == "settled"

        after = balances(
            await support.rows(
                settlement, "SELECT account_id, sum(amount) AS balance FROM postings GROUP BY account_id"
            )
        )
        assert (after["kamata-alice"], after["omori-alice"], after["x-mrf-alice"]) == (1_000_000, 200_000, 89_500)
        assert after["x-sec:intermediary-account"] == -1_298_000 and after["intermediary:cash"] == 1_300_000
        assert after["x-sec:commission"] == 8_000 and after["x-sec:consumption-tax"] == 500
        assert after["x-sec:clearing"] == 100_000_000  # paid 1,500,000 at the exchange, reimbursed by the customer
        assert after["bob-cash"] == 1_500_000
        assert sum(after.values()) == 0
        holds = await support.rows(
            settlement,
            "SELECT status, count(*) AS n FROM holds WHERE hold_id NOT IN (SELECT cover_id FROM covers) "
            "AND hold_id NOT IN (SELECT hold_id FROM dvp_attempts) GROUP BY status",
        )
        assert holds == [{"status": "consumed", "n": 3}]  # the customer's three accounts
        # Issue 11: the street trade's cover is released and its earmark consumed by the DvP posting.
        street = await support.rows(
            settlement, "SELECT h.status FROM holds h JOIN dvp_attempts a USING (hold_id) WHERE a.status = 'committed'"
        )
        assert street == [{"status": "consumed"}]
        assert await support.rows(settlement, "SELECT * FROM holds WHERE status = 'placed'") == []
        position = await support.rows(rt["brokerage"], "SELECT shares FROM positions WHERE customer_id = 'IM-0001'")
        assert position == [{"shares": 5000}]
