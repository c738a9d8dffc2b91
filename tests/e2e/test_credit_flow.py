"""Flow 5 end to end (seed 003): a merchant's purchase above the card limit, collateral locked at
custody, approval, refusal, repayment — against real RabbitMQ and PostgreSQL."""

from __future__ import annotations

import json

from agents.credit import card_issuer, jobs
from agents.credit.domain import CardType, Method
from agents.merchant.client import MerchantTerminal
from broker.settings import Settings
from tests import credit_support as cs
from tests import support


async def test_seed_003_worked_example_locks_only_issue_a_r_003_18_34_40(settings: Settings) -> None:
    async with support.agents(settings, *cs.AGENTS) as rt, MerchantTerminal.connect(settings, "shop") as shop:
        await cs.seed_003_worked_example(rt)
        await shop.request_purchase("order-1", cs.CARD, 200_000, "a television")
        answer = await shop.answer("order-1")
        assert answer.approved, answer
        assert (answer.covered, answer.secured, answer.purchaser) == (50_000, 150_000, "alice")  # F1
        obligation = (await support.rows(rt["credit"], "SELECT * FROM obligations"))[0]
        assert (obligation["shortfall"], obligation["grantable"], obligation["accumulated"]) == (
            150_000,
            8_000_000,
            6_000_000,
        )
        locks = await cs.collateral(rt["credit"])
        assert [(c["issue_code"], c["quantity"], c["status"]) for c in locks] == [(cs.ISSUE_A, 6_000, "placed")]
        assert locks[0]["price_source"] == "previous_close"
        assert await cs.custody_positions(rt["custody"]) == {cs.ISSUE_A: (0, 6_000), cs.ISSUE_B: (2_000, 0)}
        statement = await _notice(rt, "credit.collateral_statement")
        assert [(p["issue_code"], p["quantity"], p["market_value"]) for p in statement["positions"]] == [
            (cs.ISSUE_A, 6_000, 6_000_000)
        ]
        told = await _notice(rt, "card.payment_answer")
        assert told["approved"] and told["merchant"] == "shop"  # R-003-17
        steps = [r["step"] for r in await support.rows(rt["credit"], "SELECT step FROM audit_trail ORDER BY seq")]
        for step in ("S1040", "S1050", "S1060", "S2000", "S2030", "S2040", "S5040", "S1100", "S1150", "S1110"):
            assert step in steps, step  # R-003-63


async def test_haircut_method_gives_the_same_8_000_000_r_003_26(settings: Settings) -> None:
    async with support.agents(settings, *cs.AGENTS) as rt, MerchantTerminal.connect(settings, "shop") as shop:
        await cs.seed_003_worked_example(rt, method=Method.HAIRCUT)
        await shop.request_purchase("order-h", cs.CARD, 200_000)
        assert (await shop.answer("order-h")).approved
        valuation = (await support.rows(rt["credit"], "SELECT * FROM valuations"))[0]
        assert (valuation["method"], valuation["total_market_value"], valuation["grantable"]) == (
            "haircut",
            10_000_000,
            8_000_000,
        )
        assert [c["issue_code"] for c in await cs.collateral(rt["credit"])] == [cs.ISSUE_A]


async def test_purchase_within_the_limit_is_answered_at_once_without_the_line_r_003_16(settings: Settings) -> None:
    async with support.agents(settings, *cs.AGENTS) as rt, MerchantTerminal.connect(settings, "shop") as shop:
        await cs.seed_003_worked_example(rt)
        await shop.request_purchase("small", cs.CARD, 30_000)
        answer = await shop.answer("small")
        assert answer.approved and (answer.covered, answer.secured) == (30_000, 0)
        assert await support.rows(rt["credit"], "SELECT * FROM obligations") == []
        assert await cs.custody_positions(rt["custody"]) == {cs.ISSUE_A: (6_000, 0), cs.ISSUE_B: (2_000, 0)}


async def test_refusal_locks_nothing_r_003_36_39(settings: Settings) -> None:
    async with support.agents(settings, *cs.AGENTS) as rt, MerchantTerminal.connect(settings, "shop") as shop:
        await cs.seed_003_worked_example(rt)
        await shop.request_purchase("too-big", cs.CARD, 9_050_000)  # shortfall 9,000,000 > 8,000,000
        answer = await shop.answer("too-big")
        assert not answer.approved
        assert answer.reason == "additional_credit_refused" and "insufficient_collateral" in (answer.detail or "")
        assert await cs.collateral(rt["credit"]) == []
        assert await cs.custody_positions(rt["custody"]) == {cs.ISSUE_A: (6_000, 0), cs.ISSUE_B: (2_000, 0)}
        card = (await support.rows(rt["credit"], "SELECT outstanding FROM card_accounts"))[0]
        assert card["outstanding"] == 0  # the reserved covered part was given back
        told = await _notice(rt, "card.payment_answer")
        assert not told["approved"]


async def test_unknown_card_is_refused_with_a_reason(settings: Settings) -> None:
    async with support.agents(settings, *cs.AGENTS) as rt, MerchantTerminal.connect(settings, "shop") as shop:
        await cs.seed_003_worked_example(rt)
        await shop.request_purchase("nobody", "4999-0000", 1_000)
        answer = await shop.answer("nobody")
        assert not answer.approved and answer.reason == "unknown_card"


async def test_debit_card_pays_the_covered_part_and_owes_the_rest_f6_r_003_44(settings: Settings) -> None:
    async with support.agents(settings, *cs.AGENTS) as rt, MerchantTerminal.connect(settings, "shop") as shop:
        await cs.seed_003_worked_example(rt, card_type=CardType.DEBIT)
        await shop.request_purchase("debit", cs.CARD, 200_000)
        assert (await shop.answer("debit")).approved
        auth = (await support.rows(rt["credit"], "SELECT * FROM authorisations"))[0]
        assert (auth["covered"], auth["secured"], auth["owed"]) == (50_000, 150_000, 150_000)


async def test_repayment_in_full_unlocks_exactly_the_securing_positions_r_003_45_49(settings: Settings) -> None:
    async with support.agents(settings, *cs.AGENTS) as rt, MerchantTerminal.connect(settings, "shop") as shop:
        credit = rt["credit"]
        await cs.seed_003_worked_example(rt)
        await shop.request_purchase("tv", cs.CARD, 200_000)
        answer = await shop.answer("tv")
        assert answer.approved and answer.authorisation_id is not None
        await shop.capture("tv", cs.SHOP_ACCOUNT)
        assert (await shop.capture_answer("tv")).captured  # R-003-42: the merchant is paid 200,000
        auth_id = answer.authorisation_id
        await credit.command("card-issuer", card_issuer.repay(auth_id, 100_000))
        await credit.outcomes.wait(lambda s: s.type == "credit.repayment")
        assert [c["status"] for c in await cs.collateral(credit)] == ["placed"]  # R-003-48: partly repaid
        await credit.command("card-issuer", card_issuer.repay(auth_id, 100_000))
        await credit.outcomes.wait(lambda s: s.type == "custody.lock.released")
        assert [c["status"] for c in await cs.collateral(credit)] == ["released"]
        assert await cs.custody_positions(rt["custody"]) == {cs.ISSUE_A: (6_000, 0), cs.ISSUE_B: (2_000, 0)}
        await rt["investor"].outcomes.wait(lambda s: s.type == "credit.collateral_released")
        released = await _notice(rt, "credit.collateral_released")
        assert [p["issue_code"] for p in released["positions"]] == [cs.ISSUE_A]
        balances = await cs.balances(rt["settlement"])
        assert balances[cs.SHOP_ACCOUNT] == 200_000 and balances["alice-cash"] == 800_000
        assert balances[cs.ISSUER_ACCOUNT] == 0


async def test_uncaptured_approval_lapses_and_releases_its_locks(settings: Settings) -> None:
    async with support.agents(settings, *cs.AGENTS) as rt, MerchantTerminal.connect(settings, "shop") as shop:
        credit = rt["credit"]
        await cs.seed_003_worked_example(rt)
        await shop.request_purchase("never", cs.CARD, 200_000)
        assert (await shop.answer("never")).approved
        await credit.query(lambda c: c.execute("UPDATE authorisations SET capture_by = now() - interval '1 second'"))
        assert await credit.command("card-issuer", card_issuer.expire_uncaptured()) == 1
        await credit.outcomes.wait(lambda s: s.type == "custody.lock.released")
        assert [c["status"] for c in await cs.collateral(credit)] == ["released"]
        assert await cs.custody_positions(rt["custody"]) == {cs.ISSUE_A: (6_000, 0), cs.ISSUE_B: (2_000, 0)}
        await shop.capture("never", cs.SHOP_ACCOUNT)
        late = await shop.capture_answer("never")
        assert not late.captured and late.reason == "purchase_lapsed"


async def _notice(rt: dict[str, support.AgentRuntime], kind: str) -> dict[str, object]:
    await rt["investor"].outcomes.wait(lambda s: s.type == kind)
    found = await cs.notices(rt["investor"], kind)
    assert found, kind
    content: dict[str, object] = json.loads(found[-1]["content"])
    return content


async def test_periodic_refresh_reflects_deltas_and_recomputes_db_610_r_003_24(settings: Settings) -> None:
    async with support.agents(settings, *cs.AGENTS) as rt:
        credit = rt["credit"]
        await cs.seed_003_worked_example(rt)
        await rt["custody"].command("custody", cs.deposit_shares("alice-sk", "alice", cs.ISSUE_B, 1_000))
        await credit.query(lambda c: c.execute("UPDATE purchasers SET last_refresh = NULL"))
        [asked] = await credit.command("credit", jobs.refresh_due)
        await credit.outcomes.reply("custody.holdings.deltas", asked)
        [b] = await support.rows(credit, "SELECT available FROM holdings WHERE issue_code = $1", cs.ISSUE_B)
        assert b["available"] == 3_000
        [grantable] = await support.rows(credit, "SELECT amount FROM grantable WHERE purchaser = 'alice'")
        assert grantable["amount"] == 6_000_000 + 3_000 * 2_000 // 2  # rating: A × 1.0 + B × 0.5
        steps = [r["step"] for r in await support.rows(credit, "SELECT step FROM audit_trail ORDER BY seq")]
        assert "S6000" in steps and "S6050" in steps
        assert await credit.command("credit", jobs.refresh_due) == []  # not due again within the interval
