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
