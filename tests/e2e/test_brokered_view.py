"""``kabuto investor broker-order`` waits for the brokerage's answer, and ``kabuto investor brokered``
shows the commission, tax, fee share, per-account amounts and the released hold (issue 10,
seed 002's worked example, R-002-45..49)."""

from __future__ import annotations

from broker.settings import Settings
from tests import support
from tests.e2e.test_brokered_trading import AGENTS, customer_alice
from tests.e2e.test_cli import kabuto

FUNDING = ("--fund", "kamata-alice:1000000:1", "--fund", "omori-alice:300000:2", "--fund", "x-mrf-alice:210500:3")


async def test_brokered_order_is_answered_and_its_settlement_shown_in_full(settings: Settings) -> None:
    async with support.agents(settings, *AGENTS) as rt:
        await support.brokerage_market(rt)
        await customer_alice(rt)
        await support.seller_bob(rt)
        order = ("investor", "broker-order", "--as", "alice", "IM-0001", "buy", "BRK", "5000", "--pin", "2468")
        code, out, err = await kabuto(settings, *order, "--company", "x-sec", "--limit", "300", *FUNDING, "--id", "a-1")
        assert code == 0, err
        assert out.startswith("accepted: brokered order a-1 relayed to the exchange") and "1,510,500 held" in out
        await rt["investor"].outcomes.wait(lambda s: s.type == "brokerage.settlement_completed", timeout=30)
        code, out, err = await kabuto(settings, "investor", "brokered", "--as", "alice")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "a-1  settled"
    assert "  held        kamata-alice 1,000,000, omori-alice 300,000, x-mrf-alice 210,500" in lines
    assert any(
        "consideration 1,500,000 · commission 10,000 · consumption tax 500 · total 1,510,500" in line for line in lines
    )
    assert any(line.startswith("  fee share   intermediary ") for line in lines)
    accounts = [line.split()[1:3] for line in lines if line.startswith("  account")]
    assert accounts == [["kamata-alice", "1,000,000"], ["omori-alice", "300,000"], ["x-mrf-alice", "210,500"]]
    settled = next(line for line in lines if line.startswith("  settled"))
    assert "hold released 0" in settled


async def test_a_brokered_order_the_brokerage_refuses_is_printed_with_its_reason(settings: Settings) -> None:
    async with support.agents(settings, "investor", "brokerage", "settlement", "exchange") as rt:
        await support.brokerage_market(rt)
        await customer_alice(rt)
        order = ("investor", "broker-order", "--as", "alice", "IM-0001", "buy", "BRK", "5000", "--pin", "9999")
        code, out, _ = await kabuto(settings, *order, "--company", "x-sec", "--limit", "300", *FUNDING, "--id", "a-2")
    assert code == 1 and out.startswith("refused: brokered order a-2: authentication_failed")
