"""Operator input is validated before anything is stored (issue 10): a customer with malformed or
unusable accounts is refused at the command, a record stored before this check is refused by the
brokerage with a reason instead of crashing it, ``customer-update`` corrects it, and
``brokerage company`` opens the ledger accounts the contract needs."""

from __future__ import annotations

from broker.consumer import Outcome
from broker.db import agent_pool
from broker.settings import Settings
from tests import support
from tests.e2e.test_cli import all_ok, kabuto, together

COMPANY = ("brokerage", "company", "x-sec", "--name", "X Securities", "--design", "sc_holds_im_account")
CUSTOMER = ("brokerage", "customer", "IM-1", "--user", "alice", "--pin", "2468")


async def customers(settings: Settings) -> list[dict[str, object]]:
    async with agent_pool(settings.database_url, "brokerage", max_size=1) as pool:
        return [dict(r) for r in await pool.fetch("SELECT customer_id, account_id FROM customer_accounts")]


async def test_a_customer_with_bad_accounts_is_refused_and_nothing_is_stored(settings: Settings) -> None:
    assert (await kabuto(settings, *COMPANY))[0] == 0
    refusals = {
        ("--account", "Kamata Alice:intermediary:bank:1"): "account id 'Kamata Alice' is malformed",
        ("--account", "kamata:Y Sec:bank:1"): "held at 'Y Sec': not 'intermediary' nor a company id",
        ("--account", "kamata:intermediary:cash:1"): "of kind 'cash': not bank or fund",
        ("--account", "kamata:intermediary:bank:0"): "has priority 0",
        ("--account", "a1:intermediary:bank:1", "--account", "a2:x-sec:fund:1"): "two accounts have the same priority",
    }
    answers = await together(settings, *((*CUSTOMER, *accounts) for accounts in refusals))
    for why, (code, _, err) in zip(refusals.values(), answers, strict=True):
        assert code == 1 and why in err, err
    assert await customers(settings) == []
    code, _, err = await kabuto(settings, *CUSTOMER, "--account", "a1:intermediary:bank:1")
    assert code == 0, err


async def test_a_bad_stored_record_is_refused_with_a_reason_and_corrected_by_customer_update(
    settings: Settings,
) -> None:
    assert (await kabuto(settings, *COMPANY))[0] == 0
    assert (await kabuto(settings, *CUSTOMER, "--account", "kamata-alice:intermediary:bank:1"))[0] == 0
    async with support.agents(settings, "investor", "brokerage", "settlement") as rt:
        # A record stored before the command validated its input (what issue 10 found in the field).
        await rt["brokerage"].query(
            lambda c: c.execute("UPDATE customer_accounts SET account_id = 'Kamata Alice' WHERE customer_id = 'IM-1'")
        )
        code, out, _ = await kabuto(settings, "investor", "identify", "--as", "alice", "IM-1", "--pin", "2468")
        assert code == 1 and out.startswith("refused: customer_record_invalid: customer IM-1 has malformed account")
        assert "customer-update" in out
        assert rt["brokerage"].outcomes.count(Outcome.DEAD_LETTERED) == 0

        code, out, err = await kabuto(
            settings, "brokerage", "customer-update", "IM-1", "--account", "Bad Id:intermediary:bank:1"
        )
        assert code == 1 and "malformed" in err
        code, out, err = await kabuto(
            settings,
            "brokerage",
            "customer-update",
            "IM-1",
            "--account",
            "kamata-alice:intermediary:bank:1",
            "--pin",
            "1357",
        )
        assert code == 0 and "updated: PIN, 1 account(s)" in out, err
        code, out, _ = await kabuto(settings, "investor", "identify", "--as", "alice", "IM-1", "--pin", "1357")
        assert code == 0 and out.startswith("accepted: identified as customer IM-1"), out
    unknown, nothing = await together(
        settings, ("brokerage", "customer-update", "IM-404", "--pin", "1234"), ("brokerage", "customer-update", "IM-1")
    )
    assert unknown[0] == 1 and "no customer IM-404" in unknown[2]
    assert nothing[0] == 1 and "nothing to change" in nothing[2]


async def test_brokerage_company_opens_the_ledger_accounts_of_the_contract_once(settings: Settings) -> None:
    code, out, err = await kabuto(settings, *COMPANY, "--capital", "1000000")
    assert code == 0 and "settlement accounts opened: x-sec:clearing" in out, err
    accounts = ("x-sec:clearing", "x-sec:commission", "x-sec:consumption-tax", "intermediary:cash",
                "intermediary:x-sec-account")  # fmt: skip
    statements = await all_ok(settings, *(("settlement", "statement", account) for account in accounts))
    assert "1000000" in statements[0]
    again, malformed = await together(
        settings, COMPANY, ("brokerage", "company", "X SEC", "--name", "X", "--design", "sc_holds_im_account")
    )
    assert again[0] == 1 and "already has a contract with x-sec" in again[2]
    assert malformed[0] == 1 and "company id 'X SEC' is malformed" in malformed[2]
