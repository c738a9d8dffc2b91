"""The issuer's folded statements (issue 8): a reservation refused for a CertID another
instruction holds writes nothing; the reservation and its register record are read together;
a name transfer retires, registers and records in two statements, the buyer keeping the old
certificate number. Against the real PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import date
from decimal import Decimal

import asyncpg
import pytest

from agents.issuer import repo, reservations
from agents.issuer.domain import Offering
from agents.issuer.register import RegisterRecord
from schemas.certificates import ShareClass
from schemas.dvp import BookEntryLeg, SecuritiesReserve

ISSUE = "KBT1"


@pytest.fixture
async def issuer(database: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(database, server_settings={"search_path": "issuer"})
    offering = Offering(ISSUE, "Kabuto K.K.", date(2000, 1, 1), ShareClass.COMMON, Decimal(1000), 1000, 1000)
    await repo.open_offering(connection, offering)
    yield connection
    await connection.close()


def held_by(holder: str, number: str = "KBT1-00000001", shares: int = 100) -> RegisterRecord:
    return RegisterRecord(
        cert_id=uuid.uuid4(),
        issue_code=ISSUE,
        certificate_number=number,
        holder_user_id=holder,
        holder_name=holder.title(),
        holder_address="Tokyo",
        shares=shares,
        share_class=ShareClass.COMMON,
        acquired_on=date(2026, 1, 5),
        issuance_conditions={"lot": 100},
        committed_order=3,
        committed_by="exchange",
    )


def reserve(instruction: int, shares: int = 100) -> SecuritiesReserve:
    # The leg's kind does not matter to the rows: the request is kept as it came.
    leg = BookEntryLeg(agent="issuer", deliverer_account="alice-sk", receiver_account="bob-sk")
    return SecuritiesReserve(
        instruction=instruction,
        attempt=1,
        issue_code=ISSUE,
        quantity=shares,
        deliverer="alice",
        receiver="bob",
        leg=leg,
    )


async def committed_to(connection: asyncpg.Connection, record: RegisterRecord) -> tuple[str | None, int | None]:
    row = await connection.fetchrow(
        "SELECT committed_by, committed_order FROM register WHERE cert_id = $1", record.cert_id
    )
    return row["committed_by"], row["committed_order"]


async def test_a_reservation_commits_the_certid_and_remembers_what_it_was(issuer: asyncpg.Connection) -> None:
    record = held_by("alice")
    await repo.insert_record(issuer, record)
    async with issuer.transaction():
        locked = await repo.record(issuer, record.cert_id)
        assert locked == record
        assert await reservations.reserve(issuer, reserve(11), locked, "exchange", 41) is None
    assert await committed_to(issuer, record) == ("exchange", 41)
    held = await reservations.reservation_with_record(issuer, 11)
    assert held is not None
    found, kept = held
    assert (found.instruction, found.cert_id, found.status) == (11, record.cert_id, "reserved")
    assert kept == replace(record, committed_order=41)
    row = await issuer.fetchrow("SELECT previous_order, previous_by FROM reservations WHERE instruction = 11")
    assert (row["previous_order"], row["previous_by"]) == (3, "exchange")


async def test_a_certid_reserved_for_another_instruction_is_refused_and_nothing_is_written(
    issuer: asyncpg.Connection,
) -> None:
    record = held_by("alice")
    await repo.insert_record(issuer, record)
    assert await reservations.reserve(issuer, reserve(11), record, "exchange", 41) is None
    assert await reservations.reserve(issuer, reserve(12), record, "exchange", 42) == 11
    assert await committed_to(issuer, record) == ("exchange", 41)
    assert await issuer.fetchval("SELECT count(*) FROM reservations WHERE instruction = 12") == 0
    assert await reservations.reservation_with_record(issuer, 12) is None
    # The same instruction asking again (a new attempt) is not "another".
    assert await reservations.reserve(issuer, reserve(11), record, "exchange", 41) is None


async def test_a_released_reservation_no_longer_holds_the_certid(issuer: asyncpg.Connection) -> None:
    record = held_by("alice")
    await repo.insert_record(issuer, record)
    assert await reservations.reserve(issuer, reserve(11), record, "exchange", 41) is None
    assert await reservations.release(issuer, 11)
    assert await committed_to(issuer, record) == ("exchange", 3)  # as it was before the reservation
    assert await reservations.reserve(issuer, reserve(12), record, "exchange", 42) is None
    assert await committed_to(issuer, record) == ("exchange", 42)


async def test_a_whole_certificate_moves_to_the_buyer_under_its_number(issuer: asyncpg.Connection) -> None:
    old = held_by("alice")
    await repo.insert_record(issuer, old)
    async with issuer.transaction():
        drawn = await repo.draw_for_transfer(issuer, old)
        assert drawn is not None and drawn.register_version == 1
        buyer = replace(
            old, cert_id=uuid.uuid4(), holder_user_id="bob", holder_name="Bob", committed_order=None, committed_by=None
        )
        ntn = await repo.record_transfer(
            issuer,
            buyer=buyer,
            seller_user_id="alice",
            old_cert_id=old.cert_id,
            remainder_cert_id=None,
            matching_number=7,
        )
    statuses = dict(await issuer.fetch("SELECT cert_id, status FROM register"))
    assert statuses == {old.cert_id: "retired", buyer.cert_id: "valid"}
    found = await repo.transferred(issuer, ntn)
    assert found is not None
    assert (found.transfer.cert_id, found.transfer.buyer_user_id, found.transfer.seller_user_id) == (
        buyer.cert_id,
        "bob",
        "alice",
    )
    assert found.record == buyer
    assert found.signed is None
    row = await issuer.fetchrow("SELECT * FROM name_transfers WHERE name_transfer_number = $1", ntn)
    assert (row["old_cert_id"], row["shares"], row["matching_number"], row["kind"]) == (old.cert_id, 100, 7, "exchange")


async def test_completing_the_holder_returns_the_record_as_it_is_then(issuer: asyncpg.Connection) -> None:
    record = held_by("bob")
    await repo.insert_record(issuer, record)
    completed = await repo.complete_holder(issuer, record.cert_id, "Bob B.", "Osaka", "settlement_account", "sealed")
    assert completed == replace(
        record,
        holder_name="Bob B.",
        holder_address="Osaka",
        dividend_method="settlement_account",
        dividend_account="sealed",
    )
    assert await repo.record(issuer, record.cert_id) == completed


async def test_a_transfer_number_that_does_not_exist_reads_nothing(issuer: asyncpg.Connection) -> None:
    assert await repo.transferred(issuer, 999) is None


async def test_reservations_of_a_set_are_recorded_in_one_statement_and_one_held_elsewhere_is_refused_alone(
    issuer: asyncpg.Connection,
) -> None:
    """docs/netting.md step 1: the issuer's set-based reserve writes each reservation as ``reserve``
    does for one, and a CertID another instruction holds refuses that one only, writing nothing for it."""
    free, taken, other = held_by("alice"), held_by("carol", "KBT1-00000002"), held_by("dave", "KBT1-00000003")
    for record in (free, taken, other):
        await repo.insert_record(issuer, record)
    assert await reservations.reserve(issuer, reserve(10), taken, "exchange", 40) is None
    async with issuer.transaction():
        locked = await repo.records(issuer, [other.cert_id, free.cert_id, taken.cert_id, uuid.uuid4()])
        assert set(locked) == {free.cert_id, taken.cert_id, other.cert_id}  # an unknown CertID is simply absent
        refused = await reservations.reserve_all(
            issuer,
            [
                reservations.Reserving(reserve(11), locked[free.cert_id], "exchange", 41),
                reservations.Reserving(reserve(12), locked[taken.cert_id], "exchange", 42),
                reservations.Reserving(reserve(13, shares=50), locked[other.cert_id], "exchange", 43),
            ],
        )
    assert refused == {12: 10}
    assert await committed_to(issuer, free) == ("exchange", 41)
    assert await committed_to(issuer, taken) == ("exchange", 40)  # still the holder's
    assert await committed_to(issuer, other) == ("exchange", 43)
    rows = await issuer.fetch("SELECT instruction, cert_id, shares, previous_order FROM reservations ORDER BY 1")
    assert [(r["instruction"], r["cert_id"], r["shares"], r["previous_order"]) for r in rows] == [
        (10, taken.cert_id, 100, 3),
        (11, free.cert_id, 100, 3),
        (13, other.cert_id, 50, 3),
    ]
    found = await reservations.reservations(issuer, [13, 12, 11])
    assert sorted(found) == [11, 13] and found[13].request == reserve(13, shares=50)
    assert await reservations.reserve_all(issuer, []) == {}


async def test_transfers_of_a_set_draw_numbers_and_record_history_as_one_by_one_would(
    issuer: asyncpg.Connection,
) -> None:
    """docs/netting.md step 1: three transfers of one issue and one of another, drawn and recorded
    in one statement each, get the certificate sequences, register versions and name-transfer
    numbers they would get one after the other, in the set's order."""
    other = Offering("KBT2", "Other K.K.", date(2000, 1, 1), ShareClass.COMMON, Decimal(1000), 1000, 1000)
    await repo.open_offering(issuer, other)
    olds = [held_by(holder, f"KBT1-0000000{i}") for i, holder in enumerate(("alice", "carol", "dave"), start=1)]
    olds.insert(2, replace(held_by("erin"), issue_code="KBT2", certificate_number="KBT2-00000001"))
    for old in olds:
        await repo.insert_record(issuer, old)
    before = await issuer.fetchrow(
        "SELECT next_certificate_number, register_version FROM offerings WHERE issue_code = $1", ISSUE
    )
    async with issuer.transaction():
        draws = await repo.draw_for_transfers(issuer, olds)
        transfers = [
            repo.NameTransfer(
                replace(old, cert_id=uuid.uuid4(), holder_user_id=f"buyer{i}", committed_order=None, committed_by=None),
                old.holder_user_id,
                old.cert_id,
                None,
                100 + i,
            )
            for i, old in enumerate(olds)
        ]
        numbers = await repo.record_transfers(issuer, transfers)
    assert all(draw is not None for draw in draws)
    first, version = before["next_certificate_number"], before["register_version"]
    kbt1 = [draw for draw, old in zip(draws, olds, strict=True) if draw and old.issue_code == ISSUE]
    assert [(d.certificate_sequence, d.register_version) for d in kbt1] == [
        (first, version + 1),
        (first + 1, version + 2),
        (first + 2, version + 3),
    ]
    kbt2 = draws[2]
    assert kbt2 is not None and (kbt2.offering.issue_code, kbt2.register_version) == ("KBT2", 1)
    after = await issuer.fetchrow(
        "SELECT next_certificate_number, register_version FROM offerings WHERE issue_code = $1", ISSUE
    )
    assert (after["next_certificate_number"], after["register_version"]) == (first + 3, version + 3)
    assert numbers == sorted(numbers) and len(set(numbers)) == 4
    statuses = dict(await issuer.fetch("SELECT cert_id, status FROM register"))
    assert all(statuses[old.cert_id] == "retired" for old in olds)
    assert all(statuses[t.buyer.cert_id] == "valid" for t in transfers)
    for ntn, t in zip(numbers, transfers, strict=True):
        found = await repo.transferred(issuer, ntn)
        assert found is not None and found.record == t.buyer
        row = await issuer.fetchrow("SELECT * FROM name_transfers WHERE name_transfer_number = $1", ntn)
        assert (row["old_cert_id"], row["seller_user_id"], row["matching_number"]) == (
            t.old_cert_id,
            t.seller_user_id,
            t.matching_number,
        )
    assert await repo.draw_for_transfers(issuer, [replace(held_by("x"), issue_code="NONE")]) == [None]


async def test_releases_of_a_set_free_each_orders_remainders_and_count_them_as_one_by_one(
    issuer: asyncpg.Connection,
) -> None:
    """The exchange's certificate releases at trades' ends, in one statement (stop 28): each frees
    the certificates committed to its sell order by it for its seller, not one reserved for an
    instruction, not another seller's or another exchange's; the count per release in order."""
    mine = [
        replace(held_by("alice", f"KBT1-0000000{i}"), committed_order=order) for i, order in ((1, 5), (2, 5), (3, 6))
    ]
    reserved = replace(held_by("alice", "KBT1-00000004"), committed_order=6)
    others = [
        replace(held_by("bob", "KBT1-00000005"), committed_order=5),  # another seller, same order number
        replace(held_by("alice", "KBT1-00000006"), committed_order=5, committed_by="other-exchange"),
        replace(held_by("alice", "KBT1-00000007"), committed_order=9),  # an order not released
    ]
    for record in (*mine, reserved, *others):
        await repo.insert_record(issuer, record)
    assert await reservations.reserve(issuer, reserve(11), reserved, "exchange", 6) is None
    freed = await repo.release_all(
        issuer, [("exchange", 5, "alice"), ("exchange", 8, "alice"), ("exchange", 6, "alice")]
    )
    assert freed == [2, 0, 1]
    for record in mine:
        assert await committed_to(issuer, record) == (None, None)
    assert await committed_to(issuer, reserved) == ("exchange", 6)
    assert [await committed_to(issuer, r) for r in others] == [("exchange", 5), ("other-exchange", 5), ("exchange", 9)]
    assert await repo.release_all(issuer, []) == []
    assert await repo.release(issuer, "exchange", 9, "alice") == 1
