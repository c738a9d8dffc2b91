"""Default end to end (seed 003 Fig. 19, R-003-50..58): the withdrawal fails, the line pays the
card issuer, custody sells the locked shares through the real exchange on the line's
instruction, the proceeds are applied, a surplus returned or a deficit recorded, what did not
sell is released, the purchaser told — and the cash is conserved in the settlement ledger."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal

import pytest

from agents.credit import card_issuer, operators
from agents.credit.domain import Band, CardType, Method
from agents.exchange.trading import end_of_day
from agents.investor.trading import OrderTicket, place_order
from agents.merchant.client import MerchantTerminal
from agents.settlement import app as ledger
from agents.settlement import mandates
from agents.settlement.domain import AccountKind
from broker.runtime import AgentRuntime
from broker.settings import Settings
from schemas.trading import Side
from tests import credit_support as cs
from tests import support
from tests.custody_support import balances, open_account
from tests.e2e.test_custody_certificates import deposited

AGENTS = ("investor", "issuer", "exchange", "settlement", "custody", "credit")


async def market(rt: dict[str, AgentRuntime], bid: int) -> None:
    """alice's 500 KBT in custody, valued at the exchange's close of 1,000; bob bids ``bid`` at 1,000."""
    settlement, credit = rt["settlement"], rt["credit"]
    await support.open_offering(rt["issuer"])
    await support.list_issue(rt["exchange"])
    await open_account(rt["custody"], "alice-sk", "alice")
    await support.fund(settlement, "custody")
    await support.fund(settlement, "alice")  # nothing to repay with
    bob_cash = await support.fund(settlement, "bob", Decimal(1_000_000))
    for account, owner in ((cs.LINE_ACCOUNT, "credit"), (cs.ISSUER_ACCOUNT, "card-issuer")):
        await settlement.command("settlement", ledger.open_account(account, owner, kind=AccountKind.INSTITUTION))
    await settlement.command("settlement", ledger.open_account(cs.SHOP_ACCOUNT, "shop"))
    grants = ((cs.SHOP_ACCOUNT, "card-issuer"), ("alice-cash", "card-issuer"), ("alice-cash", "credit"))
    for account, agent in (*grants, ("custody-cash", "credit")):
        await settlement.command("settlement", mandates.grant(account, agent))
    await deposited(rt)
    await rt["custody"].outcomes.wait(lambda s: s.type == "certificate.issued")
    await rt["exchange"].outcomes.wait(lambda s: s.type == "market.subscribe_prices")
    await rt["exchange"].command("exchange", end_of_day)
    await credit.outcomes.wait(lambda s: s.type == "market.price_update")
    await credit.command("card-issuer", operators.issuer_policy(cs.ISSUER_ACCOUNT, timedelta(days=1)))
    await credit.command("card-issuer", operators.open_card(cs.CARD, "alice", CardType.CREDIT, 50_000, "alice-cash"))
    await credit.command("credit", operators.line_policy(cs.LINE_ACCOUNT))
    await credit.command("credit", operators.contract("alice", Method.RATING, "alice-cash", (cs.CARD,), ("custody",)))
    await credit.command("credit", operators.haircut_bands((Band(0, None, Decimal("0.8")),)))
    await credit.command("credit", operators.rating("KBT", "A", Decimal("1.0")))
    ticket = OrderTicket(
        "bob-buy", "KBT", Side.BUY, bid, bob_cash, Decimal(1000), holder_name="Bob", holder_address="Tokyo"
    )
    await rt["investor"].outcomes.reply("order.accepted", await rt["investor"].command("bob", place_order(ticket)))


@pytest.mark.parametrize(
    ("bid", "proceeds", "surplus", "deficit"),
    [(200, 200_000, 50_000, 0), (100, 100_000, 0, 50_000)],
    ids=["surplus", "deficit"],
)
async def test_default_sells_the_collateral_and_conserves_cash_r_003_50_58(
    settings: Settings, bid: int, proceeds: int, surplus: int, deficit: int
) -> None:
    async with support.agents(settings, *AGENTS) as rt, MerchantTerminal.connect(settings, "shop") as shop:
        credit, investor = rt["credit"], rt["investor"]
        await market(rt, bid)
        await shop.request_purchase("tv", cs.CARD, 200_000)
        answer = await shop.answer("tv")
        assert answer.approved and answer.authorisation_id is not None
        assert [(c["issue_code"], c["quantity"]) for c in await cs.collateral(credit)] == [("KBT", 500)]
        await shop.capture("tv", cs.SHOP_ACCOUNT)
        assert (await shop.capture_answer("tv")).captured
        await credit.command("card-issuer", card_issuer.repay(answer.authorisation_id, 200_000))  # S7000: fails
        await investor.outcomes.wait(lambda s: s.type == "credit.assets_sold", timeout=60)
        sold = json.loads((await cs.notices(investor, "credit.assets_sold"))[0]["content"])
        assert (sold["advanced"], sold["proceeds"], sold["surplus_returned"], sold["deficit"]) == (
            150_000,
            proceeds,
            surplus,
            deficit,
        )
        [ob] = await support.rows(credit, "SELECT * FROM obligations")
        assert (ob["status"], ob["advanced"], ob["proceeds"], ob["surplus"], ob["deficit"]) == (
            "recovered",
            150_000,
            proceeds,
            surplus,
            deficit,
        )
        [auth] = await support.rows(credit, "SELECT status, repaid FROM authorisations")
        assert (auth["status"], auth["repaid"]) == ("recovered", 150_000)  # R-003-52
        await credit.outcomes.wait(lambda s: s.type == "custody.lock.released", timeout=30)  # the unsold rest
        assert await balances(rt["custody"], "alice-sk", "KBT") == {
            "available": 500 - bid,
            "locked": 0,
            "pending_delivery": 0,
            "pending_receipt": 0,
        }
        sent = await support.rows(
            credit, "SELECT 1 FROM outbox_messages WHERE message_type = 'funds.brokered_settlement'"
        )
        answered = ("funds.brokered_posted", "funds.brokered_failed")
        await credit.outcomes.wait_count(lambda s: s.type in answered, len(sent), timeout=30)  # every cash move
        cash = await cs.balances(rt["settlement"])
        assert cash[cs.SHOP_ACCOUNT] == 200_000  # R-003-42
        assert cash[cs.ISSUER_ACCOUNT] == -200_000 + 150_000  # the ordinary 50,000 is still alice's debt
        assert cash[cs.LINE_ACCOUNT] == -deficit  # advanced, repaid from the proceeds, surplus paid out
        assert cash["alice-cash"] == surplus
        assert cash["custody-cash"] == 0 and cash["bob-cash"] == 1_000_000 - proceeds
        steps = {r["step"] for r in await support.rows(credit, "SELECT step FROM audit_trail")}
        assert {"S7000", "S9010", "S9020", "S9030", "S9040", "S9070", "S9100", "S9120"} <= steps  # R-003-63
