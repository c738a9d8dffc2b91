"""``kabuto settlement instructions|instruction|cancel|recycle|mandate`` as an operator types them
(issue 11): each shows or does what it says, and refuses bad input with a clear message."""

from __future__ import annotations

from broker.pki import KeyStore
from broker.settings import Settings
from tests import support
from tests.e2e.test_cli import kabuto, ok
from tests.integration.test_dvp import AGENTS, unfunded


async def test_issue_11_operators_inquire_recycle_and_cancel_instructions(settings: Settings, keys: KeyStore) -> None:
    async with support.agents(settings, *AGENTS) as rt:
        await unfunded(rt, settings, keys)  # instruction 901: bob cannot pay yet

    listing = await ok(settings, "settlement", "instructions", "--live")
    assert "901" in listing and "pending" in listing and "lack_of_cash" in listing
    shown = await ok(settings, "settlement", "instruction", "901")
    assert "accepted" in shown and "matched" in shown and "detail:" in shown
    assert "waiting 1" in await ok(settings, "settlement", "recycle")
    assert "cancelled, failed" in await ok(settings, "settlement", "cancel", "901")
    assert "901" not in await ok(settings, "settlement", "instructions", "--live")

    code, out, _ = await kabuto(settings, "settlement", "cancel", "901")
    assert code == 1 and "not_cancellable" in out
    code, _, err = await kabuto(settings, "settlement", "instruction", "4242")
    assert code == 1 and "no instruction 4242" in err
    code, _, err = await kabuto(settings, "settlement", "recycle", "--as-of", "yesterday")
    assert code == 2 and "as-of" in err

    assert "brokerage may post on alice-cash" in await ok(
        settings, "settlement", "mandate", "alice-cash", "--agent", "brokerage"
    )
    code, _, err = await kabuto(settings, "settlement", "mandate", "nobody-cash", "--agent", "brokerage")
    assert code == 1 and "no account nobody-cash" in err
