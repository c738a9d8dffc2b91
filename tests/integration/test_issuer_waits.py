"""The issuer's folded statements (issue 8) where two requests meet: a certificate request that
waited for another one of the same name transfer sees the certificate that one issued (found by
review: a join read it in the snapshot from before the wait), and the partial and repeated paths
of a name transfer. Against the real PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import date
from decimal import Decimal

import asyncpg
import pytest

from agents.issuer import repo, reservations
from agents.issuer.domain import Offering
from agents.issuer.register import RegisterRecord, transfer
from schemas.certificates import IssuerSignature, ShareClass, SignedCertificate
from schemas.dvp import BookEntryLeg, CertificateDelivery, SecuritiesReserve
from tests import support
from tests.integration.test_issuer_rows import held_by

ISSUE = "KBT1"
SIGNED = SignedCertificate(
    content=b'{"certificate": "issued meanwhile"}',
    issuer_signature=IssuerSignature(certificate=b"der", signature=b"sig"),
)

Connections = tuple[asyncpg.Connection, asyncpg.Connection, asyncpg.Connection]


@pytest.fixture
async def connections(database: str) -> AsyncIterator[Connections]:
    """Ours (the handler under test), another handler's, and one to watch them with."""
    ours, other, watcher = [
        await asyncpg.connect(database, server_settings={"search_path": "issuer"}) for _ in range(3)
    ]
    offering = Offering(ISSUE, "Kabuto K.K.", date(2000, 1, 1), ShareClass.COMMON, Decimal(1000), 1000, 1000)
    await repo.open_offering(ours, offering)
    yield ours, other, watcher
    for connection in (ours, other, watcher):
        await connection.close()


async def name_transfer(
    connection: asyncpg.Connection, old: RegisterRecord, buyer: str, shares: int, matching_number: int
) -> tuple[int, RegisterRecord, RegisterRecord | None]:
    """What transfers.apply_transfers does to the rows of one transfer: draw (retiring ``old``),
    the remainder, the buyer and the history row."""
    drawn = await repo.draw_for_transfer(connection, old)
    assert drawn is not None
    change = transfer(
        old,
        shares=shares,
        buyer_user_id=buyer,
        buyer_name=buyer.title(),
        buyer_address="Osaka",
        buyer_cert_id=uuid.uuid4(),
        remainder_cert_id=uuid.uuid4(),
        new_number=f"{ISSUE}-{drawn.certificate_sequence:08d}9",
        today=date(2026, 2, 1),
        commit_remainder=("exchange", 41),
    )
    if change.remainder is not None:
        await repo.insert_record(connection, change.remainder)
    ntn = await repo.record_transfer(
        connection,
        buyer=change.buyer,
        seller_user_id=old.holder_user_id,
        old_cert_id=old.cert_id,
        remainder_cert_id=change.remainder.cert_id if change.remainder else None,
        matching_number=matching_number,
    )
    return ntn, change.buyer, change.remainder


async def waits_for_a_lock(watcher: asyncpg.Connection, connection: asyncpg.Connection) -> bool:
    pid = connection.get_server_pid()
    event = await watcher.fetchval("SELECT wait_event_type FROM pg_stat_activity WHERE pid = $1", pid)
    return bool(event == "Lock")


async def certificate_read_after_waiting(connections: Connections) -> SignedCertificate | None:
    """Another request for the same NTN holds the buyer's record, issues its certificate and
    commits while ours waits for the record; what ours then reads as the certificate issued."""
    ours, other, watcher = connections
    async with ours.transaction():
        old = held_by("alice")
        await repo.insert_record(ours, old)
        ntn, buyer, _ = await name_transfer(ours, old, "bob", 100, 7)
    writer = other.transaction()
    await writer.start()
    first = await repo.transferred(other, ntn)  # the first request: no certificate yet
    assert first is not None and first.signed is None
    await repo.complete_holder(other, buyer.cert_id, "Bob B.", "Osaka", "settlement_account", "sealed")
    await repo.record_signed(other, buyer.cert_id, SIGNED)
    async with ours.transaction():
        task = asyncio.create_task(repo.transferred(ours, ntn))
        await support.eventually(lambda: waits_for_a_lock(watcher, ours))
        await writer.commit()
        found = await task
        assert found is not None
        assert found.record.holder_name == "Bob B."  # the locked record is the committed one
        return found.signed


async def test_a_request_that_waited_for_the_record_reads_the_certificate_issued_meanwhile(
    connections: Connections,
) -> None:
    """repo.transferred locks the register row (FOR UPDATE OF r); a certificate joined in the
    same statement would keep that statement's snapshot, so a request that waited for another one
    of the same NTN would see none, complete the holder again and try to issue a second one."""
    signed = await certificate_read_after_waiting(connections)
    assert signed == SIGNED, f"read {signed!r} although the certificate was committed before the lock was granted"


async def test_a_partial_transfer_then_the_rest_keeps_one_valid_certid_per_number(connections: Connections) -> None:
    """A partial transfer leaves the remainder under the old number; the rest then moves whole,
    the buyer taking that number (retired first, in the draw)."""
    ours, _, _ = connections
    old = held_by("alice", shares=100)
    await repo.insert_record(ours, old)
    async with ours.transaction():
        first, buyer1, remainder = await name_transfer(ours, old, "bob", 60, 7)
    assert remainder is not None and remainder.certificate_number == old.certificate_number
    async with ours.transaction():
        second, buyer2, none = await name_transfer(ours, remainder, "carol", 40, 7)
    assert none is None and buyer2.certificate_number == old.certificate_number
    rows = await ours.fetch("SELECT cert_id, status, shares, holder_user_id FROM register ORDER BY registered_at")
    statuses = {r["cert_id"]: (r["status"], r["shares"], r["holder_user_id"]) for r in rows}
    assert statuses == {
        old.cert_id: ("retired", 100, "alice"),
        buyer1.cert_id: ("valid", 60, "bob"),
        remainder.cert_id: ("retired", 40, "alice"),
        buyer2.cert_id: ("valid", 40, "carol"),
    }
    history = await ours.fetch(
        """SELECT name_transfer_number, cert_id, shares, buyer_user_id, seller_user_id, old_cert_id,
                  remainder_cert_id, matching_number, kind FROM name_transfers ORDER BY name_transfer_number"""
    )
    assert [tuple(r) for r in history] == [
        (first, buyer1.cert_id, 60, "bob", "alice", old.cert_id, remainder.cert_id, 7, "exchange"),
        (second, buyer2.cert_id, 40, "carol", "alice", remainder.cert_id, None, 7, "exchange"),
    ]


async def test_a_repeated_commit_reads_the_committed_reservation_with_its_retired_record(
    connections: Connections,
) -> None:
    ours, _, _ = connections
    old = held_by("alice")
    await repo.insert_record(ours, old)
    leg = BookEntryLeg(agent="issuer", deliverer_account="a", receiver_account="b")
    request = SecuritiesReserve(
        instruction=7, attempt=1, issue_code=ISSUE, quantity=100, deliverer="alice", receiver="bob", leg=leg
    )
    async with ours.transaction():
        locked = await repo.record(ours, old.cert_id)
        assert locked is not None
        assert await reservations.reserve(ours, request, locked, "exchange", 41) is None
    row = await ours.fetchrow("SELECT previous_order, previous_by FROM reservations WHERE instruction = 7")
    assert (row["previous_order"], row["previous_by"]) == (old.committed_order, old.committed_by)
    async with ours.transaction():
        held = await reservations.reservation_with_record(ours, 7)
        assert held is not None and held[0].status == "reserved"
        ntn, buyer, _ = await name_transfer(ours, held[1], "bob", 100, 7)
        delivery = CertificateDelivery(name_transfer_number=ntn, new_cert_id=buyer.cert_id, register_version=1)
        await reservations.committed(ours, 7, delivery)
    again = await reservations.reservation_with_record(ours, 7)
    assert again is not None
    found, record = again
    assert (found.status, found.delivery) == ("committed", delivery)
    assert record == replace(old, status="retired", committed_by="exchange", committed_order=41)
