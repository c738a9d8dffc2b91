"""``kabuto settlement instructions|instruction|cancel|recycle|mandate`` as an operator types them
(issue 11): each shows or does what it says, and refuses bad input with a clear message."""

from __future__ import annotations

from broker.pki import KeyStore
from broker.settings import Settings
from tests import support
from tests.e2e.test_cli import all_ok, ok, together
from tests.integration.test_dvp import AGENTS, unfunded


async def test_issue_11_operators_inquire_recycle_and_cancel_instructions(settings: Settings, keys: KeyStore) -> None:
    async with support.agents(settings, *AGENTS) as rt:
        await unfunded(rt, settings, keys)  # instruction 901: bob cannot pay yet

    listing, shown = await all_ok(
        settings, ("settlement", "instructions", "--live"), ("settlement", "instruction", "901")
    )
    assert "901" in listing and "pending" in listing and "lack_of_cash" in listing
    assert "accepted" in shown and "matched" in shown and "detail:" in shown
    assert "waiting 1" in await ok(settings, "settlement", "recycle")
    assert "cancelled, failed" in await ok(settings, "settlement", "cancel", "901")
    assert "901" not in await ok(settings, "settlement", "instructions", "--live")

    cancelled_again, unknown, bad_date, mandate, no_account = await together(
        settings,
        ("settlement", "cancel", "901"),
        ("settlement", "instruction", "4242"),
        ("settlement", "recycle", "--as-of", "yesterday"),
        ("settlement", "mandate", "alice-cash", "--agent", "brokerage"),
        ("settlement", "mandate", "nobody-cash", "--agent", "brokerage"),
    )
    assert cancelled_again[0] == 1 and "not_cancellable" in cancelled_again[1]
    assert unknown[0] == 1 and "no instruction 4242" in unknown[2]
    assert bad_date[0] == 2 and "as-of" in bad_date[2]
    assert mandate[0] == 0 and "brokerage may post on alice-cash" in mandate[1], mandate[2]
    assert no_account[0] == 1 and "no account nobody-cash" in no_account[2]
