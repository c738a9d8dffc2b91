"""R-003-41 and R-003-60 with real concurrency: purchases by one purchaser whose inquiries are
in flight at the same time never pledge a position twice nor grant more than the securities
support, and a position locked at custody cannot leave it."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime

from agents.merchant.client import MerchantTerminal
from broker.envelope import seal
from broker.pki import KeyStore
from broker.settings import Settings
from schemas.dvp import BookEntryLeg, SecuritiesReserve
from tests import credit_support as cs
from tests import support


async def test_concurrent_purchases_never_double_lock_nor_over_grant_r_003_60(settings: Settings) -> None:
    async with support.agents(settings, *cs.AGENTS) as rt, MerchantTerminal.connect(settings, "shop") as shop:
        credit = rt["credit"]
        await cs.seed_003_worked_example(rt)
        # Each shortfall is 1,500,000: A (6,000,000) covers one, B (2,000,000) another; the third
        # finds nothing unpledged. All three inquiries are in flight before any is valued.
        prices = {"p1": 1_550_000, "p2": 1_500_000, "p3": 1_500_000}
        await asyncio.gather(*(shop.request_purchase(pid, cs.CARD, amount) for pid, amount in prices.items()))
        answers = {pid: await shop.answer(pid) for pid in prices}
        approved = [a for a in answers.values() if a.approved]
        refused = [a for a in answers.values() if not a.approved]
        assert len(approved) == 2 and len(refused) == 1
        assert (refused[0].detail or "").startswith("no_holdings")  # everything is pledged already
        locks = await cs.collateral(credit)
        assert Counter(c["issue_code"] for c in locks) == {cs.ISSUE_A: 1, cs.ISSUE_B: 1}  # never twice
        assert all(c["status"] == "placed" for c in locks)
        for ob in await support.rows(credit, "SELECT * FROM obligations WHERE status = 'approved'"):
            secured_by = sum(c["credit_value"] for c in locks if c["obligation_id"] == ob["obligation_id"])
            assert secured_by >= ob["shortfall"]  # each grant is covered by its own collateral
        assert await cs.custody_positions(rt["custody"]) == {cs.ISSUE_A: (0, 6_000), cs.ISSUE_B: (0, 2_000)}


async def test_a_locked_position_cannot_be_delivered_at_custody(settings: Settings) -> None:
    """Design flow 5: once locked as collateral, custody refuses to deliver the shares."""
    async with support.agents(settings, *cs.AGENTS) as rt, MerchantTerminal.connect(settings, "shop") as shop:
        custody = rt["custody"]
        await cs.seed_003_worked_example(rt)
        await shop.request_purchase("tv", cs.CARD, 200_000)
        assert (await shop.answer("tv")).approved
        await custody.command("custody", cs.deposit_shares("bob-sk", "bob", cs.ISSUE_B, 1))
        reserve = SecuritiesReserve(
            instruction=1,
            attempt=1,
            issue_code=cs.ISSUE_A,
            quantity=1,
            deliverer="alice",
            receiver="bob",
            leg=BookEntryLeg(agent="custody", deliverer_account="alice-sk", receiver_account="bob-sk"),
        )
        identity = KeyStore(settings.key_dir).load_identity("settlement")
        sealed = seal(identity, reserve, recipient="custody", now=datetime.now(UTC))
        await support.publish_sealed(settings, sealed)
        await custody.outcomes.wait_for(sealed.envelope.message_id)
        answers = await support.rows(
            custody, "SELECT message_type, body FROM outbox_messages WHERE message_type LIKE 'securities.%'"
        )
        assert [a["message_type"] for a in answers] == ["securities.reservation_refused"]
        assert b"lack_of_securities" in answers[0]["body"]
        assert await cs.custody_positions(custody) == {cs.ISSUE_A: (0, 6_000), cs.ISSUE_B: (2_000, 0)}
