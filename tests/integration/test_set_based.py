"""Set-based handlers at settlement (docs/netting.md, step 1), against the real RabbitMQ and
PostgreSQL: a group-committed batch of ``securities.reserved`` (or ``securities.committed``)
answers for distinct instructions is handed to the set handler in one call and leaves exactly the
rows and messages the same answers leave handled one at a time; a stale or cancelled answer in a
set, or one whose cash leg fails, touches only itself; a redelivery is absorbed; the set-wise SQL
(``post_all``, ``currents``, the attempt endings) does what its single-row forebears did.

The settlement agent is opened but not run: the tests take the answers off its queue themselves
and settle them as one batch (``group_commit.settle_batch``, as its consumer does) or one at a
time (``Consumer.settle``), so which answers share a batch is not up to the broker.
"""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from agents.settlement import app as settlement_app
from agents.settlement import dvp, dvp_repo, repo
from agents.settlement.domain import Entry, EntryKind, Leg
from broker.consumer import Settled
from broker.envelope import Sealed, seal
from broker.pki import KeyStore
from broker.runtime import AgentDefinition, AgentRuntime
from broker.settings import Settings
from broker.topology import Names
from schemas.dvp import CertificateDelivery, DvpReason, SecuritiesCommitted, SecuritiesReserved
from schemas.identity import SETTLEMENT_ID
from tests import support
from tests.integration import set_kit
from tests.integration.set_kit import outcomes

Calls = list[tuple[str, list[int]]]
ACCOUNTS = ("alice", "bob", "carol")
# (buyer, seller) per instruction of a group: buyers and sellers shared between instructions,
# so that one set posts several entries on one account.
PARTIES = (("bob", "alice"), ("carol", "alice"), ("bob", "carol"), ("alice", "bob"))


def settlement_definition(calls: Calls) -> AgentDefinition:
    real = settlement_app.AGENT
    handlers = {
        **real.handlers,
        SecuritiesReserved: set_kit.recording(dvp.on_reserved, set_kit.noted("reserved", calls)),
        SecuritiesCommitted: set_kit.recording(dvp.on_committed, set_kit.noted("committed", calls)),
    }
    return AgentDefinition(real.id, real.role, handlers, batch_scope=real.batch_scope)


@asynccontextmanager
async def settlement(settings: Settings, calls: Calls) -> AsyncIterator[AgentRuntime]:
    async with AgentRuntime(settlement_definition(calls), settings) as rt:
        for owner in ACCOUNTS:
            await support.fund(rt, owner, Decimal(100_000_000))
        yield rt


@asynccontextmanager
async def admin(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(settings.database_url, server_settings={"search_path": "settlement"})
    try:
        yield connection
    finally:
        await connection.close()


def quantity_of(index: int) -> int:
    return 100 * (index + 1)


async def seed(
    settings: Settings,
    number: int,
    index: int,
    *,
    cancelled: bool = False,
    attempt: int = 1,
    partial: bool = False,
) -> None:
    """Instruction ``number`` accepted, matched and pending, its attempt ``attempt`` reserving the
    securities with the cash earmarked on the buyer's account: what ``on_reserved`` expects."""
    buyer, seller = PARTIES[index % len(PARTIES)]
    quantity = quantity_of(index)  # the attempt's; the instruction's is twice that if ``partial``
    amount = Decimal(1000 * quantity)
    whole = 2 * quantity if partial else quantity
    hold_id = uuid.uuid4()
    async with admin(settings) as c, c.transaction():
        await c.execute(
            """INSERT INTO dvp_instructions (matching_number, trade_date, intended_settlement_date, issue_code,
                   quantity, price, amount, currency, buyer_user_id, buyer_account, seller_user_id, seller_account,
                   partial_allowed, securities, leg_agent, processing, matching, settlement, attempt, in_flight,
                   cancel_by_buyer, cancel_by_seller, request_id)
               VALUES ($1, current_date, current_date, 'KBT', $2, 1000, $3, 'JPY', $4, $5, $6, $7, false, '{}',
                       'issuer', 'accepted', 'matched', 'pending', $8, true, $9, $9, $10)""",
            number,
            whole,
            Decimal(1000 * whole),
            buyer,
            f"{buyer}-cash",
            seller,
            f"{seller}-cash",
            attempt,
            cancelled,
            uuid.uuid4(),
        )
        await c.execute(
            """INSERT INTO dvp_attempts (matching_number, attempt, quantity, amount, hold_id, status)
               VALUES ($1, $2, $3, $4, $5, 'reserving')""",
            number,
            attempt,
            quantity,
            amount,
            hold_id,
        )
        await c.execute(
            "INSERT INTO holds (hold_id, account_id, owner, amount, status) VALUES ($1, $2, $3, $4, 'placed')",
            hold_id,
            f"{buyer}-cash",
            buyer,
            amount,
        )


def reserved(keys: KeyStore, number: int, index: int, attempt: int = 1) -> Sealed:
    answer = SecuritiesReserved(instruction=number, attempt=attempt, quantity=quantity_of(index))
    return seal(keys.load_identity("issuer"), answer, recipient=SETTLEMENT_ID, now=datetime.now(UTC))


def committed(keys: KeyStore, number: int, index: int, attempt: int = 1) -> Sealed:
    delivery = CertificateDelivery(
        name_transfer_number=index + 1, new_cert_id=uuid.UUID(int=index + 1), register_version=1
    )
    answer = SecuritiesCommitted(instruction=number, attempt=attempt, quantity=quantity_of(index), delivery=delivery)
    return seal(keys.load_identity("issuer"), answer, recipient=SETTLEMENT_ID, now=datetime.now(UTC))


def answers(names: Names) -> str:
    return names.answers(SETTLEMENT_ID)


async def as_one_batch(settings: Settings, rt: AgentRuntime, sealed: Sequence[Sealed]) -> list[Settled]:
    return await set_kit.as_one_batch(settings, rt, sealed, answers)


async def one_at_a_time(settings: Settings, rt: AgentRuntime, sealed: Sequence[Sealed]) -> list[Settled]:
    return await set_kit.one_at_a_time(settings, rt, sealed, answers)


# -- what a group of answers left -----------------------------------------------------------------


async def snapshot(settings: Settings, numbers: Sequence[int], sealed: Sequence[Sealed]) -> dict[str, Any]:
    """Every row and emitted message the answers ``sealed`` to instructions ``numbers`` left,
    instruction numbers and entry ids replaced by their place in the group, so that two groups
    handled differently compare equal if and only if they were handled alike."""
    index = {n: i for i, n in enumerate(numbers)}
    async with admin(settings) as c:
        entries = await c.fetch("SELECT entry_id, kind, reference, description FROM entries WHERE kind = 'trade'")
        entry_of: dict[int, str] = {}
        entry_rows = []
        for e in entries:
            number, attempt = (int(part) for part in e["reference"].split("/"))
            if number not in index:
                continue
            name = f"#{index[number]}/{attempt}"
            entry_of[e["entry_id"]] = name
            postings = await c.fetch(
                "SELECT account_id, amount FROM postings WHERE entry_id = $1 ORDER BY account_id", e["entry_id"]
            )
            description = e["description"].replace(f"trade {number}:", f"trade #{index[number]}:")
            entry_rows.append((name, description, [(p["account_id"], p["amount"]) for p in postings]))
        instructions = [
            {**dict(r), "matching_number": index[r["matching_number"]]}
            for r in await c.fetch(
                """SELECT matching_number, processing, matching, settlement, reason, detail, quantity, amount,
                          settled_quantity, settled_amount, attempt, in_flight, cancel_by_buyer, cancel_by_seller,
                          buyer_account, seller_account
                   FROM dvp_instructions WHERE matching_number = ANY($1::bigint[]) ORDER BY matching_number""",
                list(numbers),
            )
        ]
        attempts = [
            {
                **dict(r),
                "matching_number": index[r["matching_number"]],
                "entry_id": entry_of.get(r["entry_id"], r["entry_id"]),
            }
            for r in await c.fetch(
                """SELECT matching_number, attempt, quantity, amount, from_cover, status, reason, entry_id,
                          ended_at IS NOT NULL AS ended
                   FROM dvp_attempts WHERE matching_number = ANY($1::bigint[]) ORDER BY matching_number, attempt""",
                list(numbers),
            )
        ]
        holds = [
            {**dict(r), "matching_number": index[r["matching_number"]], "entry_id": entry_of.get(r["entry_id"])}
            for r in await c.fetch(
                """SELECT a.matching_number, h.account_id, h.amount, h.status, h.closed_at IS NOT NULL AS closed,
                          h.entry_id
                   FROM holds h JOIN dvp_attempts a USING (hold_id)
                   WHERE a.matching_number = ANY($1::bigint[]) ORDER BY a.matching_number""",
                list(numbers),
            )
        ]
        emitted = await set_kit.caused(c, sealed, lambda payload: _normal(payload, index, entry_of))
    return {
        "instructions": instructions,
        "attempts": attempts,
        "holds": holds,
        "entries": sorted(entry_rows),
        "emitted": emitted,
    }


def _normal(value: Any, index: dict[int, int], entry_of: dict[int, str]) -> Any:
    def rename(key: str, item: Any) -> Any:
        if key in ("instruction", "matching_number") and isinstance(item, int):
            return f"#{index.get(item, item)}"
        if key == "entry_id" and isinstance(item, int):
            return entry_of.get(item, item)
        return support.WALK

    return support.renamed(value, rename)


def emitted_types(snap: dict[str, Any], item: int) -> list[str]:
    return [e[1] for e in snap["emitted"] if e[0] == item]


# -- securities.reserved --------------------------------------------------------------------------

BATCH = [1, 2, 3, 4]
ALONE = [11, 12, 13, 14]


async def test_a_batch_of_reserved_answers_is_one_set_call_and_leaves_what_one_at_a_time_leaves(
    settings: Settings, keys: KeyStore
) -> None:
    calls: Calls = []
    async with settlement(settings, calls) as rt:
        for group in (BATCH, ALONE):
            for i, n in enumerate(group):
                await seed(settings, n, i)
        as_set = [reserved(keys, n, i) for i, n in enumerate(BATCH)]
        alone = [reserved(keys, n, i) for i, n in enumerate(ALONE)]

        assert outcomes(await as_one_batch(settings, rt, as_set)) == ["processed"] * 4
        assert calls == [("reserved", BATCH)]  # one call for the four
        calls.clear()
        assert outcomes(await one_at_a_time(settings, rt, alone)) == ["processed"] * 4
        assert calls == [("reserved", [n]) for n in ALONE]

        in_set, one_by_one = await snapshot(settings, BATCH, as_set), await snapshot(settings, ALONE, alone)
    assert in_set == one_by_one
    # and what both left is what a reserved answer must leave
    assert [a["status"] for a in in_set["attempts"]] == ["committing"] * 4
    assert all(a["entry_id"] == f"#{i}/1" for i, a in enumerate(in_set["attempts"]))
    assert [(h["status"], h["closed"], h["entry_id"]) for h in in_set["holds"]] == [
        ("consumed", True, f"#{i}/1") for i in range(4)
    ]
    assert [name for name, _, _ in in_set["entries"]] == [f"#{i}/1" for i in range(4)]
    for i, (_, _, postings) in enumerate(in_set["entries"]):
        buyer, seller = PARTIES[i]
        amount = Decimal(1000 * quantity_of(i))
        assert sorted(postings) == sorted([(f"{buyer}-cash", -amount), (f"{seller}-cash", amount)])
    assert in_set["emitted"] == [
        (i, "securities.commit", "issuer.answers", "issuer", {"instruction": f"#{i}", "attempt": 1}) for i in range(4)
    ]
    assert all(r["in_flight"] and r["settlement"] == "pending" for r in in_set["instructions"])


async def test_a_batch_of_committed_answers_is_one_set_call_and_leaves_what_one_at_a_time_leaves(
    settings: Settings, keys: KeyStore
) -> None:
    calls: Calls = []
    async with settlement(settings, calls) as rt:
        for group in (BATCH, ALONE):
            for i, n in enumerate(group):
                await seed(settings, n, i)
        # both groups reserved alike (as one batch each) so that both have their cash legs posted
        assert (
            outcomes(await as_one_batch(settings, rt, [reserved(keys, n, i) for i, n in enumerate(BATCH)]))
            == ["processed"] * 4
        )
        assert (
            outcomes(await as_one_batch(settings, rt, [reserved(keys, n, i) for i, n in enumerate(ALONE)]))
            == ["processed"] * 4
        )
        calls.clear()
        as_set = [committed(keys, n, i) for i, n in enumerate(BATCH)]
        alone = [committed(keys, n, i) for i, n in enumerate(ALONE)]

        assert outcomes(await as_one_batch(settings, rt, as_set)) == ["processed"] * 4
        assert calls == [("committed", BATCH)]
        calls.clear()
        assert outcomes(await one_at_a_time(settings, rt, alone)) == ["processed"] * 4
        assert calls == [("committed", [n]) for n in ALONE]

        in_set, one_by_one = await snapshot(settings, BATCH, as_set), await snapshot(settings, ALONE, alone)
    assert in_set == one_by_one
    assert [(r["settlement"], r["in_flight"], r["reason"]) for r in in_set["instructions"]] == [
        ("settled", False, None)
    ] * 4
    assert [r["settled_quantity"] for r in in_set["instructions"]] == [quantity_of(i) for i in range(4)]
    assert [(a["status"], a["ended"], a["entry_id"]) for a in in_set["attempts"]] == [
        ("committed", True, f"#{i}/1") for i in range(4)
    ]
    for i in range(4):
        buyer, seller = PARTIES[i]
        # the exchange and both parties hear the status, each party its notice, integrators the events
        assert sorted(emitted_types(in_set, i)) == sorted(
            [
                "settlement.instruction.status",
                "settlement.instruction.status",
                "settlement.instruction.status",
                "settlement.notice",
                "settlement.notice",
                "settlement.instruction.status_changed",
                "settlement.completed",
            ]
        )
        notices = [e for e in in_set["emitted"] if e[0] == i and e[1] == "settlement.notice"]
        assert sorted((e[3], e[4]["account"], e[4]["entry_id"]) for e in notices) == sorted(
            [(buyer, f"{buyer}-cash", f"#{i}/1"), (seller, f"{seller}-cash", f"#{i}/1")]
        )
        to_exchange = [e for e in in_set["emitted"] if e[0] == i and e[3] == "exchange"]
        assert len(to_exchange) == 1 and to_exchange[0][4]["delivery"]["name_transfer_number"] == i + 1


async def test_a_stale_answer_in_the_middle_of_a_set_gets_its_release_and_the_others_commit(
    settings: Settings, keys: KeyStore
) -> None:
    calls: Calls = []
    async with settlement(settings, calls) as rt:
        for i, n in enumerate((1, 2, 3)):
            await seed(settings, n, i)
        sealed = [
            reserved(keys, 1, 0),
            reserved(keys, 2, 1, attempt=7),  # an answer to an attempt that is not outstanding
            reserved(keys, 99, 2),  # and one to no instruction at all
            reserved(keys, 3, 2),
        ]
        assert outcomes(await as_one_batch(settings, rt, sealed)) == ["processed"] * 4
        assert calls == [("reserved", [1, 2, 99, 3])]
        snap = await snapshot(settings, [1, 2, 3, 99], sealed)
    assert [(a["matching_number"], a["status"]) for a in snap["attempts"]] == [
        (0, "committing"),
        (1, "reserving"),  # instruction 2's real attempt is untouched
        (2, "committing"),
    ]
    assert [h["status"] for h in snap["holds"]] == ["consumed", "placed", "consumed"]
    assert [name for name, _, _ in snap["entries"]] == ["#0/1", "#2/1"]
    assert snap["emitted"] == [
        (0, "securities.commit", "issuer.answers", "issuer", {"instruction": "#0", "attempt": 1}),
        (1, "securities.release", "issuer.answers", "issuer", {"instruction": "#1", "attempt": 7}),
        (2, "securities.release", "issuer.answers", "issuer", {"instruction": "#3", "attempt": 1}),
        (3, "securities.commit", "issuer.answers", "issuer", {"instruction": "#2", "attempt": 1}),
    ]


async def test_an_instruction_cancelled_while_reserved_in_the_middle_of_a_set_fails_alone(
    settings: Settings, keys: KeyStore
) -> None:
    calls: Calls = []
    async with settlement(settings, calls) as rt:
        await seed(settings, 1, 0)
        await seed(settings, 2, 1, cancelled=True)  # both parties asked to cancel meanwhile
        await seed(settings, 3, 2)
        sealed = [reserved(keys, n, i) for i, n in enumerate((1, 2, 3))]
        assert outcomes(await as_one_batch(settings, rt, sealed)) == ["processed"] * 3
        assert calls == [("reserved", [1, 2, 3])]
        snap = await snapshot(settings, [1, 2, 3], sealed)
    assert [(a["status"], a["reason"], a["ended"]) for a in snap["attempts"]] == [
        ("committing", None, False),
        ("refused", "cancelled_by_party", True),
        ("committing", None, False),
    ]
    assert [h["status"] for h in snap["holds"]] == ["consumed", "released", "consumed"]
    cancelled = snap["instructions"][1]
    assert (cancelled["processing"], cancelled["settlement"], cancelled["reason"], cancelled["in_flight"]) == (
        "cancelled",
        "failed",
        "cancelled_by_party",
        False,
    )
    assert [name for name, _, _ in snap["entries"]] == ["#0/1", "#2/1"]
    assert emitted_types(snap, 0) == ["securities.commit"]
    assert emitted_types(snap, 2) == ["securities.commit"]
    # the reservation given back, and the failure told (to other queues: in no order between them)
    assert emitted_types(snap, 1).count("securities.release") == 1
    assert "settlement.instruction.status" in emitted_types(snap, 1)


async def test_a_set_whose_one_cash_leg_was_already_posted_falls_back_and_only_that_one_is_retried(
    settings: Settings, keys: KeyStore
) -> None:
    calls: Calls = []
    async with settlement(settings, calls) as rt:
        for i, n in enumerate((1, 2, 3)):
            await seed(settings, n, i)
        async with admin(settings) as c, c.transaction():  # instruction 2's cash leg, posted behind its back
            entry_id = await c.fetchval(
                "INSERT INTO entries (kind, reference, description) VALUES ('trade', '2/1', 'meanwhile') "
                "RETURNING entry_id"
            )
            await c.execute(
                "INSERT INTO postings (entry_id, account_id, amount) "
                "VALUES ($1, 'carol-cash', -1), ($1, 'alice-cash', 1)",
                entry_id,
            )
        sealed = [reserved(keys, n, i) for i, n in enumerate((1, 2, 3))]
        settled = await as_one_batch(settings, rt, sealed)
        # the set raised (Transient) as one; the batch ran again a savepoint each
        assert calls == [("reserved", [1, 2, 3]), ("reserved", [1]), ("reserved", [2]), ("reserved", [3])]
        snap = await snapshot(settings, [1, 2, 3], sealed)
    assert outcomes(settled) == ["processed", "retry_scheduled", "processed"]
    assert [a["status"] for a in snap["attempts"]] == ["committing", "reserving", "committing"]
    assert [h["status"] for h in snap["holds"]] == ["consumed", "placed", "consumed"]
    assert [e[:2] for e in snap["emitted"]] == [(0, "securities.commit"), (2, "securities.commit")]


async def test_a_redelivered_set_is_absorbed_and_a_duplicate_inside_a_batch_changes_nothing_twice(
    settings: Settings, keys: KeyStore
) -> None:
    calls: Calls = []
    async with settlement(settings, calls) as rt:
        for i, n in enumerate((1, 2, 3, 4)):
            await seed(settings, n, i)
        first = [reserved(keys, n, i) for i, n in enumerate((1, 2, 3))]
        assert outcomes(await as_one_batch(settings, rt, first)) == ["processed"] * 3
        fourth = reserved(keys, 4, 3)
        again = await as_one_batch(settings, rt, [*first, fourth, fourth])
        assert outcomes(again) == ["duplicate", "duplicate", "duplicate", "processed", "duplicate"]
        assert calls == [("reserved", [1, 2, 3]), ("reserved", [4])]
        snap = await snapshot(settings, [1, 2, 3, 4], [*first, fourth])
    assert [a["status"] for a in snap["attempts"]] == ["committing"] * 4
    assert [name for name, _, _ in snap["entries"]] == ["#0/1", "#1/1", "#2/1", "#3/1"]
    assert [e[:2] for e in snap["emitted"]] == [(i, "securities.commit") for i in range(4)]


async def test_answers_for_one_instruction_are_never_in_one_set(settings: Settings, keys: KeyStore) -> None:
    """A second reserved answer (another message) for an attempt already answered, in the same
    batch: cut into a run of its own, it finds the cash leg posted (as one by one: Transient) and
    only it is retried; the first answer and the others commit."""
    calls: Calls = []
    async with settlement(settings, calls) as rt:
        for i, n in enumerate((1, 2)):
            await seed(settings, n, i)
        sealed = [reserved(keys, 1, 0), reserved(keys, 2, 1), reserved(keys, 1, 0)]
        settled = await as_one_batch(settings, rt, sealed)
        snap = await snapshot(settings, [1, 2], sealed[:2])
    assert calls[:2] == [("reserved", [1, 2]), ("reserved", [1])]
    assert outcomes(settled) == ["processed", "processed", "retry_scheduled"]
    assert [a["status"] for a in snap["attempts"]] == ["committing", "committing"]
    assert [name for name, _, _ in snap["entries"]] == ["#0/1", "#1/1"]


async def test_a_committed_set_with_a_stale_answer_a_delivery_at_once_and_a_partial_one(
    settings: Settings, keys: KeyStore
) -> None:
    """In one set: an answer to no attempt of its instruction is ignored (nothing written or sent
    for it); an answer for an attempt still reserving is a delivery at once against its earmark
    (docs/dvp.md): its cash is posted and it settles; a partial delivery leaves its instruction
    partially settled and waiting; the others settle."""
    calls: Calls = []
    async with settlement(settings, calls) as rt:
        for number, index in ((1, 0), (2, 1), (4, 3), (5, 4)):
            await seed(settings, number, index)
        await seed(settings, 3, 2, partial=True)
        first = [reserved(keys, n, i) for i, n in ((0, 1), (2, 3), (3, 4))]  # not 2, not 5: they stay reserving
        assert outcomes(await as_one_batch(settings, rt, first)) == ["processed"] * 3
        calls.clear()
        stale = committed(keys, 2, 1, attempt=2)  # 2's outstanding attempt is 1
        sealed = [committed(keys, 1, 0), stale, committed(keys, 3, 2), committed(keys, 4, 3), committed(keys, 5, 4)]
        assert outcomes(await as_one_batch(settings, rt, sealed)) == ["processed"] * 5
        assert calls == [("committed", [1, 2, 3, 4, 5])]
        snap = await snapshot(settings, [1, 2, 3, 4, 5], sealed)
    assert [(r["settlement"], r["in_flight"], r["reason"], r["settled_quantity"]) for r in snap["instructions"]] == [
        ("settled", False, None, quantity_of(0)),
        ("pending", True, None, 0),
        ("partially_settled", False, "lack_of_cash", quantity_of(2)),
        ("settled", False, None, quantity_of(3)),
        ("settled", False, None, quantity_of(4)),
    ]
    assert snap["instructions"][2]["detail"] == f"{quantity_of(2)} shares still to settle"
    assert snap["instructions"][2]["settled_amount"] == Decimal(1000 * quantity_of(2))
    assert [(a["status"], a["ended"]) for a in snap["attempts"]] == [
        ("committed", True),
        ("reserving", False),
        ("committed", True),
        ("committed", True),
        ("committed", True),
    ]
    assert [name for name, *_ in snap["entries"]] == ["#0/1", "#2/1", "#3/1", "#4/1"]  # 5's posted on delivery
    assert [(h["status"], h["entry_id"]) for h in snap["holds"]] == [
        ("consumed", "#0/1"),
        ("placed", None),  # the stale answer's instruction keeps its earmark
        ("consumed", "#2/1"),
        ("consumed", "#3/1"),
        ("consumed", "#4/1"),
    ]
    assert emitted_types(snap, 1) == []
    for i in (0, 2, 3, 4):
        assert emitted_types(snap, i).count("settlement.notice") == 2
    assert "securities.commit" not in emitted_types(snap, 4)  # delivered already: nothing to commit


async def test_an_answer_from_another_leg_for_another_quantity_or_without_its_earmark_changes_nothing(
    settings: Settings, keys: KeyStore
) -> None:
    """Review of stop 34: an answer about an instruction's securities leg comes from that leg's
    agent, a delivery says the quantity its attempt asked for, and the cash is posted only from
    an earmark still placed — otherwise the answer is refused (dead letter) or retried, and
    nothing is posted or settled; the right answer then settles as it would have."""
    calls: Calls = []
    async with settlement(settings, calls) as rt:
        for number, index in ((1, 0), (2, 1), (3, 2)):
            await seed(settings, number, index)
        answer = SecuritiesCommitted(
            instruction=1,
            attempt=1,
            quantity=quantity_of(0),
            delivery=CertificateDelivery(name_transfer_number=1, new_cert_id=uuid.uuid4(), register_version=1),
        )
        by_custody = seal(keys.load_identity("custody"), answer, recipient=SETTLEMENT_ID, now=datetime.now(UTC))
        reserved_by_custody = seal(
            keys.load_identity("custody"),
            SecuritiesReserved(instruction=1, attempt=1, quantity=quantity_of(0)),
            recipient=SETTLEMENT_ID,
            now=datetime.now(UTC),
        )
        short = seal(
            keys.load_identity("issuer"),
            answer.model_copy(update={"instruction": 2, "quantity": quantity_of(1) - 1}),
            recipient=SETTLEMENT_ID,
            now=datetime.now(UTC),
        )
        refused = await as_one_batch(settings, rt, [by_custody, reserved_by_custody, short])
        assert [(s.outcome.value, s.reason and s.reason.value) for s in refused] == [
            ("dead_lettered", "sender_not_authorized"),
            ("dead_lettered", "sender_not_authorized"),
            ("dead_lettered", "data_invalid"),
        ]
        async with admin(settings) as c:
            await c.execute(
                "UPDATE holds SET status = 'released' WHERE hold_id = "
                "(SELECT hold_id FROM dvp_attempts WHERE matching_number = 3)"
            )
        unbound = await as_one_batch(settings, rt, [committed(keys, 3, 2)])
        assert outcomes(unbound) == ["retry_scheduled"]  # a bug to look into, never cash without its earmark
        async with admin(settings) as c:
            assert await c.fetchval("SELECT count(*) FROM entries WHERE kind = 'trade'") == 0
            states = await c.fetch("SELECT settlement, in_flight FROM dvp_instructions ORDER BY matching_number")
            assert [(r["settlement"], r["in_flight"]) for r in states] == [("pending", True)] * 3
        assert outcomes(await as_one_batch(settings, rt, [committed(keys, 1, 0), committed(keys, 2, 1)])) == [
            "processed",
            "processed",
        ]
        async with admin(settings) as c:
            states = await c.fetch("SELECT settlement FROM dvp_instructions ORDER BY matching_number")
            assert [r["settlement"] for r in states] == ["settled", "settled", "pending"]


# -- logging --------------------------------------------------------------------------------------


async def test_what_a_set_handler_logs_for_each_answer_carries_that_answers_ids(
    settings: Settings, keys: KeyStore, log_lines: io.StringIO
) -> None:
    """One by one, every line a handler logs carries its delivery's message, correlation and
    causation ids and sender (``group_commit._bound``): an operator follows a trade by them. A set
    handler logs per answer too (``cash_posted_commit_sent``, ``stale_reservation_released``); each
    such line must still say which delivery it is about."""
    calls: Calls = []
    async with settlement(settings, calls) as rt:
        for i, n in enumerate((1, 2, 3)):
            await seed(settings, n, i)
        sealed = [reserved(keys, 1, 0), reserved(keys, 2, 1), reserved(keys, 77, 2), reserved(keys, 3, 2)]
        assert outcomes(await as_one_batch(settings, rt, sealed)) == ["processed"] * 4
    assert calls == [("reserved", [1, 2, 77, 3])]
    lines = [json.loads(line) for line in log_lines.getvalue().splitlines()]
    per_answer = [line for line in lines if line["event"] in ("cash_posted_commit_sent", "stale_reservation_released")]
    assert len(per_answer) == 4
    by_number = {s.envelope.payload["instruction"]: s.envelope for s in sealed}
    for line in per_answer:
        envelope = by_number[line["matching_number"]]
        assert line.get("message_id") == str(envelope.message_id), line
        assert line.get("correlation_id") == str(envelope.correlation_id), line
        assert line.get("sender") == "issuer", line


# -- the set-wise SQL -----------------------------------------------------------------------------


def trade(reference: str, buyer: str, seller: str, amount: int) -> Entry:
    return Entry(
        EntryKind.TRADE,
        reference,
        f"trade {reference}",
        (Leg(f"{buyer}-cash", Decimal(-amount)), Leg(f"{seller}-cash", Decimal(amount))),
    )


async def test_post_all_posts_each_entry_with_its_own_legs_and_none_for_one_already_posted(
    settings: Settings,
) -> None:
    async with settlement(settings, []), admin(settings) as c:
        async with c.transaction():
            assert await repo.post_all(c, [trade("9/1", "bob", "alice", 500)], datetime.now(UTC)) != [None]
        async with c.transaction():
            ids = await repo.post_all(
                c,
                [
                    trade("8/1", "bob", "carol", 100),
                    trade("9/1", "alice", "bob", 999),  # already posted: nothing of it is written
                    trade("7/1", "carol", "alice", 300),
                ],
                datetime.now(UTC),
            )
        assert ids[1] is None and ids[0] is not None and ids[2] is not None and ids[0] != ids[2]
        legs = {
            r["reference"]: sorted((p["account_id"], p["amount"]) for p in r["postings"])
            for r in [
                {
                    "reference": e["reference"],
                    "postings": await c.fetch("SELECT * FROM postings WHERE entry_id = $1", e["entry_id"]),
                }
                for e in await c.fetch("SELECT entry_id, reference FROM entries WHERE kind = 'trade'")
            ]
        }
        assert legs == {
            "9/1": [("alice-cash", Decimal(500)), ("bob-cash", Decimal(-500))],
            "8/1": [("bob-cash", Decimal(-100)), ("carol-cash", Decimal(100))],
            "7/1": [("alice-cash", Decimal(300)), ("carol-cash", Decimal(-300))],
        }
        ref = {r["entry_id"]: r["reference"] for r in await c.fetch("SELECT entry_id, reference FROM entries")}
        assert (ref[ids[0]], ref[ids[2]]) == ("8/1", "7/1")
        async with c.transaction():
            assert await repo.post_all(c, [], datetime.now(UTC)) == []


async def test_post_all_refuses_two_entries_of_one_kind_and_reference_and_writes_nothing(settings: Settings) -> None:
    async with settlement(settings, []), admin(settings) as c:
        before = await c.fetchval("SELECT count(*) FROM entries")
        with pytest.raises(ValueError, match="two entries of one"):
            async with c.transaction():
                await repo.post_all(
                    c,
                    [
                        trade("5/1", "bob", "alice", 1),
                        trade("6/1", "bob", "alice", 1),
                        trade("5/1", "carol", "alice", 2),
                    ],
                    datetime.now(UTC),
                )
        assert await c.fetchval("SELECT count(*) FROM entries") == before
        # the same reference under another kind is another entry
        async with c.transaction():
            deposit = Entry(
                EntryKind.DEPOSIT, "5/1", "d", (Leg("external:deposits", Decimal(-1)), Leg("bob-cash", Decimal(1)))
            )
            ids = await repo.post_all(c, [trade("5/1", "bob", "alice", 1), deposit], datetime.now(UTC))
        assert None not in ids and len(set(ids)) == 2


async def waits_for_a_lock(watcher: asyncpg.Connection, connection: asyncpg.Connection) -> bool:
    event = await watcher.fetchval(
        "SELECT wait_event_type FROM pg_stat_activity WHERE pid = $1", connection.get_server_pid()
    )
    return bool(event == "Lock")


async def test_currents_locks_in_matching_number_order_whatever_the_order_asked_and_reads_what_it_waited_for(
    settings: Settings,
) -> None:
    """Two sets locking overlapping instructions cannot deadlock only if each locks in one order:
    asked for (3, 1), ``currents`` takes 1 before it waits for 3, and once 3's writer commits it
    reads 3 as committed."""
    async with settlement(settings, []):
        for i, n in enumerate((1, 3)):
            await seed(settings, n, i)
        async with admin(settings) as other, admin(settings) as ours, admin(settings) as watcher:
            writer = other.transaction()
            await writer.start()
            await other.execute("SELECT 1 FROM dvp_instructions WHERE matching_number = 3 FOR UPDATE")
            async with ours.transaction():
                read = asyncio.create_task(dvp_repo.currents(ours, [(3, 1), (1, 1)]))
                await support.eventually(lambda: waits_for_a_lock(watcher, ours))
                # while it waits for 3 it holds 1 already
                with pytest.raises(asyncpg.LockNotAvailableError):
                    async with watcher.transaction():
                        await watcher.execute(
                            "SELECT 1 FROM dvp_instructions WHERE matching_number = 1 FOR UPDATE NOWAIT"
                        )
                await other.execute("UPDATE dvp_attempts SET status = 'refused' WHERE matching_number = 3")
                await other.execute("UPDATE dvp_instructions SET in_flight = false WHERE matching_number = 3")
                await writer.commit()
                found = await read
    assert set(found) == {(1, 1), (3, 1)}
    assert (found[(3, 1)].status, found[(3, 1)].instruction.in_flight) == ("refused", False)
    assert (found[(1, 1)].status, found[(1, 1)].instruction.in_flight) == ("reserving", True)


async def test_currents_leaves_out_a_key_whose_instruction_or_attempt_is_missing(settings: Settings) -> None:
    async with settlement(settings, []):
        await seed(settings, 1, 0)
        await seed(settings, 2, 1, attempt=2)
        async with admin(settings) as c, c.transaction():
            found = await dvp_repo.currents(c, [(1, 1), (2, 1), (2, 2), (5, 1)])
            assert await dvp_repo.currents(c, []) == {}
    assert sorted(found) == [(1, 1), (2, 2)]
    assert found[(2, 2)].attempt.quantity == quantity_of(1) and found[(2, 2)].instruction.attempt == 2


async def test_attempt_endings_keep_a_reason_and_an_entry_not_given_and_set_ended_at_only_when_ended(
    settings: Settings,
) -> None:
    """The set-wise ``_END_ATTEMPTS`` keeps the single-row one's ``coalesce``: a reason or an entry
    not given keeps the attempt's own; ``ended_at`` is set by 'committed' and 'refused' only."""
    async with settlement(settings, []):
        for i, n in enumerate((1, 2, 3)):
            await seed(settings, n, i)
        async with admin(settings) as c:
            async with c.transaction():
                entry_ids = await repo.post_all(
                    c, [trade("1/1", "bob", "alice", 10), trade("2/1", "carol", "alice", 10)], datetime.now(UTC)
                )
            holds = {
                r["matching_number"]: r["hold_id"]
                for r in await c.fetch("SELECT matching_number, hold_id FROM dvp_attempts")
            }
            await c.execute("UPDATE dvp_attempts SET reason = 'lack_of_securities' WHERE matching_number = 2")
            async with c.transaction():
                await dvp_repo.consume_holds(
                    c,
                    [
                        dvp_repo.Consumed(1, 1, holds[1], entry_ids[0]),  # type: ignore[arg-type]
                        dvp_repo.Consumed(2, 1, holds[2], entry_ids[1]),  # type: ignore[arg-type]
                    ],
                )
                await dvp_repo.end_attempt(c, 3, 1, "refused", reason=DvpReason.CANCELLED_BY_PARTY)
            rows = {r["matching_number"]: dict(r) for r in await c.fetch("SELECT * FROM dvp_attempts")}
            assert (rows[1]["status"], rows[1]["entry_id"], rows[1]["reason"], rows[1]["ended_at"]) == (
                "committing",
                entry_ids[0],
                None,
                None,
            )
            assert (rows[2]["status"], rows[2]["entry_id"], rows[2]["reason"]) == (
                "committing",
                entry_ids[1],
                "lack_of_securities",  # kept
            )
            assert (rows[3]["status"], rows[3]["reason"]) == ("refused", "cancelled_by_party")
            assert rows[3]["ended_at"] is not None and rows[3]["entry_id"] is None
            held = {r["hold_id"]: (r["status"], r["entry_id"]) for r in await c.fetch("SELECT * FROM holds")}
            assert held[holds[1]] == ("consumed", entry_ids[0]) and held[holds[2]] == ("consumed", entry_ids[1])
            assert held[holds[3]] == ("placed", None)
            # the instruction and its attempt ended together: the entry given before stays
            instruction = (await dvp_repo.currents(c, [(1, 1)]))[(1, 1)].instruction
            async with c.transaction():
                await dvp_repo.end_instructions(c, [(instruction, dvp_repo.AttemptEnd(1, "committed"))])
            row = await c.fetchrow("SELECT * FROM dvp_attempts WHERE matching_number = 1")
            assert (row["status"], row["entry_id"]) == ("committed", entry_ids[0]) and row["ended_at"] is not None
