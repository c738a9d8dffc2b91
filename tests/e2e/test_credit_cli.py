"""``kabuto credit …`` as an operator types it: set-up, listings after a purchase, and clear
refusals of bad input that change nothing."""

from __future__ import annotations

from agents.merchant.client import MerchantTerminal
from broker.settings import Settings
from tests import credit_support as cs
from tests import support
from tests.e2e.test_cli import kabuto, ok


async def test_operators_set_up_the_line_and_read_its_books(settings: Settings) -> None:
    assert "card 4000-0009" in await ok(
        settings, "credit", "card", "4000-0009", "--purchaser", "bob", "--type", "debit", "--limit", "30000",
        "--repayment-account", "bob-cash",
    )  # fmt: skip
    assert "4000-0009" in await ok(settings, "credit", "cards")
    await ok(settings, "credit", "haircut", "--band", "0:5000000:0.6", "--band", "5000000::1.1")  # rates above 1
    await ok(settings, "credit", "rating", "CMPA", "AA", "1.0")
    rates = await ok(settings, "credit", "rates")
    assert "1.1" in rates and "CMPA" in rates and "AA" in rates
    assert "contract with bob" in await ok(
        settings, "credit", "contract", "bob", "--method", "haircut", "--cash-account", "bob-cash",
        "--card", "4000-0009", "--custodian", "custody",
    )  # fmt: skip
    audit = await ok(settings, "credit", "audit", "--purchaser", "bob")
    assert "card_opened" in audit and "contract_set" in audit


async def test_bad_input_is_refused_with_a_reason_and_changes_nothing(settings: Settings) -> None:
    code, _, err = await kabuto(settings, "credit", "haircut", "--band", "0:6000000:0.8", "--band", "5000000::0.9")
    assert code == 1 and "overlaps" in err
    code, _, err = await kabuto(settings, "credit", "haircut", "--band", "zero")
    assert code == 2 and "MIN:MAX:RATE" in err
    code, _, err = await kabuto(settings, "credit", "rating", "CMPA", "D", "-1")
    assert code == 1 and "not positive" in err
    code, _, err = await kabuto(
        settings, "credit", "card", "4000-0009", "--purchaser", "Not An Id", "--type", "credit", "--limit", "1",
        "--repayment-account", "x-cash",
    )  # fmt: skip
    assert code == 1 and "not a participant id" in err
    code, _, err = await kabuto(settings, "credit", "repay", "00000000-0000-0000-0000-000000000001", "100")
    assert code == 1 and "no authorisation" in err
    assert "(none)" in await ok(settings, "credit", "rates")
    assert "(none)" in await ok(settings, "credit", "cards")


async def test_listings_show_the_worked_example(settings: Settings) -> None:
    async with support.agents(settings, *cs.AGENTS) as rt, MerchantTerminal.connect(settings, "shop") as shop:
        await cs.seed_003_worked_example(rt)
        await shop.request_purchase("tv", cs.CARD, 200_000)
        assert (await shop.answer("tv")).approved
    obligations = await ok(settings, "credit", "obligations")
    assert "150000" in obligations and "approved" in obligations and "8000000" in obligations
    collateral = await ok(settings, "credit", "collateral", "--purchaser", "alice")
    assert cs.ISSUE_A in collateral and cs.ISSUE_B not in collateral and "previous_close" in collateral
    valuations = await ok(settings, "credit", "valuations")
    assert "previous_close" in valuations and "price_age_seconds" in valuations
    holdings = await ok(settings, "credit", "holdings", "--purchaser", "alice")
    assert cs.ISSUE_B in holdings
    assert "approved" in await ok(settings, "credit", "authorisations")
    assert "S5040" in await ok(settings, "credit", "audit", "--purchaser", "alice")
    assert cs.ISSUE_A in await ok(settings, "credit", "prices")
