"""``kabuto demo``: run every agent in this process and walk through the flows that work,
printing a readable account of what happened."""

from __future__ import annotations

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


async def run(settings: Settings, say: Say = print) -> None:
    if len(settings.investors) < 2:
        raise SystemExit("the demo needs two investors: set KABUTO_INVESTORS=alice,bob")
    alice, bob = settings.investors[:2]
    async with started(list(AGENTS.values()), settings) as runtimes:
        say(f"Kabuto demo — {len(runtimes)} agents running: {', '.join(runtimes)}\n")
        offering = await issuance(runtimes, alice, bob, say)
        await trading(runtimes, offering, alice, bob, say)
        await lifecycle(runtimes, offering.issue_code, alice, bob, say)
        await custody(runtimes, offering.issue_code, offering.offer_price, alice, bob, say)
        await brokered(runtimes, alice, bob, say)
        await credit(runtimes, settings, alice, bob, say)
        await dvp(runtimes, offering, alice, bob, say)
