"""Review of B101 (commit 942141e): a cover id and a brokerage hold id share one namespace.

A brokered order's hold id is the brokerage's order id, which the customer is told
(``brokerage.order_accepted``); a standing cover's id is the investor's own choice, forwarded by
the exchange unchanged. Settlement refuses a cover only when a *cover* of that id exists
(``repo.cover_view``), not a hold, so a standing cover may be granted under the id of the
customer's live brokered hold, on another of its accounts. The hold then has rows of two placers,
and since B101 the brokerage can neither release nor settle its own hold: every
``funds.hold_release`` and ``funds.brokered_settlement`` it sends is dead-lettered as
``sender_not_authorized``, for good (the cover's row stays, whatever its status). Before B101 the
same collision let the brokerage's messages release or consume the cover's row.

Either fix passes: refuse a cover whose id a hold already has, or act only on the sender's rows.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from agents.settlement import app as settlement_app
from broker.envelope import Sealed, seal
from broker.pki import KeyStore
from broker.runtime import AgentRuntime
from broker.settings import Settings
from schemas.brokerage import HoldLeg, LedgerLeg, PlaceHold, PostBrokeredSettlement, ReleaseHold
from schemas.catalogue import Message
from schemas.dvp import StandingCoverRequest
from schemas.identity import EXCHANGE_ID, SETTLEMENT_ID
from tests import support


def _release(hold_id: uuid.UUID) -> Message:
    return ReleaseHold(hold_id=hold_id)


def _settle(hold_id: uuid.UUID) -> Message:
    legs = (
        LedgerLeg(account="alice-cash", amount=Decimal(-100), means="transfer"),
        LedgerLeg(account="bob-cash", amount=Decimal(100), means="transfer"),
    )
    return PostBrokeredSettlement(order_id=hold_id, hold_id=hold_id, customer="alice", description="x", legs=legs)


def _by(keys: KeyStore, sender: str, message: Message) -> Sealed:
    return seal(keys.load_identity(sender), message, recipient=SETTLEMENT_ID, now=datetime.now(UTC))


async def _sent(settings: Settings, rt: AgentRuntime, sealed: Sealed) -> str:
    await support.publish_sealed(settings, sealed, routing_key=rt.id)
    return (await rt.outcomes.wait_for(sealed.envelope.message_id)).outcome.value


async def _held(rt: AgentRuntime, hold_id: uuid.UUID) -> dict[str, tuple[str, Decimal]]:
    rows = await support.rows(rt, "SELECT account_id, status, amount FROM holds WHERE hold_id = $1", hold_id)
    return {r["account_id"]: (r["status"], r["amount"]) for r in rows}


@pytest.mark.parametrize("message", [_release, _settle], ids=["release", "brokered_settlement"])
async def test_a_standing_cover_under_a_brokered_hold_id_does_not_lock_the_brokerage_out_of_its_hold(
    settings: Settings, keys: KeyStore, message: Callable[[uuid.UUID], Message]
) -> None:
    async with support.agents(settings, "settlement") as rt:
        s = rt["settlement"]
        await support.fund(s, "alice", Decimal(1000))
        await support.fund(s, "bob")
        await s.command("settlement", settlement_app.open_account("alice-savings", "alice"))
        await s.command("settlement", settlement_app.deposit("alice-savings", Decimal(500_000), "initial-savings"))

        # The brokerage's hold for alice's order; its id is the order id alice is told.
        order_id = uuid.uuid4()
        hold = PlaceHold(hold_id=order_id, owner="alice", legs=(HoldLeg(account="alice-cash", amount=Decimal(300)),))
        assert await _sent(settings, s, _by(keys, "brokerage", hold)) == "processed"

        # alice opens a standing cover under that id on her other account (the exchange forwards it).
        box = support.account_box(keys, "alice", "alice-savings")
        cover = StandingCoverRequest(cover_id=order_id, user_id="alice", account=box, amount=Decimal(250_000))
        assert await _sent(settings, s, _by(keys, EXCHANGE_ID, cover)) == "processed"
        assert not await support.rows(s, "SELECT 1 FROM covers WHERE cover_id = $1", order_id)  # duplicate_cover

        # The brokerage still ends its own hold (released, or failed and released: no mandate)...
        outcome = await _sent(settings, s, _by(keys, "brokerage", message(order_id)))
        held = await _held(s, order_id)
        assert (outcome, held["alice-cash"][0]) == ("processed", "released")
        # ...and whatever the cover holds is not touched by it.
        assert held.get("alice-savings", ("placed", Decimal(250_000))) == ("placed", Decimal(250_000))
