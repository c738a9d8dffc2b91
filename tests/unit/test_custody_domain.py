"""Custody's pure decisions (issue 11 §2): movements between the four sub-balances, locks all
or nothing, releases and sales within the lock, and which certificate leaves the vault."""

from __future__ import annotations

from uuid import UUID, uuid4

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agents.custody import domain
from agents.custody.domain import Balances, HandOver, Lock, Merge, PositionRefusal, Refused, Split
from schemas.custody import LockRefusal, PositionQuantity


def lock_of(**quantities: tuple[int, int]) -> Lock:
    return Lock(uuid4(), "alice-sk", "alice", "credit", "collateral", "card-1", "digest", "active", quantities)


@pytest.mark.parametrize(
    ("position", "reason"),
    [
        (Balances(available=50, locked=100), PositionRefusal.QUANTITY_LOCKED),
        (Balances(available=50, pending_delivery=100), PositionRefusal.QUANTITY_PENDING),
        (Balances(available=50, pending_receipt=100), PositionRefusal.QUANTITY_PENDING),
        (Balances(available=50), PositionRefusal.INSUFFICIENT_AVAILABLE),
        (None, PositionRefusal.UNKNOWN_POSITION),
    ],
)
def test_only_available_shares_leave_and_the_refusal_names_what_is_in_the_way(
    position: Balances | None, reason: PositionRefusal
) -> None:
    with pytest.raises(Refused) as refused:
        domain.reserve_delivery(position, "KBT", 100)
    assert refused.value.reason is reason


@given(st.integers(0, 1000), st.integers(0, 1000), st.integers(0, 1000), st.integers(0, 1000), st.integers(1, 1000))
def test_every_movement_conserves_what_it_does_not_deliver_or_receive(
    available: int, locked: int, pending_delivery: int, pending_receipt: int, quantity: int
) -> None:
    p = Balances(available, locked, pending_delivery, pending_receipt)
    if available >= quantity:
        assert domain.reserve_delivery(p, "KBT", quantity).held == p.held
        assert domain.lock(p, "KBT", quantity).held == p.held
    if locked >= quantity:
        assert domain.unlock(p, quantity).held == p.held
        assert domain.sell_locked(p, quantity).held == p.held
    if pending_delivery >= quantity:
        assert domain.cancel_delivery(p, quantity).held == p.held
        assert domain.deliver(p, quantity).held == p.held - quantity
    if pending_receipt >= quantity:
        assert domain.receive(p, quantity).held == p.held + quantity
    assert domain.expect_receipt(p, quantity).held == p.held


def test_a_lock_is_all_or_nothing() -> None:
    positions = {"KBT": Balances(available=500), "ABC": Balances(available=100)}
    wanted = [PositionQuantity(issue_code="KBT", quantity=300), PositionQuantity(issue_code="ABC", quantity=101)]
    with pytest.raises(Refused) as refused:
        domain.plan_lock(positions, wanted)
    assert refused.value.reason is LockRefusal.INSUFFICIENT_AVAILABLE
    assert domain.plan_lock(positions, wanted[:1]) == {"KBT": Balances(available=200, locked=300)}


def test_releases_and_sales_stay_within_the_lock_and_only_its_holder_acts() -> None:
    lock = lock_of(KBT=(300, 200))
    assert domain.plan_release(lock, []) == {"KBT": 200}
    assert domain.plan_release(lock, [PositionQuantity(issue_code="KBT", quantity=50)]) == {"KBT": 50}
    with pytest.raises(Refused, match="quantity_exceeds_lock"):
        domain.plan_release(lock, [PositionQuantity(issue_code="KBT", quantity=201)])
    with pytest.raises(Refused, match="quantity_exceeds_lock"):
        domain.check_sale(lock, "KBT", 201)
    with pytest.raises(Refused, match="not_lock_holder"):
        domain.check_holder(lock, lock.lock_id, "someone-else")
    with pytest.raises(Refused, match="unknown_lock"):
        domain.check_holder(None, lock.lock_id, "credit")


def test_the_vault_hands_over_splits_or_merges_certificates() -> None:
    a, b, c = UUID(int=1), UUID(int=2), UUID(int=3)
    held = [(a, 100), (b, 300), (c, 500)]
    assert domain.plan_certificate(held, 300, exact=True) == HandOver(b)
    assert domain.plan_certificate(held, 200, exact=True) == Split(b, (200, 100))
    assert domain.plan_certificate(held, 200, exact=False) == HandOver(b)
    assert domain.plan_certificate(held, 700, exact=True) == Merge((b, c))
    assert domain.plan_certificate(held, 901, exact=False) is None
