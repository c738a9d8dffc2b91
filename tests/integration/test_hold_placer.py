"""B101: a brokerage acts only on the holds it placed at settlement.

`funds.hold_release`, `funds.hold_revise` and `funds.brokered_settlement` name a hold by its id.
Settlement acted on whatever hold had that id, so a brokerage that knew a buyer's cover id could
free the cash a delivery against earmarked cash relies on (docs/dvp.md), and one brokerage could
release another's hold. Each is now a security rejection that changes nothing; the brokerage's
own holds work as before, and holds placed before their placer was recorded (migration 0081)
are left as they were.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from broker.envelope import Sealed, seal
from broker.errors import Reason
from broker.pki import KeyStore, default_participant
from broker.runtime import AgentRuntime
from broker.settings import Settings
from schemas.brokerage import HoldLeg, LedgerLeg, PlaceHold, PostBrokeredSettlement, ReleaseHold, ReviseHold
from schemas.catalogue import Message
from schemas.dvp import StandingCoverRequest
from schemas.identity import EXCHANGE_ID, SETTLEMENT_ID, Role
from tests import support
from tests.integration.refusal_kit import expect_dead_letter

OTHER_BROKERAGE = "brokerage-2"


def _release(hold_id: uuid.UUID) -> Message:
    return ReleaseHold(hold_id=hold_id)


def _revise(hold_id: uuid.UUID) -> Message:
    return ReviseHold(hold_id=hold_id, legs=(HoldLeg(account="alice-cash", amount=Decimal(1)),))


def _settle(hold_id: uuid.UUID) -> Message:
    legs = (
        LedgerLeg(account="alice-cash", amount=Decimal(-100), means="transfer"),
        LedgerLeg(account="bob-cash", amount=Decimal(100), means="transfer"),
    )
    return PostBrokeredSettlement(order_id=uuid.uuid4(), hold_id=hold_id, customer="alice", description="x", legs=legs)


def _by(keys: KeyStore, sender: str, message: Message) -> Sealed:
    return seal(keys.load_identity(sender), message, recipient=SETTLEMENT_ID, now=datetime.now(UTC))


async def _sent(settings: Settings, rt: AgentRuntime, sealed: Sealed) -> str:
    await support.publish_sealed(settings, sealed, routing_key=rt.id)
    return (await rt.outcomes.wait_for(sealed.envelope.message_id)).outcome.value


async def _held(rt: AgentRuntime, hold_id: uuid.UUID) -> list[tuple[str, str, Decimal]]:
    rows = await support.rows(
        rt, "SELECT account_id, status, amount FROM holds WHERE hold_id = $1 ORDER BY account_id", hold_id
    )
    return [(r["account_id"], r["status"], r["amount"]) for r in rows]


async def _cover(settings: Settings, rt: AgentRuntime, keys: KeyStore) -> uuid.UUID:
    """A standing cover of alice's, granted: a hold of settlement's own."""
    box = support.account_box(keys, "alice", "alice-cash")
    request = StandingCoverRequest(cover_id=uuid.uuid4(), user_id="alice", account=box, amount=Decimal(250_000))
    assert await _sent(settings, rt, _by(keys, EXCHANGE_ID, request)) == "processed"
    assert await _held(rt, request.cover_id) == [("alice-cash", "placed", Decimal(250_000))]
    return request.cover_id


@pytest.fixture
def other_brokerage(keys: KeyStore) -> str:
    keys.enrol(default_participant(OTHER_BROKERAGE, Role.BROKERAGE))
    return OTHER_BROKERAGE


async def _brokerage_hold(settings: Settings, rt: AgentRuntime, keys: KeyStore) -> uuid.UUID:
    hold_id = uuid.uuid4()
    hold = PlaceHold(hold_id=hold_id, owner="alice", legs=(HoldLeg(account="alice-cash", amount=Decimal(300)),))
    assert await _sent(settings, rt, _by(keys, "brokerage", hold)) == "processed"
    assert await _held(rt, hold_id) == [("alice-cash", "placed", Decimal(300))]
    return hold_id


@pytest.mark.parametrize("message", [_release, _revise, _settle], ids=["release", "revise", "brokered_settlement"])
async def test_B101_a_brokerage_naming_a_buyers_cover_is_refused_and_the_cover_stays_held(
    settings: Settings, keys: KeyStore, message: Callable[[uuid.UUID], Message]
) -> None:
    async with support.agents(settings, "settlement") as rt:
        await support.fund(rt["settlement"], "alice", Decimal(500_000))
        await support.fund(rt["settlement"], "bob")
        cover_id = await _cover(settings, rt["settlement"], keys)
        sealed = _by(keys, "brokerage", message(cover_id))
        await expect_dead_letter(settings, rt["settlement"], sealed.body, sealed.headers, Reason.SENDER_NOT_AUTHORIZED)
        assert await _held(rt["settlement"], cover_id) == [("alice-cash", "placed", Decimal(250_000))]


@pytest.mark.parametrize("message", [_release, _revise, _settle], ids=["release", "revise", "brokered_settlement"])
async def test_B101_a_brokerage_naming_another_brokerages_hold_is_refused(
    settings: Settings, keys: KeyStore, other_brokerage: str, message: Callable[[uuid.UUID], Message]
) -> None:
    async with support.agents(settings, "settlement") as rt:
        await support.fund(rt["settlement"], "alice", Decimal(1000))
        await support.fund(rt["settlement"], "bob")
        hold_id = await _brokerage_hold(settings, rt["settlement"], keys)
        sealed = _by(keys, other_brokerage, message(hold_id))
        await expect_dead_letter(settings, rt["settlement"], sealed.body, sealed.headers, Reason.SENDER_NOT_AUTHORIZED)
        assert await _held(rt["settlement"], hold_id) == [("alice-cash", "placed", Decimal(300))]


async def test_a_brokerage_releases_and_revises_its_own_hold(settings: Settings, keys: KeyStore) -> None:
    async with support.agents(settings, "settlement") as rt:
        await support.fund(rt["settlement"], "alice", Decimal(1000))
        hold_id = await _brokerage_hold(settings, rt["settlement"], keys)
        assert await _sent(settings, rt["settlement"], _by(keys, "brokerage", _revise(hold_id))) == "processed"
        assert await _held(rt["settlement"], hold_id) == [("alice-cash", "placed", Decimal(1))]
        assert await _sent(settings, rt["settlement"], _by(keys, "brokerage", _release(hold_id))) == "processed"
        assert await _held(rt["settlement"], hold_id) == [("alice-cash", "released", Decimal(1))]


async def test_a_hold_placed_before_its_placer_was_recorded_is_released_by_a_brokerage_as_before(
    settings: Settings, keys: KeyStore, other_brokerage: str
) -> None:
    async with support.agents(settings, "settlement") as rt:
        await support.fund(rt["settlement"], "alice", Decimal(1000))
        hold_id = await _brokerage_hold(settings, rt["settlement"], keys)
        await support.rows(rt["settlement"], "UPDATE holds SET placed_by = NULL WHERE hold_id = $1", hold_id)
        assert await _sent(settings, rt["settlement"], _by(keys, other_brokerage, _release(hold_id))) == "processed"
        assert await _held(rt["settlement"], hold_id) == [("alice-cash", "released", Decimal(300))]


async def test_releasing_an_unknown_hold_is_still_a_no_op(settings: Settings, keys: KeyStore) -> None:
    async with support.agents(settings, "settlement") as rt:
        assert await _sent(settings, rt["settlement"], _by(keys, "brokerage", _release(uuid.uuid4()))) == "processed"
