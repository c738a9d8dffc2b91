"""The issuer's reissue rules (seed 001 Phase 4, P4.4–P4.5, R-001-55/56, E20) and the shape of
reissue request 46, with no services: what a lost certificate, a split and a merge become in
the register, and which requests are refused before anything changes."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import date
from typing import Any
from uuid import UUID

import pydantic
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agents.issuer.register import RegisterRecord
from agents.issuer.reissue import MAX_SPLIT_PARTS, Refused, check_holdings, plan
from schemas.certificates import ShareClass
from schemas.lifecycle import LifecycleRefusal, ReissueKind, ReissueRequest


def record(shares: int = 1000, number: str = "KBT-00000001", **changes: Any) -> RegisterRecord:
    values: dict[str, Any] = dict(
        cert_id=uuid.uuid4(),
        issue_code="KBT",
        certificate_number=number,
        holder_user_id="alice",
        holder_name="Alice",
        holder_address="1-1 Kabuto-cho, Tokyo",
        shares=shares,
        share_class=ShareClass.COMMON,
        acquired_on=date(2024, 4, 1),
        issuance_conditions={},
    )
    values.update(changes)
    return RegisterRecord(**values)


def numbers(first: int = 100) -> Callable[[], str]:
    """Fresh certificate numbers, as the issuer draws them from the offering."""
    sequence = itertools.count(first)
    return lambda: f"KBT-{next(sequence):08d}"


def request(kind: ReissueKind, *records: RegisterRecord, split_into: tuple[int, ...] = ()) -> ReissueRequest:
    return ReissueRequest(user_id="alice", kind=kind, cert_ids=tuple(r.cert_id for r in records), split_into=split_into)


def refusal(kind: ReissueKind, *records: RegisterRecord, split_into: tuple[int, ...] = ()) -> LifecycleRefusal:
    with pytest.raises(Refused) as refused:
        plan(request(kind, *records, split_into=split_into), records, numbers())
    return refused.value.reason


# --- lost -------------------------------------------------------------------------------


def test_a_lost_certificate_keeps_its_number_and_shares_under_a_new_certid() -> None:
    old = record()
    (new,) = plan(request(ReissueKind.LOST, old), [old], numbers())
    assert new.cert_id != old.cert_id  # R-001-09: a new CertID on reissue, so the lost copy is dead
    assert new == replace(old, cert_id=new.cert_id)


# --- split ------------------------------------------------------------------------------


def test_a_split_keeps_the_number_on_the_first_part_and_gives_the_others_fresh_ones() -> None:
    old = record(1000)
    new = plan(request(ReissueKind.SPLIT, old, split_into=(600, 300, 100)), [old], numbers())
    assert [r.shares for r in new] == [600, 300, 100]
    assert new[0].certificate_number == old.certificate_number
    fresh = {r.certificate_number for r in new[1:]}
    assert len(fresh) == 2 and old.certificate_number not in fresh
    assert len({r.cert_id for r in new} | {old.cert_id}) == 4
    assert all(r.holder_user_id == "alice" and r.acquired_on == old.acquired_on for r in new)


@pytest.mark.parametrize("parts", [(600, 300), (600, 500), (999, 999)])
def test_a_split_that_does_not_conserve_shares_is_refused(parts: tuple[int, ...]) -> None:
    assert refusal(ReissueKind.SPLIT, record(1000), split_into=parts) is LifecycleRefusal.SHARES_NOT_CONSERVED


def test_a_split_into_more_certificates_than_one_answer_carries_is_refused() -> None:
    """B97: at most MAX_SPLIT_PARTS (as many as a merge may name); one more is a bad request."""
    old = record(MAX_SPLIT_PARTS)
    most = (1,) * MAX_SPLIT_PARTS
    assert len(plan(request(ReissueKind.SPLIT, old, split_into=most), [old], numbers())) == MAX_SPLIT_PARTS
    too_many = (1,) * (MAX_SPLIT_PARTS + 1)
    assert refusal(ReissueKind.SPLIT, record(MAX_SPLIT_PARTS + 1), split_into=too_many) is LifecycleRefusal.BAD_REQUEST


# --- merge ------------------------------------------------------------------------------


def test_a_merge_gets_a_new_number_sums_the_shares_and_keeps_the_earliest_acquisition() -> None:
    older = record(300, "KBT-00000001", acquired_on=date(2023, 1, 5))
    newer = record(200, "KBT-00000002", acquired_on=date(2024, 6, 1))
    (merged,) = plan(request(ReissueKind.MERGE, newer, older), [newer, older], numbers(7))
    assert merged.shares == 500
    assert merged.certificate_number == "KBT-00000007"
    assert merged.acquired_on == date(2023, 1, 5)
    assert merged.cert_id not in (older.cert_id, newer.cert_id)


@pytest.mark.parametrize(
    "other",
    [
        {"issue_code": "KBU", "certificate_number": "KBU-00000001"},
        {"share_class": ShareClass.PREFERRED, "certificate_number": "KBT-00000002"},
    ],
)
def test_a_merge_of_different_issues_or_classes_is_refused(other: dict[str, Any]) -> None:
    assert refusal(ReissueKind.MERGE, record(300), record(200, **other)) is LifecycleRefusal.MIXED_ISSUES


# --- what may be reissued at all (P4.4) ---------------------------------------------------


@pytest.mark.parametrize(
    ("found", "reason"),
    [
        (None, LifecycleRefusal.NOT_REGISTERED),
        (record(status="retired"), LifecycleRefusal.NOT_REGISTERED),
        (record(holder_user_id="bob"), LifecycleRefusal.NOT_HOLDER),
        (record(committed_order=7, committed_by="exchange"), LifecycleRefusal.COMMITTED),
    ],
    ids=["unknown", "retired", "someone_elses", "committed_to_an_order"],
)
def test_only_valid_free_certificates_of_the_requester_are_reissued(
    found: RegisterRecord | None, reason: LifecycleRefusal
) -> None:
    good = record()
    cert_ids = [good.cert_id, found.cert_id if found else uuid.uuid4()]
    with pytest.raises(Refused) as refused:
        check_holdings("alice", cert_ids, [good, found])
    assert refused.value.reason is reason


def test_valid_free_certificates_of_the_requester_pass() -> None:
    mine = [record(), record(number="KBT-00000002")]
    check_holdings("alice", [r.cert_id for r in mine], mine)


# --- a split then a merge of all its parts gives the shares back ----------------------------


@st.composite
def split_of(draw: st.DrawFn) -> tuple[int, tuple[int, ...]]:
    shares = draw(st.integers(min_value=2, max_value=10**9))
    cuts = draw(st.sets(st.integers(min_value=1, max_value=shares - 1), min_size=1, max_size=12))
    bounds = [0, *sorted(cuts), shares]
    return shares, tuple(b - a for a, b in itertools.pairwise(bounds))


@given(split_of())
def test_any_valid_split_then_merge_of_all_parts_returns_the_original_share_count(
    split: tuple[int, tuple[int, ...]],
) -> None:
    shares, parts = split
    old = record(shares)
    next_number = numbers()
    pieces = plan(request(ReissueKind.SPLIT, old, split_into=parts), [old], next_number)
    check_holdings("alice", [p.cert_id for p in pieces], pieces)
    assert len({p.certificate_number for p in pieces}) == len(parts)
    (merged,) = plan(request(ReissueKind.MERGE, *pieces), pieces, next_number)
    assert merged.shares == shares
    assert merged.acquired_on == old.acquired_on


# --- the shape of request 46 ----------------------------------------------------------------

A, B = uuid.uuid4(), uuid.uuid4()


@pytest.mark.parametrize(
    ("kind", "cert_ids", "split_into"),
    [
        (ReissueKind.LOST, (A, B), ()),
        (ReissueKind.SPLIT, (A,), (1000,)),
        (ReissueKind.SPLIT, (A, B), (500, 500)),
        (ReissueKind.MERGE, (A,), ()),
        (ReissueKind.MERGE, (A, A), ()),
        (ReissueKind.MERGE, (A, B), (500, 500)),
        (ReissueKind.LOST, (A,), (1000,)),
        (ReissueKind.SPLIT, (A,), (1000, 0)),
        (ReissueKind.SPLIT, (A,), (1100, -100)),
        (ReissueKind.LOST, (), ()),
    ],
    ids=[
        "lost_two_certids",
        "split_one_part",
        "split_two_certids",
        "merge_one_certid",
        "duplicate_certids",
        "split_parts_for_a_merge",
        "split_parts_for_a_loss",
        "zero_part",
        "negative_part",
        "no_certid",
    ],
)
def test_a_malformed_reissue_request_does_not_validate(
    kind: ReissueKind, cert_ids: tuple[UUID, ...], split_into: tuple[int, ...]
) -> None:
    with pytest.raises(pydantic.ValidationError):
        ReissueRequest(user_id="alice", kind=kind, cert_ids=cert_ids, split_into=split_into)


@pytest.mark.parametrize(
    ("kind", "cert_ids", "split_into"),
    [(ReissueKind.LOST, (A,), ()), (ReissueKind.SPLIT, (A,), (1, 999)), (ReissueKind.MERGE, (A, B), ())],
)
def test_well_formed_reissue_requests_validate(
    kind: ReissueKind, cert_ids: tuple[UUID, ...], split_into: tuple[int, ...]
) -> None:
    assert ReissueRequest(user_id="alice", kind=kind, cert_ids=cert_ids, split_into=split_into).kind is kind
