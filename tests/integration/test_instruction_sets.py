"""Settlement's ``settlement.instruction`` handler as a set (docs/netting.md, step 1), against the
real RabbitMQ and PostgreSQL: a group-committed batch of instructions is handed to the handler in
one call and leaves exactly the rows (dvp_instructions, dvp_attempts, holds, covers) and the
messages (statuses, ``securities.reserve`` with its quantity, each caused by its own delivery)
the same instructions leave handled one at a time — in particular where one instruction's
first attempt must see what the ones before it took: a standing cover running out mid-set, a
buy order's cover shared by two of its executions, a buyer short of cash beside one who is not.

The settlement agent is opened but not run: the tests take the instructions off its queue
themselves and settle them as one batch (``group_commit.settle_batch``, as its consumer does)
or one at a time (``Consumer.settle``). The two groups compared live side by side in one
database on accounts of their own (``bob-s`` for the set, ``bob-o`` for one by one, each the
same user's), so that neither's cash or covers are the other's.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from agents.settlement import app as settlement_app
from agents.settlement import dvp, dvp_repo
from agents.settlement.instructions import Attempt, Instruction
from agents.settlement.repo import PLACED_HOLDS
from broker.consumer import Settled
from broker.envelope import Sealed, seal
from broker.pki import KeyStore
from broker.runtime import AgentRuntime
from broker.settings import Settings
from broker.topology import Names
from schemas.dvp import (
    BookEntryLeg,
    CoverRequest,
    DvpReason,
    ProcessingStatus,
    SettlementInstruction,
    SettlementStatus,
    StandingCoverRequest,
)
from schemas.identity import EXCHANGE_ID, SETTLEMENT_ID
from tests import support
from tests.integration import set_kit
from tests.integration.test_set_based import admin, outcomes

Calls = list[list[int]]
SET, ALONE = "s", "o"  # the accounts' suffix for each group, and its matching numbers' base
BASE = {SET: 1000, ALONE: 2000}


@asynccontextmanager
async def settlement(settings: Settings, calls: Calls) -> AsyncIterator[AgentRuntime]:
    recorded = set_kit.recording(
        dvp.on_instruction, lambda messages: calls.append([m.matching_number for m in messages])
    )
    definition = set_kit.with_handlers(settlement_app.AGENT, {SettlementInstruction: recorded})
    async with AgentRuntime(definition, settings) as rt:
        yield rt


async def account(rt: AgentRuntime, user: str, tag: str, amount: int = 0) -> str:
    """``user``'s account of group ``tag``, with ``amount`` deposited."""
    account_id = f"{user}-{tag}"
    await rt.command("settlement", settlement_app.open_account(account_id, user))
    if amount:
        await rt.command("settlement", settlement_app.deposit(account_id, Decimal(amount), f"initial-{account_id}"))
    return account_id


def today() -> date:
    return datetime.now(UTC).date()


def by_exchange(keys: KeyStore, message: Any) -> Sealed:
    return seal(keys.load_identity(EXCHANGE_ID), message, recipient=SETTLEMENT_ID, now=datetime.now(UTC))


@dataclass(frozen=True)
class Trade:
    """One execution's instruction, the same for both groups but for its accounts and number."""

    buyer: str
    seller: str
    quantity: int
    price: str
    cover: str | None = None  # a cover's name in the scenario
    partial: bool = False
    days_ahead: int = 0  # its intended settlement date, from today
    boxed_by: str | None = None  # the buyer's account sealed by this user instead: it does not open
    again: int | None = None  # the matching number of the trade at this place, recorded already

    def sealed(self, keys: KeyStore, tag: str, place: int, covers: dict[str, uuid.UUID]) -> Sealed:
        number = BASE[tag] + (place if self.again is None else self.again)
        price = Decimal(self.price)
        message = SettlementInstruction(
            matching_number=number,
            trade_date=today(),
            intended_settlement_date=today() + timedelta(days=self.days_ahead),
            issue_code=support.ISSUE,
            quantity=self.quantity,
            price=price,
            amount=price * self.quantity,
            buyer_user_id=self.buyer,
            buyer_account=support.account_box(keys, self.boxed_by or self.buyer, f"{self.buyer}-{tag}"),
            seller_user_id=self.seller,
            seller_account=support.account_box(keys, self.seller, f"{self.seller}-{tag}"),
            cover_id=covers[self.cover] if self.cover else None,
            partial_allowed=self.partial,
            securities=BookEntryLeg(
                agent="custody", deliverer_account=f"sk-{self.seller}", receiver_account=f"sk-{self.buyer}"
            ),
        )
        return by_exchange(keys, message)


def instructions(keys: KeyStore, tag: str, trades: Sequence[Trade], covers: dict[str, uuid.UUID]) -> list[Sealed]:
    return [t.sealed(keys, tag, place, covers) for place, t in enumerate(trades)]


def inbox(names: Names) -> str:
    return names.inbox(SETTLEMENT_ID)


async def as_one_batch(settings: Settings, rt: AgentRuntime, sealed: Sequence[Sealed]) -> list[Settled]:
    return await set_kit.as_one_batch(settings, rt, sealed, inbox)


async def one_at_a_time(settings: Settings, rt: AgentRuntime, sealed: Sequence[Sealed]) -> list[Settled]:
    return await set_kit.one_at_a_time(settings, rt, sealed, inbox)


async def standing_cover(
    settings: Settings, rt: AgentRuntime, keys: KeyStore, user: str, tag: str, amount: int
) -> uuid.UUID:
    """A standing cover of ``amount`` on ``user``'s account of group ``tag``, granted."""
    request = StandingCoverRequest(
        cover_id=uuid.uuid4(),
        user_id=user,
        account=support.account_box(keys, user, f"{user}-{tag}"),
        amount=Decimal(amount),
    )
    return await granted(settings, rt, by_exchange(keys, request), request.cover_id)


async def order_cover(
    settings: Settings, rt: AgentRuntime, keys: KeyStore, user: str, tag: str, quantity: int, unit_price: int
) -> uuid.UUID:
    """A buy order's cover for ``quantity`` at ``unit_price`` on ``user``'s account of group ``tag``."""
    request = CoverRequest(
        cover_id=uuid.uuid4(),
        user_id=user,
        client_order_id=f"buy-{tag}",
        quantity=quantity,
        unit_price=Decimal(unit_price),
        amount=Decimal(quantity * unit_price),
        account=support.account_box(keys, user, f"{user}-{tag}"),
    )
    return await granted(settings, rt, by_exchange(keys, request), request.cover_id)


async def granted(settings: Settings, rt: AgentRuntime, sealed: Sealed, cover_id: uuid.UUID) -> uuid.UUID:
    assert outcomes(await one_at_a_time(settings, rt, [sealed])) == ["processed"]
    async with admin(settings) as c:
        assert await c.fetchval("SELECT status FROM covers WHERE cover_id = $1", cover_id) == "active"
    return cover_id


# -- what a group of instructions left ------------------------------------------------------------


async def snapshot(
    settings: Settings, tag: str, numbers: Sequence[int], sealed: Sequence[Sealed], covers: dict[str, uuid.UUID]
) -> dict[str, Any]:
    """Every row and emitted message the instructions ``sealed`` (to ``numbers``) of group ``tag``
    left, its matching numbers, accounts and covers replaced by their place, owner and name, so
    that two groups compare equal if and only if they were handled alike."""
    index = {n: i for i, n in enumerate(numbers)}
    name_of = {cover_id: name for name, cover_id in covers.items()}
    suffix = f"-{tag}"

    def owner(account_id: str) -> str:
        if not account_id:  # a box that did not open
            return account_id
        assert account_id.endswith(suffix), account_id
        return account_id.removesuffix(suffix)

    async with admin(settings) as c:
        instruction_rows = []
        for r in await c.fetch(
            """SELECT matching_number, trade_date, intended_settlement_date, issue_code, quantity, price, amount,
                      currency, buyer_user_id, buyer_account, seller_user_id, seller_account, cover_id,
                      partial_allowed, securities, leg_agent, processing, matching, settlement, reason, detail,
                      settled_quantity, settled_amount, attempt, in_flight, cancel_by_buyer, cancel_by_seller,
                      jsonb_typeof(securities) AS securities_type
               FROM dvp_instructions WHERE matching_number = ANY($1::bigint[]) ORDER BY matching_number""",
            list(numbers),
        ):
            row = dict(r)
            row["matching_number"] = index[row["matching_number"]]
            row["buyer_account"], row["seller_account"] = owner(row["buyer_account"]), owner(row["seller_account"])
            row["cover_id"] = name_of.get(row["cover_id"], row["cover_id"])
            row["securities"] = json.loads(row["securities"])
            instruction_rows.append(row)
        attempts = [
            {**dict(r), "matching_number": index[r["matching_number"]]}
            for r in await c.fetch(
                """SELECT matching_number, attempt, quantity, amount, from_cover, status, reason, entry_id,
                          ended_at IS NOT NULL AS ended
                   FROM dvp_attempts WHERE matching_number = ANY($1::bigint[]) ORDER BY matching_number, attempt""",
                list(numbers),
            )
        ]
        earmarks = [
            {**dict(r), "matching_number": index[r["matching_number"]], "account_id": owner(r["account_id"])}
            for r in await c.fetch(
                """SELECT a.matching_number, a.attempt, h.account_id, h.owner, h.amount, h.status,
                          h.closed_at IS NOT NULL AS closed, h.entry_id
                   FROM holds h JOIN dvp_attempts a USING (hold_id)
                   WHERE a.matching_number = ANY($1::bigint[]) ORDER BY a.matching_number, a.attempt""",
                list(numbers),
            )
        ]
        cover_rows = [
            {**dict(r), "cover_id": name_of[r["cover_id"]], "account_id": owner(r["account_id"])}
            for r in await c.fetch(
                """SELECT cover_id, kind, account_id, quantity, remaining, unit_price, amount, unspent, status,
                          released_at IS NOT NULL AS released
                   FROM covers WHERE cover_id = ANY($1::uuid[])""",
                list(covers.values()),
            )
        ]
        cover_holds = [
            {**dict(r), "hold_id": name_of[r["hold_id"]], "account_id": owner(r["account_id"])}
            for r in await c.fetch(
                """SELECT hold_id, account_id, owner, amount, status, closed_at IS NOT NULL AS closed
                   FROM holds WHERE hold_id = ANY($1::uuid[])""",
                list(covers.values()),
            )
        ]
        held = {
            owner(r["key"]): r["amount"]
            for r in await c.fetch(
                f"SELECT key, amount FROM ({PLACED_HOLDS.kept}) AS t WHERE key LIKE $1 ORDER BY key", f"%{suffix}"
            )
        }
        emitted = await set_kit.caused(c, sealed, lambda payload: _normal(payload, index))
    in_order = lambda r: (r["matching_number"], r.get("attempt", 0))  # noqa: E731 — by place in the group
    return {
        "instructions": sorted(instruction_rows, key=in_order),
        "attempts": sorted(attempts, key=in_order),
        "earmarks": sorted(earmarks, key=in_order),
        "covers": sorted(cover_rows, key=lambda r: r["cover_id"]),
        "cover_holds": sorted(cover_holds, key=lambda r: r["hold_id"]),
        "held": held,
        "emitted": emitted,
    }


def _normal(value: Any, index: dict[int, int]) -> Any:
    if isinstance(value, dict):
        return {
            key: f"#{index.get(item, item)}" if key in ("instruction", "matching_number") else _normal(item, index)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_normal(item, index) for item in value]
    return value


def comparable(snap: dict[str, Any]) -> dict[str, Any]:
    """``snap`` but for the amount a released cover hold row kept, which a set leaves other than one
    by one does (test_a_cover_released_mid_set_keeps_the_amount_one_by_one_leaves on its hold row)."""
    holds = [{**h, "amount": h["amount"] if h["status"] == "placed" else "released"} for h in snap["cover_holds"]]
    return {**snap, "cover_holds": holds}


def emitted_types(snap: dict[str, Any], item: int) -> list[str]:
    """The types of what ``item`` caused, sorted: a batch's messages to one queue travel together,
    so one item's messages to two queues are stored in no order of theirs (``set_kit.caused``)."""
    return sorted(e[1] for e in snap["emitted"] if e[0] == item)


def reserves(snap: dict[str, Any]) -> dict[int, int]:
    """The quantity each item's ``securities.reserve`` asked for."""
    return {e[0]: e[4]["quantity"] for e in snap["emitted"] if e[1] == "securities.reserve"}


def states(snap: dict[str, Any]) -> list[tuple[str, str, str | None, int, bool]]:
    return [(r["processing"], r["settlement"], r["reason"], r["attempt"], r["in_flight"]) for r in snap["instructions"]]


def numbers_of(tag: str, trades: Sequence[Trade]) -> list[int]:
    return [BASE[tag] + (place if t.again is None else t.again) for place, t in enumerate(trades)]


# -- 1. a standing cover running out mid-set ------------------------------------------------------

# bob: 330,000 on the account, 250,000 of it held by the standing cover "sc": 80,000 free.
RUNNING_OUT = [
    Trade("bob", "alice", 100, "1000", cover="sc"),  # 100,000 off the cover: 150,000 left on it
    Trade("bob", "alice", 60, "1500", cover="sc"),  # 90,000 off the cover: 60,000 left
    Trade("bob", "alice", 150, "800", cover="sc"),  # the cover's last 60,000 (75 shares), 60,000 free
    Trade("bob", "alice", 100, "1000", cover="sc"),  # 20,000 free: waits for cash
    Trade("bob", "alice", 100, "700", cover="sc", partial=True),  # 28 shares of it (19,600)
    Trade("bob", "alice", 1, "400"),  # no cover: the last 400 free, the spent cover holding nothing
]


async def test_a_standing_cover_running_out_mid_set_is_drawn_on_as_one_by_one(
    settings: Settings, keys: KeyStore
) -> None:
    calls: Calls = []
    async with settlement(settings, calls) as rt:
        covers: dict[str, dict[str, uuid.UUID]] = {}
        for tag in (SET, ALONE):
            await account(rt, "bob", tag, 330_000)
            await account(rt, "alice", tag)
            covers[tag] = {"sc": await standing_cover(settings, rt, keys, "bob", tag, 250_000)}
        as_set = instructions(keys, SET, RUNNING_OUT, covers[SET])
        alone = instructions(keys, ALONE, RUNNING_OUT, covers[ALONE])

        assert outcomes(await as_one_batch(settings, rt, as_set)) == ["processed"] * 6
        assert calls == [numbers_of(SET, RUNNING_OUT)]  # one call for the six
        calls.clear()
        assert outcomes(await one_at_a_time(settings, rt, alone)) == ["processed"] * 6
        assert calls == [[n] for n in numbers_of(ALONE, RUNNING_OUT)]

        in_set = await snapshot(settings, SET, numbers_of(SET, RUNNING_OUT), as_set, covers[SET])
        one_by_one = await snapshot(settings, ALONE, numbers_of(ALONE, RUNNING_OUT), alone, covers[ALONE])
    assert comparable(in_set) == comparable(one_by_one)
    # and what both left is what the cover and the free balance allow, in the instructions' order
    assert states(in_set) == [
        ("accepted", "pending", None, 1, True),
        ("accepted", "pending", None, 1, True),
        ("accepted", "pending", None, 1, True),
        ("accepted", "pending", "lack_of_cash", 0, False),
        ("accepted", "pending", None, 1, True),
        ("accepted", "pending", None, 1, True),
    ]
    assert [(a["matching_number"], a["quantity"], a["amount"], a["from_cover"]) for a in in_set["attempts"]] == [
        (0, 100, Decimal(100_000), 100),
        (1, 60, Decimal(90_000), 60),
        (2, 150, Decimal(120_000), 75),
        (4, 28, Decimal(19_600), 0),
        (5, 1, Decimal(400), 0),
    ]
    assert [(h["amount"], h["status"]) for h in in_set["earmarks"]] == [
        (Decimal(100_000), "placed"),
        (Decimal(90_000), "placed"),
        (Decimal(120_000), "placed"),
        (Decimal(19_600), "placed"),
        (Decimal(400), "placed"),
    ]
    [cover] = in_set["covers"]
    assert (cover["unspent"], cover["status"]) == (Decimal(0), "active")
    [cover_hold] = in_set["cover_holds"]
    assert (cover_hold["status"], cover_hold["closed"]) == ("released", True)
    assert in_set["held"] == {"bob": Decimal(330_000)}  # all of it
    assert reserves(in_set) == {0: 100, 1: 60, 2: 150, 4: 28, 5: 1}
    announced = ["settlement.instruction.status"] * 3 + ["settlement.instruction.status_changed"]
    assert emitted_types(in_set, 3) == sorted(announced * 2)  # received, then pending for lack of cash
    for item in (0, 1, 2, 4, 5):
        assert emitted_types(in_set, item) == sorted([*announced, "securities.reserve"])


# -- 1b. the round trips of a set's writes ---------------------------------------------------------

# Two executions drawing on the standing cover "sc" (600,000 of bob's 700,000), and two on free cash.
ON_THE_COVER = [Trade("bob", "alice", 100, "1000", cover="sc"), Trade("bob", "alice", 60, "1500", cover="sc")]
OFF_THE_COVER = [Trade("bob", "alice", 1, "400"), Trade("bob", "alice", 1, "500")]


async def test_a_cover_costs_a_set_one_round_trip_its_lock_its_save_riding_with_the_attempts(
    settings: Settings, keys: KeyStore
) -> None:
    """The covers a set drew on are saved in the statement that starts its attempts
    (``dvp_repo.covers_saved`` riding in ``start_attempts``), not in one more round trip each
    (docs/performance.md, stop 42): a set drawing on a cover runs one statement more than the same
    set on free cash, the cover's lock."""
    calls: Calls = []
    async with settlement(settings.with_(statement_census=True), calls) as rt:
        await account(rt, "bob", SET, 700_000)
        await account(rt, "alice", SET)
        covers = {"sc": await standing_cover(settings, rt, keys, "bob", SET, 600_000)}
        statements = []
        # the first set warms the connection (asyncpg's introspection of the types it meets first)
        for trades, base in ((ON_THE_COVER, 20), (ON_THE_COVER, 0), (OFF_THE_COVER, 10)):
            sealed = [t.sealed(keys, SET, base + place, covers) for place, t in enumerate(trades)]
            before = support.census("settlement", "")
            assert outcomes(await as_one_batch(settings, rt, sealed)) == ["processed"] * 2
            statements.append(support.census("settlement", "") - before)
        drawn = await rt.pool.fetchval("SELECT unspent FROM covers WHERE cover_id = $1", covers["sc"])
    assert len(calls) == 3
    _, on_the_cover, off_the_cover = statements
    assert on_the_cover - off_the_cover == 1, statements
    assert drawn == Decimal(600_000 - 2 * (100_000 + 90_000))


async def test_a_cover_released_mid_set_keeps_the_amount_one_by_one_leaves(settings: Settings, keys: KeyStore) -> None:
    """One by one, the instruction that takes a cover's last cash releases its hold row keeping
    what the row held then (``save_cover`` keeps ``holds.amount`` on release): here 60,000. The set
    writes the cover once, at its end (``_Attempts.write``), so the released row keeps what it held
    before the set — 250,000 — and the holds table differs from one by one's."""
    calls: Calls = []
    async with settlement(settings, calls) as rt:
        covers: dict[str, dict[str, uuid.UUID]] = {}
        for tag in (SET, ALONE):
            await account(rt, "bob", tag, 330_000)
            await account(rt, "alice", tag)
            covers[tag] = {"sc": await standing_cover(settings, rt, keys, "bob", tag, 250_000)}
        trades = RUNNING_OUT[:3]
        as_set = instructions(keys, SET, trades, covers[SET])
        alone = instructions(keys, ALONE, trades, covers[ALONE])
        assert outcomes(await as_one_batch(settings, rt, as_set)) == ["processed"] * 3
        assert outcomes(await one_at_a_time(settings, rt, alone)) == ["processed"] * 3
        in_set = await snapshot(settings, SET, numbers_of(SET, trades), as_set, covers[SET])
        one_by_one = await snapshot(settings, ALONE, numbers_of(ALONE, trades), alone, covers[ALONE])
    assert [(h["status"], h["amount"]) for h in one_by_one["cover_holds"]] == [("released", Decimal(60_000))]
    assert in_set["cover_holds"] == one_by_one["cover_holds"]


# -- 2. a buy order's cover shared by two of its executions ---------------------------------------

# bob: 310,000 on the account, 300,000 of it held by the buy order's cover "oc" (300 at 1,000).
SHARED = [
    Trade("bob", "alice", 20, "500"),  # no cover: the 10,000 free
    Trade("bob", "alice", 100, "990", cover="oc"),  # off the cover: 200 left on it, 1,000 freed
    Trade("bob", "alice", 200, "1000", cover="oc"),  # the cover's last 200 shares
    Trade("bob", "alice", 10, "100"),  # no cover: the 1,000 the first execution freed
    Trade("bob", "alice", 1, "100"),  # nothing free: waits for cash
]


async def test_a_buy_orders_cover_shared_by_two_executions_in_one_set_is_drawn_on_as_one_by_one(
    settings: Settings, keys: KeyStore
) -> None:
    calls: Calls = []
    async with settlement(settings, calls) as rt:
        covers: dict[str, dict[str, uuid.UUID]] = {}
        for tag in (SET, ALONE):
            await account(rt, "bob", tag, 310_000)
            await account(rt, "alice", tag)
            covers[tag] = {"oc": await order_cover(settings, rt, keys, "bob", tag, 300, 1000)}
        as_set = instructions(keys, SET, SHARED, covers[SET])
        alone = instructions(keys, ALONE, SHARED, covers[ALONE])

        assert outcomes(await as_one_batch(settings, rt, as_set)) == ["processed"] * 5
        assert calls == [numbers_of(SET, SHARED)]
        assert outcomes(await one_at_a_time(settings, rt, alone)) == ["processed"] * 5

        in_set = await snapshot(settings, SET, numbers_of(SET, SHARED), as_set, covers[SET])
        one_by_one = await snapshot(settings, ALONE, numbers_of(ALONE, SHARED), alone, covers[ALONE])
    assert comparable(in_set) == comparable(one_by_one)
    assert [r["reason"] for r in in_set["instructions"]] == [None, None, None, None, "lack_of_cash"]
    assert [(a["matching_number"], a["quantity"], a["amount"], a["from_cover"]) for a in in_set["attempts"]] == [
        (0, 20, Decimal(10_000), 0),
        (1, 100, Decimal(99_000), 100),
        (2, 200, Decimal(200_000), 200),
        (3, 10, Decimal(1_000), 0),
    ]
    [cover] = in_set["covers"]
    assert (cover["remaining"], cover["status"]) == (0, "active")
    assert [h["status"] for h in in_set["cover_holds"]] == ["released"]
    assert in_set["held"] == {"bob": Decimal(310_000)}
    assert reserves(in_set) == {0: 20, 1: 100, 2: 200, 3: 10}


# -- 3. two buyers, a box that does not open, a repeat and a later date in one set ---------------

PRE = Trade("carol", "alice", 10, "1000")  # recorded (and attempted) before the set, as number 50
MIXED = [
    Trade("carol", "alice", 100, "1000"),  # carol: 1,000,000 − 10,000 held for PRE: pays
    Trade("bob", "alice", 100, "1000"),  # bob: 50,000: waits for cash
    Trade("bob", "alice", 30, "1000", boxed_by="carol"),  # bob's account sealed by carol: rejected
    Trade("carol", "alice", 999, "1000", again=50),  # PRE's number under another message: repeated
    Trade("carol", "alice", 50, "2000", days_ahead=3),  # settles in three days: waits for its date
    Trade("bob", "alice", 40, "1000"),  # bob pays 40,000 of his 50,000
    Trade("bob", "alice", 20, "1000", partial=True),  # 10 of them, with the 10,000 left
    Trade("carol", "alice", 200, "4000"),  # carol pays 800,000 of the 890,000 free
    Trade("carol", "alice", 100, "1000"),  # 90,000 free: waits for cash
]


async def test_two_buyers_a_rejection_a_repeat_and_a_later_date_in_one_set_leave_what_one_by_one_leaves(
    settings: Settings, keys: KeyStore
) -> None:
    calls: Calls = []
    async with settlement(settings, calls) as rt:
        pre: dict[str, Sealed] = {}
        for tag in (SET, ALONE):
            await account(rt, "bob", tag, 50_000)
            await account(rt, "carol", tag, 1_000_000)
            await account(rt, "alice", tag)
            pre[tag] = PRE.sealed(keys, tag, 50, {})
            assert outcomes(await one_at_a_time(settings, rt, [pre[tag]])) == ["processed"]
        calls.clear()
        as_set = instructions(keys, SET, MIXED, {})
        alone = instructions(keys, ALONE, MIXED, {})

        assert outcomes(await as_one_batch(settings, rt, as_set)) == ["processed"] * 9
        assert calls == [numbers_of(SET, MIXED)]
        assert outcomes(await one_at_a_time(settings, rt, alone)) == ["processed"] * 9

        in_set = await snapshot(settings, SET, numbers_of(SET, MIXED), as_set, {})
        one_by_one = await snapshot(settings, ALONE, numbers_of(ALONE, MIXED), alone, {})
        assert in_set == one_by_one
        assert [(r["processing"], r["settlement"], r["reason"], r["in_flight"]) for r in in_set["instructions"]] == [
            ("accepted", "pending", None, True),
            ("accepted", "pending", "lack_of_cash", False),
            ("rejected", "failed", "sealed_field_invalid", False),
            ("accepted", "pending", None, True),  # PRE's own row: the repeat wrote nothing
            ("accepted", "pending", "awaiting_settlement_date", False),
            ("accepted", "pending", None, True),
            ("accepted", "pending", None, True),
            ("accepted", "pending", None, True),
            ("accepted", "pending", "lack_of_cash", False),
        ]
        assert in_set["instructions"][3]["quantity"] == 10 and in_set["instructions"][3]["buyer_account"] == "carol"
        assert [(a["matching_number"], a["quantity"]) for a in in_set["attempts"]] == [
            (0, 100),
            (3, 10),  # PRE's, from before the set
            (5, 40),
            (6, 10),
            (7, 200),
        ]
        assert in_set["held"] == {"bob": Decimal(50_000), "carol": Decimal(910_000)}
        assert reserves(in_set) == {0: 100, 5: 40, 6: 10, 7: 200}
        assert emitted_types(in_set, 3) == []  # the repeat: nothing sent
        announced = ["settlement.instruction.status"] * 3 + ["settlement.instruction.status_changed"]
        assert emitted_types(in_set, 2) == sorted(announced)  # rejected: said once, nothing asked of custody
        to_exchange = [(e[0], e[4]["status"]["reason"]) for e in in_set["emitted"] if e[3] == EXCHANGE_ID]
        assert (2, "sealed_field_invalid") in to_exchange and (4, "awaiting_settlement_date") in to_exchange

        # the single path (``attempt``, by recycling) after money arrived: bob's waiting
        # instruction is attempted on what the set left, as on what one by one left
        for tag in (SET, ALONE):
            await rt.command("settlement", settlement_app.deposit(f"bob-{tag}", Decimal(100_000), f"more-bob-{tag}"))
        recycled = await rt.command("settlement", lambda ctx: dvp.recycle(ctx, today(), 5))
        assert recycled == {"attempted": 2, "failed": 0, "waiting": 2}  # bob's, each group; carol's waits
        after_set = await snapshot(settings, SET, numbers_of(SET, MIXED), as_set, {})
        after_alone = await snapshot(settings, ALONE, numbers_of(ALONE, MIXED), alone, {})
    assert after_set == after_alone
    assert [(a["matching_number"], a["quantity"]) for a in after_set["attempts"]][1] == (1, 100)
    assert after_set["held"]["bob"] == Decimal(150_000)


# -- 4. a redelivered batch ------------------------------------------------------------------------


async def test_a_redelivered_set_of_instructions_is_absorbed_and_a_new_one_beside_it_sees_what_it_left(
    settings: Settings, keys: KeyStore
) -> None:
    calls: Calls = []
    async with settlement(settings, calls) as rt:
        await account(rt, "bob", SET, 330_000)
        await account(rt, "alice", SET)
        covers = {"sc": await standing_cover(settings, rt, keys, "bob", SET, 250_000)}
        sealed = instructions(keys, SET, RUNNING_OUT, covers)
        first, fourth = sealed[:3], sealed[3]
        numbers = numbers_of(SET, RUNNING_OUT)[:4]
        assert outcomes(await as_one_batch(settings, rt, first)) == ["processed"] * 3
        before = await snapshot(settings, SET, numbers, sealed[:4], covers)

        again = await as_one_batch(settings, rt, [*first, fourth, fourth])
        assert outcomes(again) == ["duplicate", "duplicate", "duplicate", "processed", "duplicate"]
        assert calls == [numbers[:3], numbers[3:4]]
        after = await snapshot(settings, SET, numbers, sealed[:4], covers)
    # the three: not a row or a message more
    for part in ("attempts", "earmarks", "covers", "cover_holds", "held"):
        assert after[part] == before[part], part
    assert after["instructions"][:3] == before["instructions"][:3]
    assert [e for e in after["emitted"] if e[0] < 3] == before["emitted"]
    # the fourth waits for cash on what the three left (the cover spent, 20,000 free)
    assert after["instructions"][3]["reason"] == "lack_of_cash" and not after["instructions"][3]["in_flight"]
    assert emitted_types(after, 3) == sorted(
        (["settlement.instruction.status"] * 3 + ["settlement.instruction.status_changed"]) * 2
    )


# -- the in-memory bookkeeping and the set-wise SQL -----------------------------------------------


async def in_database(c: Any, account_id: str, excluding: uuid.UUID | None) -> Decimal:
    """What placed holds keep on the account but for the hold ``excluding``, as the database says
    it: the running total less that hold's placed row (what ``held_on`` read before the set), and
    the same summed over the rows themselves."""
    total: Decimal = await c.fetchval(
        f"""SELECT {PLACED_HOLDS.of("$1")}
                   - coalesce((SELECT amount FROM holds
                                WHERE hold_id = $2 AND account_id = $1 AND status = 'placed'), 0)""",
        account_id,
        excluding,
    )
    summed = await c.fetchval(
        """SELECT coalesce(sum(amount), 0) FROM holds
           WHERE account_id = $1 AND status = 'placed' AND hold_id IS DISTINCT FROM $2""",
        account_id,
        excluding,
    )
    assert total == summed
    return total


async def test_held_kept_in_memory_says_after_each_write_what_the_database_says(settings: Settings) -> None:
    """``Held`` as ``_Attempts`` keeps it — ``cover_saved`` after a cover is drawn on, given back or
    released, ``placed`` after an earmark — against what the database says after the same write
    (``in_database``; ``held_on`` itself now goes through ``Held``), one write at a time: a cover
    drawn down, run out (its row released), given back (placed again), released while holding; a
    buy order's cover emptied."""
    async with settlement(settings, []) as rt:
        bob = await account(rt, "bob", "h", 1_000_000)
        async with admin(settings) as c, c.transaction():
            standing = StandingCoverRequest(
                cover_id=uuid.uuid4(), user_id="bob", account=support.box(), amount=Decimal(250_000)
            )
            await dvp_repo.open_standing_cover(c, standing, bob)
            order = CoverRequest(
                cover_id=uuid.uuid4(),
                user_id="bob",
                client_order_id="buy-h",
                quantity=300,
                unit_price=Decimal(1000),
                amount=Decimal(300_000),
                account=support.box(),
            )
            await dvp_repo.open_cover(c, order, bob)
            covers = [standing.cover_id, order.cover_id]
            view = await dvp_repo.held(c, [bob], covers)

            async def agrees() -> None:
                assert view.on(bob) == await in_database(c, bob, None)
                for cover_id in covers:
                    assert view.on(bob, excluding=cover_id) == await in_database(c, bob, cover_id)

            await agrees()
            assert view.on(bob) == Decimal(550_000)

            async def saved(cover_id: uuid.UUID, change: Any) -> None:
                cover = await dvp_repo.cover(c, cover_id, lock=True)
                assert cover is not None
                cover = change(cover)
                await dvp_repo.save_cover(c, cover)
                view.cover_saved(cover)
                await agrees()

            number = 7000

            async def earmarked(amount: int) -> None:
                nonlocal number
                number += 1
                i = Instruction(
                    number, today(), today(), "KBT", 1, Decimal(amount), Decimal(amount), "JPY", "bob", bob,
                    "alice", "alice-h", None, False, "custody", ProcessingStatus.ACCEPTED,
                )  # fmt: skip
                leg = BookEntryLeg(agent="custody", deliverer_account="sk-a", receiver_account="sk-b")
                assert await dvp_repo.insert_instructions(c, [(i, leg, uuid.uuid4())]) == {number}
                plan = Attempt(1, 1, Decimal(amount), 0)
                await dvp_repo.start_attempts(
                    c, [dvp_repo.Started(replace(i, attempt=1, in_flight=True), plan, uuid.uuid4())]
                )
                view.placed(bob, Decimal(amount))
                await agrees()

            await saved(standing.cover_id, lambda cover: cover.taken(100, Decimal(1000)))  # 150,000 left
            await earmarked(100_000)
            await saved(standing.cover_id, lambda cover: cover.taken(150, Decimal(1000)))  # run out: released
            await earmarked(150_000)
            await saved(standing.cover_id, lambda cover: cover.given_back(40, Decimal(1000)))  # placed again
            await saved(order.cover_id, lambda cover: cover.taken(300, Decimal(990)))  # emptied: released
            await earmarked(297_000)
            await saved(order.cover_id, lambda cover: replace(cover, active=False))  # released, holding nothing
            await saved(standing.cover_id, lambda cover: replace(cover, active=False))  # released holding 40,000
            assert view.on(bob) == Decimal(547_000)


async def test_insert_instructions_stores_every_column_of_each_and_returns_only_those_it_recorded(
    settings: Settings,
) -> None:
    """The unnest's casts against the columns (``numeric(20,4)``, ``character(3)``, ``jsonb``,
    ``uuid``, ``date``): each instruction reads back as it was given, its leg a JSON object that
    ``attempt`` parses again, its own request id; one already recorded is left as it was."""
    async with settlement(settings, []), admin(settings) as c:
        leg = BookEntryLeg(agent="custody", deliverer_account="sk-alice", receiver_account="sk-bob")
        first = Instruction(
            matching_number=8001,
            trade_date=today() - timedelta(days=2),
            intended_settlement_date=today() + timedelta(days=1),
            issue_code="KBT",
            quantity=3,
            price=Decimal("1234.5678"),
            amount=Decimal("3703.7034"),
            currency="JPY",
            buyer_user_id="bob",
            buyer_account="bob-x",
            seller_user_id="alice",
            seller_account="alice-x",
            cover_id=uuid.uuid4(),
            partial_allowed=True,
            leg_agent="custody",
            processing=ProcessingStatus.REJECTED,
            settlement=SettlementStatus.FAILED,
            reason=DvpReason.UNKNOWN_ACCOUNT,
            detail="the buyer's settlement account is unknown",
        )
        second = replace(
            first, matching_number=8002, cover_id=None, partial_allowed=False, reason=None, detail="",
            processing=ProcessingStatus.ACCEPTED, settlement=SettlementStatus.PENDING, quantity=10**9,
            price=Decimal(1), amount=Decimal(10**9),
        )  # fmt: skip
        requests = [uuid.uuid4(), uuid.uuid4()]
        async with c.transaction():
            assert await dvp_repo.insert_instructions(c, [(first, leg, requests[0]), (second, leg, requests[1])]) == {
                8001,
                8002,
            }
        for instruction, request_id in zip((first, second), requests, strict=True):
            assert await dvp_repo.instruction(c, instruction.matching_number) == instruction
            row = await c.fetchrow(
                "SELECT request_id, jsonb_typeof(securities) AS t FROM dvp_instructions WHERE matching_number = $1",
                instruction.matching_number,
            )
            assert (row["request_id"], row["t"]) == (request_id, "object")
            assert dvp.LEG.validate_json(await dvp_repo.securities_leg(c, instruction.matching_number)) == leg
        async with c.transaction():
            third = replace(second, matching_number=8003)
            changed = replace(first, quantity=99, amount=first.price * 99)
            assert await dvp_repo.insert_instructions(
                c, [(changed, leg, uuid.uuid4()), (third, leg, uuid.uuid4())]
            ) == {8003}
        assert await dvp_repo.instruction(c, 8001) == first
        assert await dvp_repo.instruction(c, 8003) == third
