"""``kabuto credit …`` as an operator types it: set-up, listings after a purchase, and clear
refusals of bad input that change nothing."""

from __future__ import annotations

from agents.merchant.client import MerchantTerminal
from broker.settings import Settings
from tests import credit_support as cs
from tests import support
from tests.e2e.test_cli import all_ok, ok, together


async def test_operators_set_up_the_line_and_read_its_books(settings: Settings) -> None:
    card, _, _ = await all_ok(
        settings,
        ("credit", "card", "4000-0009", "--purchaser", "bob", "--type", "debit", "--limit", "30000",
         "--repayment-account", "bob-cash"),
        ("credit", "haircut", "--band", "0:5000000:0.6", "--band", "5000000::1.1"),  # rates above 1
        ("credit", "rating", "CMPA", "AA", "1.0"),
    )  # fmt: skip
    assert "card 4000-0009" in card
    cards, rates = await all_ok(settings, ("credit", "cards"), ("credit", "rates"))
    assert "4000-0009" in cards
    assert "1.1" in rates and "CMPA" in rates and "AA" in rates
    assert "contract with bob" in await ok(
        settings, "credit", "contract", "bob", "--method", "haircut", "--cash-account", "bob-cash",
        "--card", "4000-0009", "--custodian", "custody",
    )  # fmt: skip
    audit = await ok(settings, "credit", "audit", "--purchaser", "bob")
    assert "card_opened" in audit and "contract_set" in audit


async def test_bad_input_is_refused_with_a_reason_and_changes_nothing(settings: Settings) -> None:
    overlapping, malformed, negative, bad_purchaser, no_authorisation = await together(
        settings,
        ("credit", "haircut", "--band", "0:6000000:0.8", "--band", "5000000::0.9"),
        ("credit", "haircut", "--band", "zero"),
        ("credit", "rating", "CMPA", "D", "-1"),
        ("credit", "card", "4000-0009", "--purchaser", "Not An Id", "--type", "credit", "--limit", "1",
         "--repayment-account", "x-cash"),
        ("credit", "repay", "00000000-0000-0000-0000-000000000001", "100"),
    )  # fmt: skip
    assert overlapping[0] == 1 and "overlaps" in overlapping[2]
    assert malformed[0] == 2 and "MIN:MAX:RATE" in malformed[2]
    assert negative[0] == 1 and "not positive" in negative[2]
    assert bad_purchaser[0] == 1 and "not a participant id" in bad_purchaser[2]
    assert no_authorisation[0] == 1 and "no authorisation" in no_authorisation[2]
    rates, cards = await all_ok(settings, ("credit", "rates"), ("credit", "cards"))
    assert "(none)" in rates and "(none)" in cards


async def test_listings_show_the_worked_example(settings: Settings) -> None:
    async with support.agents(settings, *cs.AGENTS) as rt, MerchantTerminal.connect(settings, "shop") as shop:
        await cs.seed_003_worked_example(rt)
        await shop.request_purchase("tv", cs.CARD, 200_000)
        assert (await shop.answer("tv")).approved
    obligations, collateral, valuations, holdings, authorisations, audit, prices = await all_ok(
        settings,
        ("credit", "obligations"),
        ("credit", "collateral", "--purchaser", "alice"),
        ("credit", "valuations"),
        ("credit", "holdings", "--purchaser", "alice"),
        ("credit", "authorisations"),
        ("credit", "audit", "--purchaser", "alice"),
        ("credit", "prices"),
    )
    assert "150000" in obligations and "approved" in obligations and "8000000" in obligations
    assert cs.ISSUE_A in collateral and cs.ISSUE_B not in collateral and "previous_close" in collateral
    assert "previous_close" in valuations and "price_age_seconds" in valuations
    assert cs.ISSUE_B in holdings
    assert "approved" in authorisations
    assert "S5040" in audit
    assert cs.ISSUE_A in prices
