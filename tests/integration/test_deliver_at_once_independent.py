"""Delivery against earmarked cash (docs/dvp.md, "Delivery against earmarked cash"; commit
5cae84a), tried from the outside, against the real RabbitMQ and PostgreSQL: ``securities.reserve``
with ``deliver`` at the issuer and at custody, ``securities.committed`` for an attempt still
``reserving`` at settlement, and whole trades through the real agents.

What must hold whatever arrives, and however often: nothing moves twice; a refusal locks and moves
nothing; the cash posted is the earmark's, once; an answer to a stale attempt posts nothing; a
cancel asked while the delivery is out is too late once the leg delivered; cash and shares are
conserved; and a reserve that says ``deliver`` is answered, since the buyer's earmark stays bound
to the attempt until it is.

The issuer and settlement are opened but not run in the tests of one agent (the requests are taken
off their queues and settled by the test, as tests/integration/test_issuer_sets.py and
test_set_based.py do); custody and the end-to-end tests run the real agents.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from agents.settlement import app as ledger
from agents.settlement import instruction_desk
from broker.consumer import Outcome
from broker.envelope import Sealed, seal
from broker.pki import KeyStore
from broker.runtime import AgentRuntime
from broker.settings import Settings
from schemas.custody import PlaceLock, PositionQuantity
from schemas.dvp import (
    BookEntryLeg,
    CancelInstruction,
    SecuritiesCommit,
    SecuritiesReserve,
    SettlementInstruction,
)
from schemas.identity import EXCHANGE_ID, SETTLEMENT_ID
from tests import support
from tests.custody_support import answers_to, ask, balances, credit_position, open_account, send_as
from tests.integration import set_kit
from tests.integration import test_issuer_sets as iss
from tests.integration import test_set_based as sb
from tests.integration.set_kit import outcomes
from tests.integration.test_custody_delivery import reserve, sub
from tests.integration.test_trading_paths import buy, issue, market, place, sell, traded

# -- reading what an agent answered ----------------------------------------------------------------


async def said(connection: Any, sealed: Sequence[Sealed]) -> list[tuple[int, str, str | None, dict[str, Any]]]:
    """Every message ``sealed`` caused, raw: (place of its cause, type, recipient, payload)."""
    return [(c[0], c[1], c[3], c[4]) for c in await set_kit.caused(connection, sealed, lambda payload: payload)]


def of(found: Sequence[tuple[int, str, str | None, dict[str, Any]]], place: int) -> list[tuple[str, dict[str, Any]]]:
    return [(t, p) for i, t, _, p in found if i == place]


# -- the issuer ----------------------------------------------------------------------------------


async def issuer_rows(settings: Settings, issue_code: str) -> dict[str, Any]:
    async with iss.admin(settings) as c:
        register = [
            dict(r)
            for r in await c.fetch(
                "SELECT cert_id, holder_user_id, shares, status, committed_by, committed_order FROM register "
                "WHERE issue_code = $1 ORDER BY holder_user_id, shares, cert_id",
                issue_code,
            )
        ]
        transfers = [
            dict(r)
            for r in await c.fetch(
                "SELECT matching_number, name_transfer_number, cert_id, remainder_cert_id FROM name_transfers "
                "WHERE issue_code = $1 ORDER BY name_transfer_number",
                issue_code,
            )
        ]
        reservations = {
            r["instruction"]: dict(r)
            for r in await c.fetch("SELECT instruction, attempt, cert_id, shares, status FROM reservations")
        }
    return {"register": register, "transfers": transfers, "reservations": reservations}


def valid(rows: dict[str, Any]) -> list[tuple[str, int]]:
    return sorted((r["holder_user_id"], r["shares"]) for r in rows["register"] if r["status"] == "valid")


async def test_issuer_a_deliver_asked_again_for_the_same_attempt_transfers_once_and_answers_the_same(
    settings: Settings, keys: KeyStore
) -> None:
    """A reserve with ``deliver`` asked three times for one attempt (alone, again alone, then again
    in a set with another instruction's delivery): one name transfer and one remainder; every
    answer is ``securities.committed`` with the first answer's delivery, word for word; the
    remainder is pushed to the seller once; the other instruction of the set is delivered."""
    async with iss.issuer(settings, []) as rt:
        await iss.open_issues(settings, "DUPA")
        held = await iss.holding(settings, keys, "DUPA", "alice", 500)
        other = await iss.holding(settings, keys, "DUPA", "carol", 100)
        request = iss.reserve(1, held, iss.leg(keys, held, 1, 10, order_open=True), 200, deliver=True)
        first = [iss.sealed_by_settlement(keys, request)]
        again = [iss.sealed_by_settlement(keys, request)]
        in_set = [
            iss.sealed_by_settlement(keys, iss.reserve(2, other, iss.leg(keys, other, 2, 20), 100, deliver=True)),
            iss.sealed_by_settlement(keys, request),
        ]
        assert outcomes(await iss.one_at_a_time(settings, rt, first)) == ["processed"]
        assert outcomes(await iss.one_at_a_time(settings, rt, again)) == ["processed"]
        assert outcomes(await iss.as_one_batch(settings, rt, in_set)) == ["processed"] * 2
        rows = await issuer_rows(settings, "DUPA")
        async with iss.admin(settings) as c:
            answered = await said(c, [*first, *again, *in_set])

    firsts, agains, set_other, set_again = (of(answered, i) for i in range(4))
    assert sorted(t for t, _ in firsts) == ["certificate.remainder", "securities.committed"]
    committed = next(p for t, p in firsts if t == "securities.committed")
    assert (committed["instruction"], committed["attempt"], committed["quantity"]) == (1, 1, 200)
    assert agains == [("securities.committed", committed)]  # no second remainder, the same delivery
    assert set_again == [("securities.committed", committed)]
    assert [t for t, _ in set_other] == ["securities.committed"]
    assert [t["matching_number"] for t in rows["transfers"]] == [1, 2]
    assert valid(rows) == [("alice", 300), ("bob", 100), ("bob", 200)]
    assert (rows["reservations"][1]["status"], rows["reservations"][1]["attempt"]) == ("committed", 1)


async def test_issuer_a_deliver_for_a_later_attempt_of_a_wholly_delivered_instruction_moves_nothing(
    settings: Settings, keys: KeyStore
) -> None:
    """Instruction 1 delivered whole at attempt 1; a reserve with ``deliver`` for attempt 2 of it
    (which no attempt could ever deliver: the certificate is retired and there is no remainder) is
    refused as final, and no certificate moves a second time."""
    async with iss.issuer(settings, []) as rt:
        await iss.open_issues(settings, "LATE")
        held = await iss.holding(settings, keys, "LATE", "alice", 300)
        the_leg = iss.leg(keys, held, 1, 10)
        first = [iss.sealed_by_settlement(keys, iss.reserve(1, held, the_leg, 300, deliver=True))]
        assert outcomes(await iss.one_at_a_time(settings, rt, first)) == ["processed"]
        before = await issuer_rows(settings, "LATE")
        later = [iss.sealed_by_settlement(keys, iss.reserve(1, held, the_leg, 300, attempt=2, deliver=True))]
        assert outcomes(await iss.one_at_a_time(settings, rt, later)) == ["processed"]
        after = await issuer_rows(settings, "LATE")
        async with iss.admin(settings) as c:
            answered = await said(c, [*first, *later])
    assert [t for t, _ in of(answered, 0)] == ["securities.committed"]
    [(kind, refusal)] = of(answered, 1)
    assert kind == "securities.reservation_refused"
    assert (refusal["attempt"], refusal["reason"], refusal["retryable"]) == (2, "lack_of_securities", False)
    assert after["register"] == before["register"]
    assert after["transfers"] == before["transfers"] and len(after["transfers"]) == 1
    assert valid(after) == [("bob", 300)]


async def test_issuer_a_refused_deliver_locks_nothing_so_the_certificate_delivers_for_the_next_trade(
    settings: Settings, keys: KeyStore
) -> None:
    """Deliver asked for a certificate whose issuer signature fails (final), a retired CertID
    (final) and a CertID reserved for another instruction (worth recycling): each refused with its
    reason and retryable flag, no reservation written, no register row changed, no transfer. Then
    the tampered certificate's CertID, presented genuinely for another trade, delivers: the refusal
    locked nothing."""
    async with iss.issuer(settings, []) as rt:
        await iss.open_issues(settings, "BADD")
        forged = await iss.holding(settings, keys, "BADD", "alice", 500)
        retired = await iss.holding(settings, keys, "BADD", "bob", 500)
        taken = await iss.holding(settings, keys, "BADD", "carol", 500)
        # carol's CertID held reserved (two-phase) for instruction 50 of the same sell order
        holder = [iss.sealed_by_settlement(keys, iss.reserve(50, taken, iss.leg(keys, taken, 50, 13), 100))]
        assert outcomes(await iss.one_at_a_time(settings, rt, holder)) == ["processed"]
        async with iss.admin(settings) as c:
            await c.execute(
                "UPDATE register SET status = 'retired', retired_at = now() WHERE cert_id = $1", retired.record.cert_id
            )
        before = await issuer_rows(settings, "BADD")
        requests = [
            iss.reserve(1, forged, iss.leg(keys, forged, 1, 11, signed=iss.tampered(forged.signed)), 500, deliver=True),
            iss.reserve(2, retired, iss.leg(keys, retired, 2, 12, buyer="carol"), 500, buyer="carol", deliver=True),
            iss.reserve(3, taken, iss.leg(keys, taken, 3, 13), 200, deliver=True),
        ]
        sealed = [iss.sealed_by_settlement(keys, r) for r in requests]
        assert outcomes(await iss.as_one_batch(settings, rt, sealed)) == ["processed"] * 3
        after = await issuer_rows(settings, "BADD")
        genuine = [
            iss.sealed_by_settlement(keys, iss.reserve(4, forged, iss.leg(keys, forged, 4, 14), 500, deliver=True))
        ]
        assert outcomes(await iss.one_at_a_time(settings, rt, genuine)) == ["processed"]
        last = await issuer_rows(settings, "BADD")
        async with iss.admin(settings) as c:
            answered = await said(c, [*sealed, *genuine])

    refused = {}
    for k in range(3):
        [(kind, payload)] = of(answered, k)
        assert kind == "securities.reservation_refused", (k, kind)
        refused[payload["instruction"]] = (payload["reason"], payload["retryable"], payload["detail"].split(":")[0])
    assert refused == {
        1: ("securities_invalid", False, "certificate_signature_invalid"),
        2: ("lack_of_securities", False, "not_registered"),
        3: ("lack_of_securities", True, "CertID is reserved for instruction 50"),
    }
    assert after == before  # nothing reserved, locked or transferred for any of the three
    assert sorted(after["reservations"]) == [50] and after["reservations"][50]["status"] == "reserved"
    [(kind, payload)] = of(answered, 3)
    assert (kind, payload["instruction"], payload["quantity"]) == ("securities.committed", 4, 500)
    assert [t["matching_number"] for t in last["transfers"]] == [4]
    assert valid(last) == [("bob", 500), ("carol", 500)]  # alice's 500 now bob's; the retired one gone


async def test_issuer_the_rest_of_a_partial_delivery_is_delivered_from_the_remainder_and_only_once(
    settings: Settings, keys: KeyStore
) -> None:
    """Attempt 1 delivers 200 of carol's 500 (her order still open); attempt 2, the rest, with
    ``deliver`` and the same leg (it names the original, now retired, CertID): 300 come from the
    remainder, which is retired in turn. Asked again, attempt 2 is answered the same; a stale
    attempt 1 asked again moves nothing. The issue's valid shares stay 500 throughout."""
    async with iss.issuer(settings, []) as rt:
        await iss.open_issues(settings, "REST")
        held = await iss.holding(settings, keys, "REST", "carol", 500)
        the_leg = iss.leg(keys, held, 7, 60, order_open=True)
        first = [iss.sealed_by_settlement(keys, iss.reserve(7, held, the_leg, 200, deliver=True))]
        assert outcomes(await iss.one_at_a_time(settings, rt, first)) == ["processed"]
        middle = await issuer_rows(settings, "REST")
        rest = iss.reserve(7, held, the_leg, 300, attempt=2, deliver=True)
        second = [iss.sealed_by_settlement(keys, rest)]
        assert outcomes(await iss.one_at_a_time(settings, rt, second)) == ["processed"]
        done = await issuer_rows(settings, "REST")
        repeats = [
            iss.sealed_by_settlement(keys, rest),
            iss.sealed_by_settlement(keys, iss.reserve(7, held, the_leg, 200, deliver=True)),
        ]
        assert outcomes(await iss.one_at_a_time(settings, rt, repeats)) == ["processed"] * 2
        final = await issuer_rows(settings, "REST")
        async with iss.admin(settings) as c:
            answered = await said(c, [*first, *second, *repeats])

    assert valid(middle) == [("bob", 200), ("carol", 300)]
    remainder = middle["transfers"][0]["remainder_cert_id"]
    assert remainder is not None
    [(_, committed)] = [(t, p) for t, p in of(answered, 1) if t == "securities.committed"]
    assert (committed["attempt"], committed["quantity"]) == (2, 300)
    assert committed["delivery"]["remainder"] is None  # the remainder went whole
    assert valid(done) == [("bob", 200), ("bob", 300)]
    statuses = {r["cert_id"]: r["status"] for r in done["register"]}
    assert (statuses[held.record.cert_id], statuses[remainder]) == ("retired", "retired")
    assert [(t["matching_number"], t["remainder_cert_id"]) for t in done["transfers"]] == [(7, remainder), (7, None)]
    # asked again: the same answer, nothing moves; the stale attempt 1: nothing moves either
    assert [(t, p) for t, p in of(answered, 2) if t == "securities.committed"] == [("securities.committed", committed)]
    assert all(t != "securities.committed" or p["attempt"] != 1 for t, p in of(answered, 3))
    assert final["register"] == done["register"] and final["transfers"] == done["transfers"]
    assert sum(r["shares"] for r in final["register"] if r["status"] == "valid") == 500


# -- custody --------------------------------------------------------------------------------------


def book_reserve(instruction: int, quantity: int, attempt: int = 1, deliver: bool = True) -> SecuritiesReserve:
    """alice's KBT at custody to bob, asked to deliver at once unless said otherwise."""
    return reserve(instruction, quantity, attempt, deliver)


async def moves(custody: AgentRuntime, instruction: int) -> list[str]:
    rows = await support.rows(
        custody,
        "SELECT cause FROM position_changes WHERE reference = $1 ORDER BY changed_at, client, sequence",
        f"instruction:{instruction}",
    )
    return sorted(r["cause"] for r in rows)


async def test_custody_a_deliver_against_a_position_locked_by_credit_is_refused_and_nothing_moves(
    settings: Settings,
) -> None:
    """400 of alice's 500 are locked by credit: a deliver of 200 is refused as
    ``lack_of_securities``, not worth recycling, 100 available; no reservation, no position change;
    a deliver of the 100 that are free goes through, and the locked 400 stay locked."""
    async with support.agents(settings, "custody") as rt:
        custody = rt["custody"]
        await open_account(custody, "alice-sk", "alice")
        await open_account(custody, "bob-sk", "bob")
        await credit_position(custody, "alice-sk", "KBT", 500)
        lock = PlaceLock(
            lock_id=uuid.uuid4(),
            client="alice",
            account="alice-sk",
            positions=(PositionQuantity(issue_code="KBT", quantity=400),),
            lock_holder="credit",
            reason="collateral",
            obligation_reference="card-0042",
        )
        assert (await ask(settings, custody, lock))["type"] == "custody.lock.placed"
        refused = await ask(settings, custody, book_reserve(21, 200), sender="settlement")
        assert refused["type"] == "securities.reservation_refused"
        assert (refused["attempt"], refused["reason"], refused["retryable"], refused["available_quantity"]) == (
            1,
            "lack_of_securities",
            False,
            100,
        )
        assert await balances(custody, "alice-sk", "KBT") == sub(100, locked=400)
        assert await balances(custody, "bob-sk", "KBT") == {}
        assert await support.rows(custody, "SELECT instruction FROM reservations") == []
        assert await moves(custody, 21) == []
        # a commit on the refused instruction moves nothing either
        message_id = await send_as(settings, "settlement", SecuritiesCommit(instruction=21, attempt=1))
        await custody.outcomes.wait_for(message_id)
        assert await answers_to(custody, message_id) == []
        assert await balances(custody, "alice-sk", "KBT") == sub(100, locked=400)
        free = await ask(settings, custody, book_reserve(22, 100), sender="settlement")
        assert (free["type"], free["quantity"]) == ("securities.committed", 100)
        assert await balances(custody, "alice-sk", "KBT") == sub(0, locked=400)
        assert await balances(custody, "bob-sk", "KBT") == sub(100)


async def test_custody_a_deliver_asked_again_or_after_a_two_phase_reserve_moves_the_position_once(
    settings: Settings,
) -> None:
    """Instruction 31 delivered at once, then asked again with ``deliver`` and committed: the same
    answer each time, four position changes in all. Instruction 32 reserved two-phase first, then
    asked with ``deliver`` for the same attempt: delivered once, answered committed; its commit
    after that changes nothing."""
    async with support.agents(settings, "custody") as rt:
        custody = rt["custody"]
        await open_account(custody, "alice-sk", "alice")
        await open_account(custody, "bob-sk", "bob")
        await credit_position(custody, "alice-sk", "KBT", 1000)
        first = await ask(settings, custody, book_reserve(31, 300), sender="settlement")
        assert (first["type"], first["attempt"], first["quantity"]) == ("securities.committed", 1, 300)
        assert await ask(settings, custody, book_reserve(31, 300), sender="settlement") == first
        commit = SecuritiesCommit(instruction=31, attempt=1)
        assert await ask(settings, custody, commit, sender="settlement") == first
        assert await balances(custody, "alice-sk", "KBT") == sub(700)
        assert await balances(custody, "bob-sk", "KBT") == sub(300)
        assert await moves(custody, 31) == ["delivered", "delivery_reserved", "receipt_expected", "received"]

        reserved = await ask(settings, custody, book_reserve(32, 200, deliver=False), sender="settlement")
        assert reserved["type"] == "securities.reserved"
        assert await balances(custody, "alice-sk", "KBT") == sub(500, pending_delivery=200)
        delivered = await ask(settings, custody, book_reserve(32, 200), sender="settlement")
        assert (delivered["type"], delivered["attempt"], delivered["quantity"]) == ("securities.committed", 1, 200)
        assert (
            await ask(settings, custody, SecuritiesCommit(instruction=32, attempt=1), sender="settlement") == delivered
        )
        assert await balances(custody, "alice-sk", "KBT") == sub(500)
        assert await balances(custody, "bob-sk", "KBT") == sub(500)
        assert await moves(custody, 32) == ["delivered", "delivery_reserved", "receipt_expected", "received"]


# -- settlement -----------------------------------------------------------------------------------


async def settlement_rows(settings: Settings, number: int) -> dict[str, Any]:
    async with sb.admin(settings) as c:
        instruction = dict(
            await c.fetchrow(
                "SELECT processing, settlement, reason, in_flight, settled_quantity, settled_amount, "
                "cancel_by_buyer, cancel_by_seller FROM dvp_instructions WHERE matching_number = $1",
                number,
            )
        )
        attempts = [
            dict(r)
            for r in await c.fetch(
                "SELECT attempt, status, entry_id, ended_at IS NOT NULL AS ended FROM dvp_attempts "
                "WHERE matching_number = $1 ORDER BY attempt",
                number,
            )
        ]
        holds = [
            dict(r)
            for r in await c.fetch(
                "SELECT a.attempt, h.amount, h.status, h.entry_id FROM holds h JOIN dvp_attempts a USING (hold_id) "
                "WHERE a.matching_number = $1 ORDER BY a.attempt",
                number,
            )
        ]
        entries = [
            dict(r)
            for r in await c.fetch(
                "SELECT e.entry_id, e.reference, p.account_id, p.amount FROM entries e "
                "JOIN postings p USING (entry_id) WHERE e.kind = 'trade' AND e.reference LIKE $1 "
                "ORDER BY e.entry_id, p.account_id",
                f"{number}/%",
            )
        ]
    return {"instruction": instruction, "attempts": attempts, "holds": holds, "entries": entries}


async def cash(rt: AgentRuntime, account: str) -> Decimal:
    rows = await support.rows(rt, "SELECT coalesce(sum(amount), 0) AS b FROM postings WHERE account_id = $1", account)
    return Decimal(rows[0]["b"])


async def test_settlement_a_delivery_at_once_posts_exactly_the_earmark_once_and_settles_with_the_notices(
    settings: Settings, keys: KeyStore
) -> None:
    """Instruction 1 of 200 shares, attempt 1 of 100 (partial) still ``reserving`` with 100,000
    earmarked on bob's account: ``securities.committed`` posts exactly 100,000 from bob to alice,
    consumes the hold with that entry, ends the attempt committed and leaves the instruction
    partially settled; the exchange and both parties hear the status, each party its notice for
    100,000, integrators the completion; no ``securities.commit`` goes to the leg."""
    async with sb.settlement(settings, []) as rt:
        await sb.seed(settings, 1, 0, partial=True)
        bob, alice = await cash(rt, "bob-cash"), await cash(rt, "alice-cash")
        sealed = [sb.committed(keys, 1, 0)]
        assert outcomes(await sb.one_at_a_time(settings, rt, sealed)) == ["processed"]
        rows = await settlement_rows(settings, 1)
        after = await cash(rt, "bob-cash"), await cash(rt, "alice-cash")
        async with sb.admin(settings) as c:
            emitted = await said(c, sealed)

    amount = Decimal(100_000)
    assert after == (bob - amount, alice + amount)
    [entry_id] = {e["entry_id"] for e in rows["entries"]}
    assert [(e["reference"], e["account_id"], e["amount"]) for e in rows["entries"]] == [
        ("1/1", "alice-cash", amount),
        ("1/1", "bob-cash", -amount),
    ]
    assert rows["holds"] == [{"attempt": 1, "amount": amount, "status": "consumed", "entry_id": entry_id}]
    assert rows["attempts"] == [{"attempt": 1, "status": "committed", "entry_id": entry_id, "ended": True}]
    i = rows["instruction"]
    assert (i["settlement"], i["in_flight"], i["settled_quantity"], i["settled_amount"]) == (
        "partially_settled",
        False,
        100,
        amount,
    )
    types = sorted((t, to) for _, t, to, _ in emitted)
    assert types == sorted(
        [
            ("settlement.instruction.status", EXCHANGE_ID),
            ("settlement.instruction.status", "alice"),
            ("settlement.instruction.status", "bob"),
            ("settlement.instruction.status_changed", None),
            ("settlement.notice", "alice"),
            ("settlement.notice", "bob"),
            ("settlement.completed", None),
        ]
    )
    notices = {to: p for _, t, to, p in emitted if t == "settlement.notice"}
    assert {to: (Decimal(p["amount"]), p["entry_id"], p["account"]) for to, p in notices.items()} == {
        "bob": (amount, entry_id, "bob-cash"),
        "alice": (amount, entry_id, "alice-cash"),
    }
    [completed] = [p for _, t, _, p in emitted if t == "settlement.completed"]
    assert (completed["shares"], Decimal(completed["amount"]), completed["entry_id"]) == (100, amount, entry_id)


async def test_settlement_the_same_committed_answer_twice_posts_once(settings: Settings, keys: KeyStore) -> None:
    """The leg's answer delivered twice as two messages (another message id each): one at a time
    for instruction 1, in one group-committed batch for instruction 2. The second is ignored: one
    trade entry each, the hold consumed once, one notice a party, the buyer paying once."""
    async with sb.settlement(settings, []) as rt:
        await sb.seed(settings, 1, 0)
        await sb.seed(settings, 2, 0)
        bob = await cash(rt, "bob-cash")
        alone = [sb.committed(keys, 1, 0), sb.committed(keys, 1, 0)]
        batch = [sb.committed(keys, 2, 0), sb.committed(keys, 2, 0)]
        assert alone[0].envelope.message_id != alone[1].envelope.message_id
        assert outcomes(await sb.one_at_a_time(settings, rt, alone)) == ["processed"] * 2
        assert outcomes(await sb.as_one_batch(settings, rt, batch)) == ["processed"] * 2
        rows = [await settlement_rows(settings, n) for n in (1, 2)]
        paid = bob - await cash(rt, "bob-cash")
        async with sb.admin(settings) as c:
            emitted = await said(c, [*alone, *batch])

    assert paid == Decimal(200_000)  # 100 shares at 1,000, for each of the two instructions, once
    for r in rows:
        assert len({e["entry_id"] for e in r["entries"]}) == 1
        assert [(h["status"], h["amount"]) for h in r["holds"]] == [("consumed", Decimal(100_000))]
        assert r["instruction"]["settlement"] == "settled" and r["instruction"]["settled_quantity"] == 100
    assert of(emitted, 1) == [] and of(emitted, 3) == []
    for k in (0, 2):
        notified = sorted(to for i, t, to, _ in emitted if i == k and t == "settlement.notice")
        assert notified == ["alice", "bob"]


async def seed_second_attempt(settings: Settings, number: int) -> None:
    """Instruction ``number``'s attempt 1 refused (its earmark released), attempt 2 ``reserving``."""
    await sb.seed(settings, number, 0, attempt=2)
    async with sb.admin(settings) as c:
        hold = uuid.uuid4()
        await c.execute(
            "INSERT INTO holds (hold_id, account_id, owner, amount, status, closed_at) "
            "VALUES ($1, 'bob-cash', 'bob', 100000, 'released', now())",
            hold,
        )
        await c.execute(
            """INSERT INTO dvp_attempts (matching_number, attempt, quantity, amount, hold_id, status, reason, ended_at)
               VALUES ($1, 1, 100, 100000, $2, 'refused', 'lack_of_securities', now())""",
            number,
            hold,
        )


async def test_settlement_a_committed_answer_for_a_stale_attempt_posts_nothing(
    settings: Settings, keys: KeyStore
) -> None:
    """Instruction 1's outstanding attempt is 2 (attempt 1 was refused): an answer for attempt 1,
    and one for attempt 3 that was never made, post nothing, consume nothing and settle nothing;
    the answer for attempt 2 then settles it, once."""
    async with sb.settlement(settings, []) as rt:
        await seed_second_attempt(settings, 1)
        bob = await cash(rt, "bob-cash")
        stale = [sb.committed(keys, 1, 0, attempt=1), sb.committed(keys, 1, 0, attempt=3)]
        assert outcomes(await sb.one_at_a_time(settings, rt, stale)) == ["processed"] * 2
        untouched = await settlement_rows(settings, 1)
        unpaid = await cash(rt, "bob-cash")
        current = [sb.committed(keys, 1, 0, attempt=2)]
        assert outcomes(await sb.one_at_a_time(settings, rt, current)) == ["processed"]
        done = await settlement_rows(settings, 1)
        async with sb.admin(settings) as c:
            emitted = await said(c, [*stale, *current])

    assert unpaid == bob
    assert untouched["entries"] == []
    assert [(a["attempt"], a["status"]) for a in untouched["attempts"]] == [(1, "refused"), (2, "reserving")]
    assert [(h["attempt"], h["status"]) for h in untouched["holds"]] == [(1, "released"), (2, "placed")]
    assert (untouched["instruction"]["settlement"], untouched["instruction"]["in_flight"]) == ("pending", True)
    assert of(emitted, 0) == [] and of(emitted, 1) == []
    assert {e["reference"] for e in done["entries"]} == {"1/2"}
    assert [(h["attempt"], h["status"]) for h in done["holds"]] == [(1, "released"), (2, "consumed")]
    assert done["instruction"]["settlement"] == "settled"


async def test_settlement_a_cancel_by_both_parties_while_the_delivery_is_out_is_too_late_and_the_trade_settles(
    settings: Settings, keys: KeyStore
) -> None:
    """bob and alice each send ``settlement.instruction.cancel`` while attempt 1 is out with
    ``deliver``: the cancels are recorded and wait (the instruction stays accepted, in flight, its
    earmark placed). The leg answers that it delivered: the earmark is posted and the trade is
    settled, not cancelled; no release goes to the leg."""
    async with sb.settlement(settings, []) as rt:
        await sb.seed(settings, 1, 0)
        cancels = [
            seal(
                keys.load_identity(who),
                CancelInstruction(instruction=1),
                recipient=SETTLEMENT_ID,
                now=datetime.now(UTC),
            )
            for who in ("bob", "alice")
        ]
        inbox = lambda names: names.inbox(SETTLEMENT_ID)  # noqa: E731
        assert outcomes(await set_kit.one_at_a_time(settings, rt, cancels, inbox)) == ["processed"] * 2
        waiting = await settlement_rows(settings, 1)
        answer = [sb.committed(keys, 1, 0)]
        assert outcomes(await sb.one_at_a_time(settings, rt, answer)) == ["processed"]
        rows = await settlement_rows(settings, 1)
        async with sb.admin(settings) as c:
            emitted = await said(c, answer)

    w = waiting["instruction"]
    assert (w["processing"], w["in_flight"], w["cancel_by_buyer"], w["cancel_by_seller"]) == (
        "accepted",
        True,
        True,
        True,
    )
    assert [h["status"] for h in waiting["holds"]] == ["placed"]
    i = rows["instruction"]
    assert (i["processing"], i["settlement"], i["reason"], i["settled_quantity"]) == ("accepted", "settled", None, 100)
    assert [h["status"] for h in rows["holds"]] == ["consumed"]
    assert {(e["account_id"], e["amount"]) for e in rows["entries"]} == {
        ("bob-cash", Decimal(-100_000)),
        ("alice-cash", Decimal(100_000)),
    }
    types = [t for _, t, _, _ in emitted]
    assert "securities.release" not in types and types.count("settlement.notice") == 2


# -- through the real agents ----------------------------------------------------------------------


async def test_a_trade_through_the_real_agents_is_delivered_in_one_round_trip_and_conserves_cash_and_shares(
    settings: Settings,
) -> None:
    """alice sells 300 of her 500 to bob at 1,000 through the investor, exchange, settlement and
    issuer: settlement asks with ``deliver``, the issuer answers ``securities.committed`` straight
    away (no ``securities.reserved``, no ``securities.commit``); 300,000 moves from bob to alice,
    no earmark stays placed, the ledger sums to zero and the register still holds 500 shares."""
    async with support.agents(settings, "investor", "issuer", "exchange", "settlement") as rt:
        await market(rt)
        cert_id = await issue(rt, "alice", 500)
        await place(rt, "alice", sell("s1", 300, cert_id))
        await traded(rt, await place(rt, "bob", buy("b1", 300)))
        await rt["settlement"].outcomes.wait(lambda s: s.type == "securities.committed")
        await rt["settlement"].outcomes.wait(lambda s: s.type == "settlement.cover.release")
        settlement, issuer = rt["settlement"], rt["issuer"]
        sent = await support.rows(
            settlement, "SELECT message_type, body FROM outbox_messages WHERE message_type LIKE 'securities.%'"
        )
        answered = await support.rows(
            issuer, "SELECT message_type FROM outbox_messages WHERE message_type LIKE 'securities.%'"
        )
        bob, alice = await cash(settlement, "bob-cash"), await cash(settlement, "alice-cash")
        placed = await support.rows(settlement, "SELECT hold_id FROM holds WHERE status = 'placed'")
        total = await support.rows(settlement, "SELECT coalesce(sum(amount), 0) AS t FROM postings")
        unbalanced = await support.rows(
            settlement, "SELECT entry_id FROM postings GROUP BY entry_id HAVING sum(amount) <> 0"
        )
        register = await support.rows(
            issuer, "SELECT holder_user_id, shares FROM register WHERE status = 'valid' ORDER BY 1, 2"
        )
        [row] = await support.rows(settlement, "SELECT settlement, settled_quantity FROM dvp_instructions")

    assert [r["message_type"] for r in sent] == ["securities.reserve"]
    assert json.loads(sent[0]["body"])["payload"]["deliver"] is True
    assert [r["message_type"] for r in answered] == ["securities.committed"]
    assert (bob, alice) == (Decimal(5_000_000 - 300_000), Decimal(5_000_000 + 300_000))
    assert placed == [] and total == [{"t": 0}] and unbalanced == []
    assert [(r["holder_user_id"], r["shares"]) for r in register] == [("alice", 200), ("bob", 300)]
    assert row == {"settlement": "settled", "settled_quantity": 300}


def book_entry_instruction(keys: KeyStore, number: int, quantity: int) -> Sealed:
    """What the exchange sends for a book-entry trade it allows to settle in part: alice's position
    at custody to bob's, against 1,000 JPY a share."""
    today = datetime.now(UTC).date()
    message = SettlementInstruction(
        matching_number=number,
        trade_date=today,
        intended_settlement_date=today,
        issue_code="KBT",
        quantity=quantity,
        price=Decimal(1000),
        amount=Decimal(1000 * quantity),
        buyer_user_id="bob",
        buyer_account=support.account_box(keys, "bob", "bob-cash"),
        seller_user_id="alice",
        seller_account=support.account_box(keys, "alice", "alice-cash"),
        partial_allowed=True,
        securities=BookEntryLeg(agent="custody", deliverer_account="alice-sk", receiver_account="bob-sk"),
    )
    return seal(keys.load_identity(EXCHANGE_ID), message, recipient=SETTLEMENT_ID, now=datetime.now(UTC))


async def test_a_book_entry_trade_settled_in_part_delivers_the_rest_at_custody_when_the_buyer_can_pay(
    settings: Settings, keys: KeyStore
) -> None:
    """Through settlement and custody: bob can pay for 200 of the 500 shares of instruction 901
    (partial allowed), so attempt 1 delivers 200 at once and the instruction is partially settled.
    Funded for the rest and recycled, attempt 2 asks custody to deliver the other 300 with
    ``deliver``; custody must answer it (the earmark of 300,000 stays bound to the attempt until
    it does), and the instruction settles with cash and positions conserved."""
    async with support.agents(settings, "settlement", "custody") as rt:
        settlement, custody = rt["settlement"], rt["custody"]
        await support.fund(settlement, "alice")
        await support.fund(settlement, "bob", Decimal(200_000))
        await open_account(custody, "alice-sk", "alice")
        await open_account(custody, "bob-sk", "bob")
        await credit_position(custody, "alice-sk", "KBT", 500)
        sealed = book_entry_instruction(keys, 901, 500)
        await support.publish_sealed(settings, sealed)
        assert (await settlement.outcomes.wait_for(sealed.envelope.message_id)).outcome is Outcome.PROCESSED
        await settlement.outcomes.wait(lambda s: s.type == "securities.committed")
        first = await settlement_rows(settings, 901)
        assert (first["instruction"]["settlement"], first["instruction"]["settled_quantity"]) == (
            "partially_settled",
            200,
        )
        assert await balances(custody, "alice-sk", "KBT") == sub(300)
        assert await balances(custody, "bob-sk", "KBT") == sub(200)

        await settlement.command(SETTLEMENT_ID, ledger.deposit("bob-cash", Decimal(300_000), "rest"))
        assert (await settlement.command(SETTLEMENT_ID, instruction_desk.recycle()))["attempted"] == 1
        await custody.outcomes.wait_count(lambda s: s.type == "securities.reserve", 2)
        reserves = await support.rows(
            settlement,
            "SELECT body FROM outbox_messages WHERE message_type = 'securities.reserve' ORDER BY seq, place",
        )
        second = json.loads(reserves[-1]["body"])
        assert (second["payload"]["attempt"], second["payload"]["quantity"], second["payload"]["deliver"]) == (
            2,
            300,
            True,
        )
        answered = await answers_to(custody, uuid.UUID(second["message_id"]))
        assert [a["type"] for a in answered] == ["securities.committed"], (
            "custody left attempt 2's deliver unanswered: the buyer's 300,000 stay earmarked for good",
            answered,
        )
        await settlement.outcomes.wait_count(lambda s: s.type == "securities.committed", 2)
        done = await settlement_rows(settings, 901)
        assert (done["instruction"]["settlement"], done["instruction"]["settled_quantity"]) == ("settled", 500)
        assert await balances(custody, "alice-sk", "KBT") == sub(0)
        assert await balances(custody, "bob-sk", "KBT") == sub(500)
        assert (await cash(settlement, "bob-cash"), await cash(settlement, "alice-cash")) == (0, Decimal(500_000))
