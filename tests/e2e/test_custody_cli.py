"""``kabuto custody …`` as an operator types it (issue 11 §3): each command says what it did,
and a refused withdrawal or a bad account says why and changes nothing."""

from __future__ import annotations

from broker.settings import Settings
from tests import support
from tests.custody_support import credit_position
from tests.e2e.test_cli import kabuto, ok


async def test_custody_commands_open_accounts_show_positions_and_refuse_with_a_reason(settings: Settings) -> None:
    assert "opened safekeeping account alice-sk for alice at custody" in await ok(
        settings, "custody", "open-account", "alice-sk", "--client", "alice"
    )
    assert "at trustbank" in await ok(
        settings, "custody", "open-account", "alice-tb", "--client", "alice", "--custodian", "trustbank"
    )
    code, _, err = await kabuto(settings, "custody", "open-account", "alice-sk", "--client", "alice")
    assert code == 1 and "already exists" in err
    code, _, err = await kabuto(settings, "custody", "open-account", "Bad Id", "--client", "alice")
    assert code == 1 and "is not an account id" in err
    accounts = await ok(settings, "custody", "accounts", "--client", "alice")
    assert "alice-sk" in accounts and "trustbank" in accounts
    async with support.agents(settings, "custody") as rt:
        await credit_position(rt["custody"], "alice-sk", "KBT", 500)
    positions = await ok(settings, "custody", "positions", "--client", "alice")
    assert "KBT" in positions and "500" in positions
    statement = await ok(settings, "custody", "statement", "alice")
    assert "cursor 1" in statement and "alice-sk" in statement
    code, _, err = await kabuto(settings, "custody", "withdraw", "alice-sk", "KBT", "600")
    assert code == 1 and "insufficient_available" in err
    code, _, err = await kabuto(settings, "custody", "withdraw", "nowhere", "KBT", "1")
    assert code == 1 and "unknown_account" in err
    assert "KBT" not in await ok(settings, "custody", "withdrawals")
    assert "lock" in await ok(settings, "custody", "locks")
    assert "hand-over" in await ok(settings, "custody", "deposits")
