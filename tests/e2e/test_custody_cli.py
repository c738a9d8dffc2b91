"""``kabuto custody …`` as an operator types it (issue 11 §3): each command says what it did,
and a refused withdrawal or a bad account says why and changes nothing."""

from __future__ import annotations

from broker.settings import Settings
from tests import support
from tests.custody_support import credit_position
from tests.e2e.test_cli import all_ok, together


async def test_custody_commands_open_accounts_show_positions_and_refuse_with_a_reason(settings: Settings) -> None:
    opened, at_trustbank = await all_ok(
        settings,
        ("custody", "open-account", "alice-sk", "--client", "alice"),
        ("custody", "open-account", "alice-tb", "--client", "alice", "--custodian", "trustbank"),
    )
    assert "opened safekeeping account alice-sk for alice at custody" in opened
    assert "at trustbank" in at_trustbank
    again, malformed, accounts = await together(
        settings,
        ("custody", "open-account", "alice-sk", "--client", "alice"),
        ("custody", "open-account", "Bad Id", "--client", "alice"),
        ("custody", "accounts", "--client", "alice"),
    )
    assert again[0] == 1 and "already exists" in again[2]
    assert malformed[0] == 1 and "is not an account id" in malformed[2]
    assert accounts[0] == 0 and "alice-sk" in accounts[1] and "trustbank" in accounts[1]
    async with support.agents(settings, "custody") as rt:
        await credit_position(rt["custody"], "alice-sk", "KBT", 500)
    positions, statement, too_many, nowhere, locks, deposits = await together(
        settings,
        ("custody", "positions", "--client", "alice"),
        ("custody", "statement", "alice"),
        ("custody", "withdraw", "alice-sk", "KBT", "600"),
        ("custody", "withdraw", "nowhere", "KBT", "1"),
        ("custody", "locks"),
        ("custody", "deposits"),
    )
    assert positions[0] == 0 and "KBT" in positions[1] and "500" in positions[1]
    assert statement[0] == 0 and "cursor 1" in statement[1] and "alice-sk" in statement[1]
    assert too_many[0] == 1 and "insufficient_available" in too_many[2]
    assert nowhere[0] == 1 and "unknown_account" in nowhere[2]
    assert locks[0] == 0 and "lock" in locks[1]
    assert deposits[0] == 0 and "hand-over" in deposits[1]
    (withdrawals,) = await all_ok(settings, ("custody", "withdrawals"))  # the refused ones left nothing
    assert "KBT" not in withdrawals
