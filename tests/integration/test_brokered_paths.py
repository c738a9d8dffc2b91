"""Brokered trading's paths through real agents (seed 000 claims 1–4, seed 002 §8, §9, §12, R-002).

Every refusal reaches the customer with its reason and leaves nothing held and nothing relayed;
partial fills and market orders are divided over the designated accounts by the mismatch rules
(§9.8, R-002-78); both settlement designs (R-002-58..67) post balanced entries; every hold is
released or consumed, never left behind (R-002-74/76); and the customer's view shows securities
information, holdings and the accounts (seed 000 claims 3–4). Each test runs the agents on real
RabbitMQ and PostgreSQL and reads each agent's state from its own tables.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest

from agents.brokerage import operators
from agents.brokerage.customers import CustomerAccount
from agents.exchange.trading import end_of_day
from agents.investor.brokered import brokered_order, identify
from agents.investor.trading import OrderTicket, place_order
from agents.settlement import app as ledger
from agents.settlement import mandates
from broker.consumer import Settled
from broker.context import Context
from broker.pki import KeyStore
from broker.runtime import AgentRuntime
from broker.settings import Settings
from schemas.brokerage import BrokeredOrder, FundingLeg, MismatchRule, TransactionConditions
from schemas.sealed import CUSTOMER_PIN
from schemas.trading import OrderType, Side, TimeInForce
from tests import support

AGENTS = ("investor", "issuer", "exchange", "settlement", "brokerage")
NO_TRADE = ("investor", "exchange", "settlement", "brokerage")  # refusals need no issuer
Rt = dict[str, AgentRuntime]
PIN, BOB_PIN = "2468", "1357"
KAMATA, OMORI, X_MRF, Y_MRF = "kamata-alice", "omori-alice", "x-mrf-alice", "y-mrf-alice"
ACCOUNTS = (  # seed 002 ¶0164–¶0169: two bank accounts at the intermediary, an MRF at X, and one at Y
    (KAMATA, "intermediary", "bank", 1, 2_000_000),
    (OMORI, "intermediary", "bank", 2, 500_000),
    (X_MRF, "x-sec", "fund", 3, 300_000),
    (Y_MRF, "y-sec", "fund", 4, 300_000),
)
SEED_SPLIT = ((KAMATA, 1_000_000, 1), (OMORI, 300_000, 2), (X_MRF, 210_500, 3))  # = 1,510,500
UNBALANCED = "SELECT entry_id FROM postings GROUP BY entry_id HAVING sum(amount) <> 0"


# --- helpers (customer_alice / seller_bob follow tests/e2e/test_brokered_trading.py) -------------


async def customer_alice(
    rt: Rt, balances: dict[str, int] | None = None, conditions: TransactionConditions | None = None
) -> None:
    settlement = rt["settlement"]
    for account, institution, _, _, amount in ACCOUNTS:
        await settlement.command("settlement", ledger.open_account(account, "alice", institution=institution))
        # Issue 11: alice's written consent that the brokerage posts her settlement legs.
        await settlement.command("settlement", mandates.grant(account, "brokerage"))
        amount = (balances or {}).get(account, amount)
        await settlement.command("settlement", ledger.deposit(account, Decimal(amount), f"in-{account}"))
    await rt["brokerage"].command(
        "brokerage",
        operators.register_customer(
            "IM-0001",
            "alice",
            PIN,
            [CustomerAccount(a, i, k, p) for a, i, k, p, _ in ACCOUNTS],
            conditions,
            company_ids={"x-sec": "X-778899"},
        ),
    )


async def customer_bob(rt: Rt) -> None:
    """Another investor's customer id, with its own account at the intermediary."""
    await rt["settlement"].command("settlement", ledger.open_account("kamata-bob", "bob", institution="intermediary"))
    await rt["settlement"].command("settlement", mandates.grant("kamata-bob", "brokerage"))
    await rt["brokerage"].command(
        "brokerage",
        operators.register_customer(
            "IM-0002", "bob", BOB_PIN, [CustomerAccount("kamata-bob", "intermediary", "bank", 1)]
        ),
    )


def legs(split: Sequence[tuple[str, int, int]]) -> list[FundingLeg]:
    return [FundingLeg(account=a, amount=Decimal(amount), priority=p) for a, amount, p in split]


async def order(
    rt: Rt,
    coid: str,
    *,
    side: Side = Side.BUY,
    quantity: int = 5000,
    price: str | None = "300",
    funding: Sequence[tuple[str, int, int]] = SEED_SPLIT,
    company: str = "x-sec",
    customer: str = "IM-0001",
    pin: str = PIN,
    issue: str = "BRK",
    rule: MismatchRule | None = None,
    tif: TimeInForce = TimeInForce.DAY,
) -> UUID:
    """alice's terminal sends a brokered order (seed 000 claim 1: order plus account indication)."""
    return await rt["investor"].command(
        "alice",
        brokered_order(
            coid,
            customer,
            pin,
            company,
            issue,
            side,
            quantity,
            legs(funding),
            price=None if price is None else Decimal(price),
            rule=rule,
            time_in_force=tif,
        ),
    )


async def first(runtime: AgentRuntime, *types: str, conversation: UUID | None = None) -> Settled:
    """The first outcome of one of ``types`` (in ``conversation``, if given)."""
    key = None if conversation is None else str(conversation)
    return await runtime.outcomes.wait(
        lambda s: s.type in types and (key is None or s.correlation_id == key), timeout=30
    )


async def investor_order(rt: Rt, coid: str) -> dict[str, Any]:
    [row] = await support.rows(rt["investor"], "SELECT * FROM brokered_orders WHERE client_order_id = $1", coid)
    return row


async def brokerage_order(rt: Rt, coid: str) -> dict[str, Any]:
    [row] = await support.rows(rt["brokerage"], "SELECT * FROM orders WHERE client_order_id = $1", coid)
    return row


async def statement(rt: Rt, coid: str) -> dict[str, Any]:
    """The trade statement's settlement information, as the customer's terminal kept it (R-002-49)."""
    row = await investor_order(rt, coid)
    assert row["statement"] is not None, row
    information: dict[str, Any] = json.loads(row["statement"])
    return information


def amounts(items: Sequence[dict[str, Any]]) -> dict[str, Decimal]:
    return {i["account"]: Decimal(i["amount"]) for i in items}


async def postings(rt: Rt, coid: str) -> dict[str, Decimal]:
    """The brokered entry's postings at settlement, per account."""
    order_id = str((await brokerage_order(rt, coid))["order_id"])
    rows = await support.rows(
        rt["settlement"],
        """SELECT p.account_id, p.amount FROM postings p JOIN entries e USING (entry_id)
           WHERE e.kind = 'brokered' AND e.reference = $1""",
        order_id,
    )
    return {r["account_id"]: r["amount"] for r in rows}


async def sent(runtime: AgentRuntime, type_: str) -> list[dict[str, Any]]:
    """The payloads of the ``type_`` messages ``runtime`` emitted, oldest first."""
    rows = await support.rows(
        runtime, "SELECT body FROM outbox_messages WHERE message_type = $1 ORDER BY seq, place", type_
    )
    return [json.loads(r["body"])["payload"] for r in rows]


async def holds(rt: Rt, coid: str) -> list[str]:
    order_id = (await brokerage_order(rt, coid))["order_id"]
    rows = await support.rows(rt["settlement"], "SELECT status FROM holds WHERE hold_id = $1 ORDER BY 1", order_id)
    return [r["status"] for r in rows]


async def placed_holds(rt: Rt) -> list[dict[str, Any]]:
    return await support.rows(rt["settlement"], "SELECT * FROM holds WHERE status = 'placed'")


async def relayed(rt: Rt) -> list[dict[str, Any]]:
    """The brokerage's orders at the exchange."""
    return await support.rows(rt["exchange"], "SELECT * FROM orders WHERE user_id = 'brokerage'")


def assert_status(row: dict[str, Any], status: str) -> None:
    """The customer's order reached ``status``; if not, the message says why it was refused."""
    assert row["status"] == status, f"{row['status']}: {row['reason']}: {row['detail']}"


async def assert_ledger_balanced(rt: Rt) -> None:
    """Every entry's postings sum to zero, and so do all postings (seed 002 §8, double entry)."""
    assert await support.rows(rt["settlement"], UNBALANCED) == []
    [total] = await support.rows(rt["settlement"], "SELECT coalesce(sum(amount), 0) AS total FROM postings")
    assert total["total"] == 0


async def assert_nothing_held(rt: Rt) -> None:
    """R-002-76 (inferred): no hold stays placed once its order is over."""
    assert await placed_holds(rt) == []


async def hold_released(rt: Rt) -> None:
    """Settlement processed the brokerage's release of a hold."""
    await first(rt["settlement"], "funds.hold_release")


async def settled_buy(rt: Rt, coid: str = "a-1", **changes: Any) -> dict[str, Any]:
    """alice buys through the brokerage; the settlement-completion notice reaches her terminal."""
    sent_id = await order(rt, coid, **changes)
    await first(rt["investor"], "brokerage.settlement_completed", "brokerage.order_refused", conversation=sent_id)
    row = await investor_order(rt, coid)
    assert_status(row, "settled")
    return row


def resend(payload: BrokeredOrder) -> Any:
    """A terminal that sends an order exactly as given, without the client's own duplicate check."""

    async def action(ctx: Context) -> UUID:
        return ctx.emit(payload, to="brokerage").envelope.message_id

    return action


# --- 1. refusals: the reason reaches the customer; nothing held, nothing relayed ----------------

CONDITIONS = TransactionConditions(  # seed 000 claim 2
    allowed_issues=("BRK",),
    max_order_value=Decimal(1_000_000),
    allowed_order_types=(OrderType.LIMIT,),
    allowed_sides=(Side.BUY,),
)


@pytest.mark.parametrize(
    ("changes", "conditions", "reason"),
    [
        pytest.param({"customer": "IM-9999"}, None, "unknown_customer", id="unknown-customer-R-002-06"),
        pytest.param({"pin": "0000"}, None, "authentication_failed", id="wrong-pin-R-002-06"),
        pytest.param(
            {"customer": "IM-0002", "pin": BOB_PIN}, None, "not_your_customer_id", id="bobs-customer-id-R-002-06"
        ),
        pytest.param({"company": "z-sec"}, None, "unknown_company", id="no-contract-R-002-02"),
        pytest.param({"issue": "OTHER"}, CONDITIONS, "instrument_not_allowed", id="instrument-seed-000-claim-2"),
        pytest.param({"price": None}, CONDITIONS, "order_type_not_allowed", id="market-order-seed-000-claim-2"),
        pytest.param(
            {"side": Side.SELL, "funding": ((KAMATA, 1_000_000, 1),)},
            CONDITIONS,
            "side_not_allowed",
            id="sell-seed-000-claim-2",
        ),
        pytest.param({}, CONDITIONS, "max_order_value_exceeded", id="max-value-seed-000-claim-2"),
        pytest.param({"issue": "NOPE"}, None, "unknown_issue", id="no-reference-price-R-002-30"),
        pytest.param(
            {"funding": ((KAMATA, 1_300_000, 1), ("kamata-bob", 210_500, 2))},
            None,
            "account_not_available",
            id="another-customers-account-R-002-21",
        ),
        pytest.param(
            {"funding": ((KAMATA, 1_300_000, 1), (Y_MRF, 210_500, 2))},
            None,
            "account_not_available",
            id="account-at-another-company-R-002-14",
        ),
        pytest.param({"funding": ((KAMATA, 0, 1), (OMORI, 0, 2))}, None, "no_funding", id="all-amounts-zero-R-002-33"),
        pytest.param(
            {"funding": ((X_MRF, 1_510_500, 1),)}, None, "insufficient_funds", id="balance-below-allowance-R-002-33"
        ),
    ],
)
async def test_refused_order_reaches_the_customer_with_its_reason_and_leaves_nothing_held_or_relayed(
    settings: Settings, changes: dict[str, Any], conditions: TransactionConditions | None, reason: str
) -> None:
    """R-002-38 (inferred), seed 002 E1/E2/E4, seed 000 claim 2: refused, told why, nothing else."""
    async with support.agents(settings, *NO_TRADE) as rt:
        await support.brokerage_market(rt)
        await customer_alice(rt, conditions=conditions)
        await customer_bob(rt)

        sent_id = await order(rt, "a-1", **changes)
        await rt["investor"].outcomes.reply("brokerage.order_refused", sent_id)

        mine = await investor_order(rt, "a-1")
        assert (mine["status"], mine["reason"]) == ("refused", reason)
        assert await placed_holds(rt) == []
        assert await relayed(rt) == []
        await assert_ledger_balanced(rt)


@pytest.mark.parametrize(
    ("customer", "pin", "reason"),
    [
        pytest.param("IM-9999", PIN, "unknown_customer", id="unknown-customer"),
        pytest.param("IM-0001", "0000", "authentication_failed", id="wrong-pin"),
        pytest.param("IM-0002", BOB_PIN, "not_your_customer_id", id="bobs-customer-id"),
    ],
)
async def test_failed_identification_is_refused_with_its_reason_and_shows_nothing(
    settings: Settings, customer: str, pin: str, reason: str
) -> None:
    """R-002-06, seed 002 E1: processing continues only if the identity is confirmed."""
    async with support.agents(settings, *NO_TRADE) as rt:
        await support.brokerage_market(rt)
        await customer_alice(rt)
        await customer_bob(rt)

        asked = await rt["investor"].command("alice", identify(customer, pin))
        await rt["investor"].outcomes.reply("brokerage.identify_refused", asked)

        [refusal] = await sent(rt["brokerage"], "brokerage.identify_refused")
        assert refusal["reason"] == reason and refusal["request_id"] == str(asked)
        assert await sent(rt["brokerage"], "funds.balance_inquiry") == []
        assert await support.rows(rt["investor"], "SELECT * FROM customer_views") == []


async def test_a_reused_client_order_id_is_refused_and_holds_nothing_more(settings: Settings, keys: KeyStore) -> None:
    """R-002-39/41: one order per client order id; a second order under it is refused untouched."""
    async with support.agents(settings, *NO_TRADE) as rt:
        await support.brokerage_market(rt)
        await customer_alice(rt)
        first_id = await order(rt, "a-1", price="290")  # nobody sells: it rests, its hold placed
        await rt["brokerage"].outcomes.reply("order.accepted", first_id)
        [original] = await support.rows(rt["brokerage"], "SELECT order_id FROM orders")
        held_before = await placed_holds(rt)
        # alice's hold; the other is the street order's cover on the company's clearing account (issue 11)
        assert {h["hold_id"] for h in held_before if h["owner"] == "alice"} == {original["order_id"]}

        again = BrokeredOrder(
            client_order_id="a-1",
            customer_id="IM-0001",
            pin=support.sealed_to(keys, "brokerage", PIN, CUSTOMER_PIN),
            securities_company="x-sec",
            issue_code="BRK",
            side=Side.BUY,
            order_type=OrderType.LIMIT,
            price=Decimal(290),
            quantity=1000,
            funding=tuple(legs(((KAMATA, 294_200, 1),))),
        )
        duplicate = await rt["investor"].command("alice", resend(again))
        await rt["investor"].outcomes.reply("brokerage.order_refused", duplicate)

        [refusal] = await sent(rt["brokerage"], "brokerage.order_refused")
        assert refusal["reason"] == "duplicate_order"
        assert await placed_holds(rt) == held_before
        assert len(await relayed(rt)) == 1
        assert len(await support.rows(rt["brokerage"], "SELECT * FROM orders")) == 1
        await assert_ledger_balanced(rt)


async def test_order_the_exchange_rejects_is_refused_and_its_hold_released(settings: Settings) -> None:
    """The brokerage does not check the daily price limit (380 at reference 300); the exchange
    does: the customer is told exchange_rejected and the hold placed for the order is released."""
    async with support.agents(settings, *NO_TRADE) as rt:
        await support.brokerage_market(rt)
        await customer_alice(rt)

        sent_id = await order(rt, "a-1", price="400", funding=((KAMATA, 1_515_750, 1), (OMORI, 500_000, 2)))
        await rt["investor"].outcomes.reply("brokerage.order_refused", sent_id)
        await rt["settlement"].outcomes.reply("funds.hold_release", sent_id)

        mine = await investor_order(rt, "a-1")
        assert (mine["status"], mine["reason"]) == ("refused", "exchange_rejected")
        assert "price_limit_exceeded" in mine["detail"]
        assert await holds(rt, "a-1") == ["released", "released"]
        assert await relayed(rt) == []  # the exchange keeps no rejected order
        await assert_nothing_held(rt)
        await assert_ledger_balanced(rt)


# --- 2. partial fills and market orders under the mismatch rules (§9.8, R-002-78) --------------

# A partial fill of 3,000 at 300: 900,000 + commission 7,000 + tax 350 = 907,350, short of the
# designated 1,510,500 by 603,150; both rules keep the higher priorities, reducing X MRF, then Omori.
PARTIAL = {KAMATA: Decimal(907_350), OMORI: Decimal(0), X_MRF: Decimal(0)}


async def assert_partial_settled(rt: Rt, rule: MismatchRule, released: Decimal) -> None:
    """3,000 of 5,000 settled by the rule; the unused part of the hold reported released."""
    row = await investor_order(rt, "a-1")
    assert_status(row, "settled")
    information = await statement(rt, "a-1")
    assert (information["executed_quantity"], Decimal(information["total"])) == (3000, 907_350)
    assert information["rule"] == rule.value
    assert amounts(information["customer"]) == PARTIAL
    booked = await postings(rt, "a-1")
    assert {a: booked.get(a) for a in PARTIAL} == {KAMATA: -907_350, OMORI: None, X_MRF: None}
    [notice] = await sent(rt["brokerage"], "brokerage.settlement_completed")
    assert Decimal(notice["released"]) == released and notice["entry_id"] == row["entry_id"]
    assert set(await holds(rt, "a-1")) == {"consumed"}
    position = await support.rows(rt["brokerage"], "SELECT shares FROM positions WHERE customer_id = 'IM-0001'")
    assert position == [{"shares": 3000}]
    await assert_nothing_held(rt)
    await assert_ledger_balanced(rt)


@pytest.mark.parametrize("rule", [MismatchRule.PROTECT_HIGH_PRIORITY, MismatchRule.DEBIT_HIGH_PRIORITY_FIRST])
async def test_partial_fill_reduces_the_lowest_priorities_first_and_releases_the_unused_hold(
    settings: Settings, rule: MismatchRule
) -> None:
    """Seed 002 §9.8 shortfall (R-002-78, E5): the seller offers only 3,000 of the 5,000; the DAY
    order's rest expires at the close (`kabuto exchange end-of-day`) and the 3,000 settle; of the
    1,510,500 held, the 603,150 the settlement did not use is released (R-002-76)."""
    async with support.agents(settings, *AGENTS) as rt:
        await support.brokerage_market(rt)
        await customer_alice(rt)
        await support.seller_bob(rt, shares=3000, offered=3000)

        sent_id = await order(rt, "a-1", rule=rule)
        await rt["brokerage"].outcomes.reply("order.executed", sent_id)
        assert await rt["exchange"].command("exchange", end_of_day) == 1
        await first(rt["investor"], "brokerage.settlement_completed", "brokerage.order_refused")

        await assert_partial_settled(rt, rule, Decimal(603_150))


@pytest.mark.parametrize(
    ("price", "tif", "released"),
    [
        pytest.param("300", TimeInForce.IOC, Decimal(603_150), id="ioc-limit"),  # held 1,510,500
        pytest.param(None, TimeInForce.DAY, Decimal(1_008_400), id="market"),  # held 380 × 5,000 + 15,750
    ],
)
async def test_remainder_cancelled_in_the_same_match_still_settles_what_executed(
    settings: Settings, price: str | None, tif: TimeInForce, released: Decimal
) -> None:
    """Seed 002 §9.8 / E5 for market orders and partial execution: an IOC or market buy of 5,000
    meets only 3,000; the exchange cancels the rest at once; the 3,000 settle (R-002-78)."""
    async with support.agents(settings, *AGENTS) as rt:
        await support.brokerage_market(rt)
        await customer_alice(rt)
        await support.seller_bob(rt, shares=3000, offered=3000)

        sent_id = await order(rt, "a-1", price=price, tif=tif, rule=MismatchRule.DEBIT_HIGH_PRIORITY_FIRST)
        await first(rt["investor"], "brokerage.settlement_completed", "brokerage.order_refused", conversation=sent_id)

        await assert_partial_settled(rt, MismatchRule.DEBIT_HIGH_PRIORITY_FIRST, released)


@pytest.mark.parametrize(
    ("rule", "sell_at", "kamata_balance", "expected"),
    [
        # 310 × 5,000 = 1,550,000 + 15,000 + 750 = 1,565,750: 55,250 over the designated amounts.
        pytest.param(
            MismatchRule.DEBIT_HIGH_PRIORITY_FIRST, "310", 2_000_000, (1_055_250, 300_000, 210_500), id="rule-2"
        ),
        pytest.param(MismatchRule.PROTECT_HIGH_PRIORITY, "310", 2_000_000, (1_000_000, 300_000, 265_750), id="rule-1"),
        # 380 × 5,000 = 1,900,000 + 15,750 = 1,915,750: 405,250 over; Kamata can add only 300,000.
        pytest.param(
            MismatchRule.DEBIT_HIGH_PRIORITY_FIRST,
            "380",
            1_300_000,
            (1_300_000, 405_250, 210_500),
            id="rule-2-as-far-as-balance-allows",
        ),
        pytest.param(
            MismatchRule.PROTECT_HIGH_PRIORITY,
            "380",
            1_300_000,
            (1_115_750, 500_000, 300_000),
            id="rule-1-as-far-as-balance-allows",
        ),
    ],
)
async def test_market_buy_that_costs_more_takes_the_excess_by_the_rule(
    settings: Settings, rule: MismatchRule, sell_at: str, kamata_balance: int, expected: tuple[int, int, int]
) -> None:
    """Seed 002 §9.8 excess (R-002-78, E5/E6): rule 2 debits the highest priority first as far as its
    balance allows, then the next; rule 1 puts the excess on the lowest priority first."""
    async with support.agents(settings, *AGENTS) as rt:
        await support.brokerage_market(rt)
        await customer_alice(rt, balances={KAMATA: kamata_balance})
        await support.seller_bob(rt, price=sell_at)

        await settled_buy(rt, price=None, rule=rule)

        information = await statement(rt, "a-1")
        kamata, omori, mrf = (Decimal(x) for x in expected)
        assert Decimal(information["total"]) == kamata + omori + mrf
        assert amounts(information["customer"]) == {KAMATA: kamata, OMORI: omori, X_MRF: mrf}
        booked = await postings(rt, "a-1")
        assert (booked[KAMATA], booked[OMORI], booked[X_MRF]) == (-kamata, -omori, -mrf)
        assert [c["means"] for c in information["customer"]] == ["39", "39", "22"]  # R-002-56
        await assert_nothing_held(rt)
        await assert_ledger_balanced(rt)


async def test_sell_after_a_settled_buy_receives_the_excess_in_the_highest_priority(settings: Settings) -> None:
    """Seed 002 §9.8 rule 3 (R-002-78), R-002-51/55: alice's position comes from a settled buy, the
    nominee certificate from it; she sells 5,000 at 320 (1,600,000 − 15,000 − 750 = 1,584,250)
    having designated 1,000,000 to Kamata and 400,000 to her X MRF: Kamata receives the excess."""
    async with support.agents(settings, *AGENTS) as rt:
        await support.brokerage_market(rt)
        await customer_alice(rt)
        await support.seller_bob(rt)
        bought = await order(rt, "a-1")
        await rt["investor"].outcomes.reply("brokerage.settlement_completed", bought, timeout=30)
        await rt["brokerage"].outcomes.reply("certificate.issued", bought, timeout=30)  # the nominee certificate
        await rt["settlement"].command("settlement", ledger.deposit("bob-cash", Decimal(200_000), "top-up-bob"))
        bob_buys = OrderTicket(
            "bob-buy", "BRK", Side.BUY, 5000, "bob-cash", Decimal(320), holder_name="Bob", holder_address="Tokyo"
        )
        await rt["investor"].outcomes.reply(
            "order.accepted", await rt["investor"].command("bob", place_order(bob_buys))
        )

        sold = await order(
            rt,
            "a-2",
            side=Side.SELL,
            price="320",
            funding=((KAMATA, 1_000_000, 1), (X_MRF, 400_000, 2)),
            rule=MismatchRule.RECEIVE_HIGH_PRIORITY_FIRST,
        )
        await first(rt["investor"], "brokerage.settlement_completed", "brokerage.order_refused", conversation=sold)

        mine = await investor_order(rt, "a-2")
        assert_status(mine, "settled")
        information = await statement(rt, "a-2")
        assert Decimal(information["total"]) == 1_584_250
        assert amounts(information["customer"]) == {KAMATA: 1_184_250, X_MRF: 400_000}
        booked = await postings(rt, "a-2")
        assert (booked[KAMATA], booked[X_MRF]) == (1_184_250, 400_000)
        position = await support.rows(rt["brokerage"], "SELECT shares FROM positions WHERE customer_id = 'IM-0001'")
        assert position == [{"shares": 0}]
        certificates = await support.rows(rt["brokerage"], "SELECT shares, status FROM nominee_certificates")
        assert certificates == [{"shares": 5000, "status": "surrendered"}]  # sold from the nominee certificate
        await assert_nothing_held(rt)
        await assert_ledger_balanced(rt)


# --- 3. both settlement designs (R-002-58..67) ---------------------------------------------------


async def test_the_same_buy_settles_under_both_designs_with_different_institution_legs(settings: Settings) -> None:
    """R-002-67: X settles on the intermediary's account at X (means 23, design 1), Y is settled on
    its account at the intermediary (means 40, design 2); the customer pays the same either way."""
    async with support.agents(settings, *AGENTS) as rt:
        await support.brokerage_market(rt)
        await support.brokerage_market(rt, company="y-sec", design="im_holds_sc_account")
        await customer_alice(rt, balances={OMORI: 700_000})
        await support.seller_bob(rt, shares=10_000, offered=10_000)

        await settled_buy(rt, "via-x")
        await settled_buy(
            rt, "via-y", company="y-sec", funding=((KAMATA, 1_000_000, 1), (OMORI, 300_000, 2), (Y_MRF, 210_500, 3))
        )

        x, y = await statement(rt, "via-x"), await statement(rt, "via-y")
        assert (x["design"], y["design"]) == ("sc_holds_im_account", "im_holds_sc_account")
        paid = [(Decimal(c["amount"]), c["means"]) for c in x["customer"]]
        assert paid == [(Decimal(c["amount"]), c["means"]) for c in y["customer"]]
        assert paid == [(1_000_000, "39"), (300_000, "39"), (210_500, "22")]
        assert {(i["account"], Decimal(i["amount"]), i["means"]) for i in x["institutions"]} == {
            ("intermediary:cash", 1_300_000, "im"),  # the intermediary collects what it advanced
            ("x-sec:intermediary-account", -1_298_000, "23"),  # advanced 1,300,000 at X, less the 2,000 fee
            ("x-sec:clearing", 1_500_000, "sc"),
            ("x-sec:commission", 8_000, "sc"),
            ("x-sec:consumption-tax", 500, "sc"),
        }
        assert {(i["account"], Decimal(i["amount"]), i["means"]) for i in y["institutions"]} == {
            ("intermediary:y-sec-account", 1_298_000, "40"),  # Y reimbursed at the intermediary, less the fee
            ("intermediary:fees", 2_000, "im"),
            ("y-sec:clearing", 202_000, "sc"),
            ("y-sec:commission", 8_000, "sc"),
            ("y-sec:consumption-tax", 500, "sc"),
        }
        for coid, fund in (("via-x", X_MRF), ("via-y", Y_MRF)):
            booked = await postings(rt, coid)
            assert (booked[KAMATA], booked[OMORI], booked[fund]) == (-1_000_000, -300_000, -210_500)
            assert sum(booked.values()) == 0
        fees = await support.rows(rt["brokerage"], "SELECT company_id, fee FROM fees_received ORDER BY 1")
        assert fees == [{"company_id": "x-sec", "fee": 2_000}, {"company_id": "y-sec", "fee": 2_000}]  # R-002-68
        await assert_nothing_held(rt)
        await assert_ledger_balanced(rt)


@pytest.mark.parametrize(
    "design",
    [
        "sc_holds_im_account",
        "im_holds_sc_account",
    ],
)
async def test_buy_paid_wholly_from_intermediary_accounts_settles_under_either_design(
    settings: Settings, design: str
) -> None:
    """R-002-53/65/67, E10: a customer may pay only from accounts at the intermediary."""
    async with support.agents(settings, *AGENTS) as rt:
        await support.brokerage_market(rt, company="x-sec", design=design)
        await customer_alice(rt)
        await support.seller_bob(rt)

        sent_id = await order(rt, "a-1", funding=((KAMATA, 1_210_500, 1), (OMORI, 300_000, 2)))
        await first(rt["investor"], "brokerage.settlement_completed", "brokerage.order_refused", conversation=sent_id)

        mine = await investor_order(rt, "a-1")
        assert_status(mine, "settled")
        booked = await postings(rt, "a-1")
        assert (booked[KAMATA], booked[OMORI]) == (-1_210_500, -300_000)
        await assert_nothing_held(rt)
        await assert_ledger_balanced(rt)


# --- 5. holds are released or consumed, never left behind (R-002-74/76) ---------------------------


@pytest.mark.parametrize(
    ("price", "tif", "end_the_day"),
    [
        pytest.param("290", TimeInForce.DAY, True, id="day-order-expired-at-end-of-day"),
        pytest.param("290", TimeInForce.IOC, False, id="ioc-with-nothing-to-match"),
        pytest.param(None, TimeInForce.DAY, False, id="market-order-with-nothing-to-match"),
    ],
)
async def test_order_cancelled_with_nothing_filled_is_refused_and_its_hold_released(
    settings: Settings, price: str | None, tif: TimeInForce, end_the_day: bool
) -> None:
    """Nothing executed, nothing settles: the customer is told order_cancelled, the hold is freed."""
    async with support.agents(settings, *NO_TRADE) as rt:
        await support.brokerage_market(rt)
        await customer_alice(rt)

        sent_id = await order(rt, "a-1", price=price, tif=tif)
        await rt["brokerage"].outcomes.reply("order.accepted", sent_id)
        if end_the_day:
            assert await rt["exchange"].command("exchange", end_of_day) == 1
        await first(rt["investor"], "brokerage.order_refused")
        await hold_released(rt)

        mine = await investor_order(rt, "a-1")
        assert (mine["status"], mine["reason"]) == ("refused", "order_cancelled")
        assert set(await holds(rt, "a-1")) == {"released"}
        await assert_nothing_held(rt)
        await assert_ledger_balanced(rt)


async def test_fully_filled_buy_consumes_its_whole_hold(settings: Settings) -> None:
    """Seed 002's worked example: the hold of 1,510,500 is consumed by the settlement, none released."""
    async with support.agents(settings, *AGENTS) as rt:
        await support.brokerage_market(rt)
        await customer_alice(rt)
        await support.seller_bob(rt)

        await settled_buy(rt)

        [notice] = await sent(rt["brokerage"], "brokerage.settlement_completed")
        assert Decimal(notice["released"]) == 0
        assert await holds(rt, "a-1") == ["consumed", "consumed", "consumed"]
        await assert_nothing_held(rt)
        await assert_ledger_balanced(rt)


async def test_market_buy_is_accepted_when_the_selected_balances_together_cover_the_allowance(
    settings: Settings,
) -> None:
    """R-002-33/36: allowance (220..380 band) = 380 × 5,000 + 15,750 = 1,915,750; the three accounts
    hold 2,000,000 + 500,000 + 250,000 = 2,750,000, each at least its designated amount."""
    async with support.agents(settings, *NO_TRADE) as rt:
        await support.brokerage_market(rt)
        await customer_alice(rt, balances={X_MRF: 250_000})

        sent_id = await order(rt, "a-1", price=None)
        await first(rt["investor"], "brokerage.order_accepted", "brokerage.order_refused", conversation=sent_id)

        assert_status(await investor_order(rt, "a-1"), "accepted")
        order_id = (await brokerage_order(rt, "a-1"))["order_id"]
        held = await support.rows(rt["settlement"], "SELECT account_id, amount FROM holds WHERE hold_id = $1", order_id)
        assert sum(h["amount"] for h in held) == 1_915_750
        assert all(h["amount"] <= {KAMATA: 2_000_000, OMORI: 500_000, X_MRF: 250_000}[h["account_id"]] for h in held)
        await hold_released(rt)  # nobody sells: the market order's rest is cancelled, its hold freed
        await assert_nothing_held(rt)


# --- 6. the customer view (seed 000 claims 3–4, R-002-13/14/21..30) ------------------------------


async def test_identification_shows_securities_holdings_and_accounts_with_companies(settings: Settings) -> None:
    """Seed 000 claim 3: securities information in response to the customer id; claim 4: the
    available accounts, with priorities, balances and which companies each may be used with."""
    async with support.agents(settings, *AGENTS) as rt:
        await support.brokerage_market(rt)
        await support.brokerage_market(rt, company="y-sec", design="im_holds_sc_account")
        await customer_alice(rt)
        await support.seller_bob(rt)
        await settled_buy(rt)
        resting = await order(rt, "a-2", quantity=1000, price="290", funding=((KAMATA, 294_200, 1),))
        await rt["brokerage"].outcomes.reply("order.accepted", resting)  # 294,200 held on Kamata

        asked = await rt["investor"].command("alice", identify("IM-0001", PIN))
        await rt["investor"].outcomes.reply("brokerage.customer_view", asked)

        [row] = await support.rows(rt["investor"], "SELECT view FROM customer_views WHERE user_id = 'alice'")
        view = json.loads(row["view"])
        assert view["customer_id"] == "IM-0001" and view["request_id"] == str(asked)
        [security] = view["securities"]
        assert security["issue_code"] == "BRK"
        assert [Decimal(security[k]) for k in ("reference_price", "last_price", "lower_limit", "upper_limit")] == [
            300,
            300,
            220,
            380,
        ]
        assert view["holdings"] == [{"issue_code": "BRK", "securities_company": "x-sec", "shares": 5000}]
        assert view["companies"] == ["x-sec", "y-sec"]
        shown = [
            (
                a["account"],
                a["institution"],
                a["priority"],
                Decimal(a["balance"]),
                Decimal(a["available"]),
                a["selectable_for"],
            )
            for a in view["accounts"]
        ]
        assert shown == [
            (KAMATA, "intermediary", 1, 1_000_000, 1_000_000 - 294_200, ["x-sec", "y-sec"]),
            (OMORI, "intermediary", 2, 200_000, 200_000, ["x-sec", "y-sec"]),
            (X_MRF, "x-sec", 3, 89_500, 89_500, ["x-sec"]),  # R-002-14: not selectable through Y
            (Y_MRF, "y-sec", 4, 300_000, 300_000, ["y-sec"]),
        ]
        table = [(Decimal(up_to), Decimal(commission)) for up_to, commission in view["commission_table"]]
        assert (1_500_000, 10_000) in table and Decimal(view["consumption_tax_rate"]) == Decimal("0.05")  # R-002-12
        await assert_ledger_balanced(rt)
