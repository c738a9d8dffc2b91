"""Locks and holdings deltas at custody, over the real broker and database (issue 11 §2;
seed 003 R-003-21..24, R-003-34, R-003-41, R-003-47)."""

from __future__ import annotations

from uuid import uuid4

from broker.pki import KeyStore, default_participant
from broker.settings import Settings
from schemas.custody import (
    HoldingsDeltasRequest,
    HoldingsStatementRequest,
    PlaceLock,
    PositionQuantity,
    ReleaseLock,
)
from schemas.identity import Role
from tests import support
from tests.custody_support import ask, balances, credit_position, open_account


def enrol_credit_holder(settings: Settings) -> str:
    """A second credit holder: a participant that may talk to custody but holds no lock."""
    user = f"credit-{uuid4().hex[:8]}"
    KeyStore(settings.key_dir).enrol(default_participant(user, Role.CREDIT))
    return user


def place(account: str = "alice-sk", client: str = "alice", **changes: object) -> PlaceLock:
    values: dict[str, object] = dict(
        lock_id=uuid4(),
        client=client,
        account=account,
        positions=(PositionQuantity(issue_code="KBT", quantity=300),),
        lock_holder="credit",
        reason="collateral",
        obligation_reference="card-0001",
    )
    values.update(changes)
    return PlaceLock.model_validate(values)


async def test_a_lock_moves_available_to_locked_and_is_idempotent_by_lock_id(settings: Settings) -> None:
    async with support.agents(settings, "custody") as rt:
        custody = rt["custody"]
        await open_account(custody, "alice-sk", "alice")
        await credit_position(custody, "alice-sk", "KBT", 500)
        request = place()
        placed = await ask(settings, custody, request)
        assert placed["type"] == "custody.lock.placed"
        assert placed["positions"] == [{"issue_code": "KBT", "quantity": 300}]
        assert await balances(custody, "alice-sk", "KBT") == {
            "available": 200,
            "locked": 300,
            "pending_delivery": 0,
            "pending_receipt": 0,
        }
        again = await ask(settings, custody, request)  # same lock id, same content: same answer
        assert again["type"] == "custody.lock.placed"
        assert await balances(custody, "alice-sk", "KBT") == {
            "available": 200,
            "locked": 300,
            "pending_delivery": 0,
            "pending_receipt": 0,
        }
        other = await ask(settings, custody, place(lock_id=request.lock_id, obligation_reference="card-0002"))
        assert (other["type"], other["reason"]) == ("custody.lock.refused", "lock_id_conflict")


async def test_a_lock_is_all_or_nothing_and_refusals_name_their_reason(settings: Settings) -> None:
    async with support.agents(settings, "custody") as rt:
        custody = rt["custody"]
        await open_account(custody, "alice-sk", "alice")
        await open_account(custody, "bob-sk", "bob")
        await credit_position(custody, "alice-sk", "KBT", 500)
        await credit_position(custody, "alice-sk", "ABC", 100)
        both = (PositionQuantity(issue_code="KBT", quantity=300), PositionQuantity(issue_code="ABC", quantity=101))
        cases = [
            (place(positions=both), "insufficient_available"),
            (place(account="nowhere"), "unknown_account"),
            (place(account="bob-sk"), "account_not_owned"),
            (place(positions=(PositionQuantity(issue_code="XYZ", quantity=1),)), "unknown_position"),
            (place(lock_holder="someone-else"), "not_lock_holder"),
        ]
        for request, reason in cases:
            answer = await ask(settings, custody, request)
            assert (answer["type"], answer["reason"]) == ("custody.lock.refused", reason), answer
        assert await balances(custody, "alice-sk", "KBT") == {
            "available": 500,
            "locked": 0,
            "pending_delivery": 0,
            "pending_receipt": 0,
        }
        assert (await balances(custody, "alice-sk", "ABC"))["available"] == 100
        # R-003-41: shares already locked are not locked again
        assert (await ask(settings, custody, place(positions=(PositionQuantity(issue_code="KBT", quantity=500),))))[
            "type"
        ] == "custody.lock.placed"
        again = await ask(settings, custody, place(positions=(PositionQuantity(issue_code="KBT", quantity=1),)))
        assert again["reason"] == "insufficient_available"


async def test_release_in_part_then_whole_only_by_the_lock_holder(settings: Settings) -> None:
    other_credit = enrol_credit_holder(settings)
    async with support.agents(settings, "custody") as rt:
        custody = rt["custody"]
        await open_account(custody, "alice-sk", "alice")
        await credit_position(custody, "alice-sk", "KBT", 500)
        request = place()
        await ask(settings, custody, request)
        stranger = await ask(settings, custody, ReleaseLock(lock_id=request.lock_id, release_id=uuid4()), other_credit)
        assert (stranger["type"], stranger["reason"]) == ("custody.lock.release_refused", "not_lock_holder")
        too_much = ReleaseLock(
            lock_id=request.lock_id, release_id=uuid4(), positions=(PositionQuantity(issue_code="KBT", quantity=301),)
        )
        assert (await ask(settings, custody, too_much))["reason"] == "quantity_exceeds_lock"
        part = ReleaseLock(
            lock_id=request.lock_id, release_id=uuid4(), positions=(PositionQuantity(issue_code="KBT", quantity=100),)
        )
        first = await ask(settings, custody, part)
        assert first["remaining"] == [{"issue_code": "KBT", "quantity": 200}] and first["status"] == "active"
        assert (await ask(settings, custody, part))["released"] == first["released"]  # same release id: once
        assert (await balances(custody, "alice-sk", "KBT"))["locked"] == 200
        whole = await ask(settings, custody, ReleaseLock(lock_id=request.lock_id, release_id=uuid4()))
        assert whole["released"] == [{"issue_code": "KBT", "quantity": 200}] and whole["status"] == "released"
        assert await balances(custody, "alice-sk", "KBT") == {
            "available": 500,
            "locked": 0,
            "pending_delivery": 0,
            "pending_receipt": 0,
        }
        after = await ask(settings, custody, ReleaseLock(lock_id=request.lock_id, release_id=uuid4()))
        assert after["reason"] == "lock_not_active"


async def test_deltas_from_a_cursor_have_no_gap_and_no_duplicate(settings: Settings) -> None:
    """S2060/S6020: only what changed since the cursor; following next_cursor sees each change once."""
    async with support.agents(settings, "custody") as rt:
        custody = rt["custody"]
        await open_account(custody, "alice-sk", "alice")
        await open_account(custody, "alice-tb", "alice", custodian="trustbank")
        await open_account(custody, "bob-sk", "bob")
        for _ in range(5):
            await credit_position(custody, "alice-sk", "KBT", 100)
            await credit_position(custody, "bob-sk", "KBT", 100)
        await credit_position(custody, "alice-tb", "ABC", 70)
        seen: list[int] = []
        cursor = 0
        while True:
            answer = await ask(settings, custody, HoldingsDeltasRequest(client="alice", cursor=cursor, limit=2))
            assert answer["type"] == "custody.holdings.deltas" and answer["cursor"] == cursor
            seen += [d["sequence"] for d in answer["deltas"]]
            cursor = answer["next_cursor"]
            if not answer["more"]:
                break
        assert seen == [1, 2, 3, 4, 5, 6]
        last = (await ask(settings, custody, HoldingsDeltasRequest(client="alice", cursor=0)))["deltas"][-1]
        assert (last["custodian"], last["issue_code"], last["balances"]["available"]) == ("trustbank", "ABC", 70)
        await ask(settings, custody, place(positions=(PositionQuantity(issue_code="KBT", quantity=50),)))
        since = await ask(settings, custody, HoldingsDeltasRequest(client="alice", cursor=cursor))
        assert [(d["sequence"], d["cause"], d["balances"]["locked"]) for d in since["deltas"]] == [(7, "lock", 50)]
        only_tb = await ask(settings, custody, HoldingsDeltasRequest(client="alice", cursor=0, custodian="trustbank"))
        assert [d["sequence"] for d in only_tb["deltas"]] == [6] and only_tb["next_cursor"] == 7
        statement = await ask(settings, custody, HoldingsStatementRequest(client="alice"))
        assert statement["cursor"] == 7
        assert [(p["account"], p["issue_code"], p["balances"]["available"]) for p in statement["positions"]] == [
            ("alice-sk", "KBT", 450),
            ("alice-tb", "ABC", 70),
        ]
        assert statement["positions"][0]["locks"][0]["quantity"] == 50
