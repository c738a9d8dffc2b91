"""A full CertID list cut into parts (seed 001 S61–S63; docs/decisions.md, "CertID snapshots in
parts"): each part is the whole list for its range of CertIDs, the ranges leave no gap, and a
part that claims an entry outside its range, or a change with bounds, is refused."""

from __future__ import annotations

import itertools
import uuid

import pytest
from pydantic import ValidationError

from agents.issuer.domain import SNAPSHOT_PART, snapshot_part_size, snapshot_parts
from broker.envelope import MAX_MESSAGE_BYTES
from schemas.certificates import ShareClass
from schemas.issuance import CertIdEntry, CertIdListUpdated
from schemas.money import MAX_QUANTITY


def entries(count: int) -> list[CertIdEntry]:
    return [CertIdEntry(cert_id=uuid.uuid4(), user_id="alice", shares=100) for _ in range(count)]


def listed(part_after: uuid.UUID | None, part_through: uuid.UUID | None, valid: list[CertIdEntry]) -> CertIdListUpdated:
    return CertIdListUpdated(
        list_id=uuid.uuid4(),
        issue_code="KBT",
        share_class=ShareClass.COMMON,
        version=7,
        kind="snapshot",
        valid=tuple(valid),
        after=part_after,
        through=part_through,
    )


@pytest.mark.parametrize("count", [0, 1, 4, 5, 6, 11])
def test_the_parts_hold_every_entry_once_in_order_and_their_bounds_leave_no_gap(count: int) -> None:
    given = entries(count)
    parts = snapshot_parts(given, most=5)
    assert len(parts) == max(1, -(-count // 5))
    assert [e for p in parts for e in p.entries] == sorted(given, key=lambda e: e.cert_id)
    assert all(len(p.entries) <= 5 for p in parts)
    assert parts[0].after is None and parts[-1].through is None
    for before, part in itertools.pairwise(parts):
        assert part.after == before.through == before.entries[-1].cert_id
    for part in parts:  # each is a valid message: every entry within its own bounds
        message = listed(part.after, part.through, list(part.entries))
        assert all(message.covers(e.cert_id) for e in part.entries)


def test_a_small_list_is_one_part_without_bounds_as_before() -> None:
    given = entries(3)
    [part] = snapshot_parts(given, SNAPSHOT_PART)
    assert (part.after, part.through, len(part.entries)) == (None, None, 3)


def test_a_part_is_refused_when_an_entry_lies_outside_its_bounds_or_its_bounds_are_reversed() -> None:
    low, high = sorted(uuid.uuid4() for _ in range(2))
    outside = CertIdEntry(cert_id=low, user_id="alice", shares=1)
    with pytest.raises(ValidationError, match="outside the part's bounds"):
        listed(low, high, [outside])  # the lower bound is exclusive
    with pytest.raises(ValidationError, match="after must come before through"):
        listed(high, low, [])
    with pytest.raises(ValidationError, match="only a snapshot has bounds"):
        CertIdListUpdated(
            list_id=uuid.uuid4(), issue_code="KBT", share_class=ShareClass.COMMON, version=1, kind="change", after=low
        )
    inside = CertIdEntry(cert_id=high, user_id="alice", shares=1)
    assert listed(low, high, [inside]).covers(high)  # the upper bound is inclusive


@pytest.mark.parametrize("limit", [MAX_MESSAGE_BYTES, 300_000, 64 * 1024])
def test_a_part_of_the_largest_entries_fits_the_message_limit_it_was_cut_for(limit: int) -> None:
    """Found by review: a fixed 2,000 CertIDs a part (up to 300 KB) was refused again under a
    limit set lower. The part's size follows the limit: a part of the longest participant ids
    and the largest quantities leaves 16 KiB of the limit for the envelope and its signature."""
    most = snapshot_part_size(limit)
    longest = "a" + "z" * 62
    big = [CertIdEntry(cert_id=uuid.uuid4(), user_id=longest, shares=MAX_QUANTITY) for _ in range(most)]
    [part] = snapshot_parts(big, most)
    message = listed(part.after, part.through, list(part.entries))
    assert len(message.model_dump_json().encode()) + 16 * 1024 <= limit


def test_the_part_size_is_the_default_under_the_default_limit_and_never_nothing() -> None:
    assert snapshot_part_size(MAX_MESSAGE_BYTES) == SNAPSHOT_PART
    assert snapshot_part_size(1) == 1
