"""``kabuto demo``: run every agent in this process and walk through the flows that work,
printing a readable account of what happened."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from agents.demo.brokered import brokered
from agents.demo.credit import credit
from agents.demo.custody import custody
from agents.demo.dvp import dvp
from agents.demo.issuance import Say, issuance
from agents.demo.lifecycle import lifecycle
from agents.demo.trading import trading
from agents.registry import AGENTS
from broker.runtime import started
from broker.settings import Settings
from broker.steps import SILENT, Steps


async def run(settings: Settings, say: Say = print, steps: Steps = SILENT) -> None:
    """The flows in order, each reported to ``steps`` (``kabuto demo`` draws a bar per flow)."""
    if len(settings.investors) < 2:
        raise SystemExit("the demo needs two investors: set KABUTO_INVESTORS=alice,bob")
    alice, bob = settings.investors[:2]
    async with started(list(AGENTS.values()), settings) as runtimes:
        say(f"Kabuto demo — {len(runtimes)} agents running: {', '.join(runtimes)}\n")
        steps.expect(7)
        steps.doing("issuance")
        offering = await issuance(runtimes, alice, bob, say)
        steps.done("issuance")
        later: list[tuple[str, Callable[[], Awaitable[None]]]] = [
            ("trading", lambda: trading(runtimes, offering, alice, bob, say)),
            ("lifecycle", lambda: lifecycle(runtimes, offering.issue_code, alice, bob, say)),
            ("custody", lambda: custody(runtimes, offering.issue_code, offering.offer_price, alice, bob, say)),
            ("brokered", lambda: brokered(runtimes, alice, bob, say)),
            ("credit", lambda: credit(runtimes, settings, alice, bob, say)),
            ("delivery versus payment", lambda: dvp(runtimes, offering, alice, bob, say)),
        ]
        for name, flow in later:
            steps.doing(name)
            await flow()
            steps.done(name)
