"""SQL for covers, settlement instructions, attempts and mandates; records never leave this module.

Covers and attempt earmarks are rows of ``holds`` (migration 0012): one sum gives every
account's held amount, so every debit sees ``available = balance − holds``.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from uuid import UUID

import asyncpg

from agents.settlement.instructions import Attempt, Cover, Instruction
from agents.settlement.repo import PLACED_HOLDS
from broker.db import Writes, verified
from broker.db import riding as riding_writes
from schemas.dvp import (
    CoverRequest,
    CoverRequestV1,
    DvpReason,
    MatchingStatus,
    ProcessingStatus,
    SecuritiesLeg,
    SettlementStatus,
    StandingCoverRequest,
)

# -- covers --------------------------------------------------------------------------------------


async def cover(connection: asyncpg.Connection, cover_id: UUID, *, lock: bool = False) -> Cover | None:
    row = await connection.fetchrow(
        "SELECT * FROM covers WHERE cover_id = $1" + (" FOR UPDATE" if lock else ""), cover_id
    )
    return _cover(row) if row else None


async def covers_for_update(connection: asyncpg.Connection, cover_ids: Collection[UUID]) -> dict[UUID, Cover]:
    """Several covers (those that exist), locked in id order, in one statement."""
    rows = await connection.fetch(
        "SELECT * FROM covers WHERE cover_id = ANY($1::uuid[]) ORDER BY cover_id FOR UPDATE", sorted(set(cover_ids))
    )
    return {row["cover_id"]: _cover(row) for row in rows}


def _cover(row: asyncpg.Record) -> Cover:
    active = row["status"] == "active"
    if row["kind"] == "standing":
        return Cover(row["cover_id"], row["user_id"], row["account_id"], 0, row["amount"], active, row["unspent"])
    return Cover(row["cover_id"], row["user_id"], row["account_id"], row["remaining"], row["unit_price"], active)


async def open_cover(connection: asyncpg.Connection, request: CoverRequest | CoverRequestV1, account_id: str) -> Cover:
    """A new active cover and its hold on the buyer's account (opened from its box), in one statement."""
    cover = Cover(request.cover_id, request.user_id, account_id, request.quantity, request.unit_price, True)
    await connection.execute(
        """WITH cover AS (
               INSERT INTO covers (cover_id, user_id, account_id, client_order_id, quantity, remaining, unit_price,
                   currency, status)
               VALUES ($1, $2, $3, $4, $5, $5, $6, $7, 'active')
               RETURNING cover_id, account_id, user_id)
           INSERT INTO holds (hold_id, account_id, owner, amount, status)
           SELECT cover_id, account_id, user_id, $8, 'placed' FROM cover""",
        request.cover_id,
        request.user_id,
        account_id,
        request.client_order_id,
        request.quantity,
        request.unit_price,
        request.currency,
        cover.held,
    )
    return cover


async def open_standing_cover(connection: asyncpg.Connection, request: StandingCoverRequest, account_id: str) -> None:
    """A new active standing cover, all of it unspent, and its hold, in one statement."""
    await connection.execute(
        """WITH cover AS (
               INSERT INTO covers (cover_id, user_id, account_id, kind, amount, unspent, currency, status)
               VALUES ($1, $2, $3, 'standing', $4, $4, $5, 'active')
               RETURNING cover_id, account_id, user_id)
           INSERT INTO holds (hold_id, account_id, owner, amount, status)
           SELECT cover_id, account_id, user_id, $4, 'placed' FROM cover""",
        request.cover_id,
        request.user_id,
        account_id,
        request.amount,
        request.currency,
    )


async def save_cover(connection: asyncpg.Connection, cover: Cover) -> None:
    """Store what is left of the cover (shares, or a standing cover's cash) and make its hold row
    say what it now holds, in one statement."""
    await covers_saved([cover]).execute(connection)


def covers_saved(covers: Sequence[Cover]) -> Writes:
    """``save_cover`` for several covers, one row each, as writes that can ride in another
    statement (``start_attempts``): a released cover's hold keeps the amount it last held."""
    return Writes(
        """cv AS (SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::numeric[], $5::numeric[],
                                        $6::bigint[], $7::numeric[], $8::text[])
                  AS cv (cover_id, account_id, owner, held, unit_price, remaining, unspent, status)),
           covered AS (
               UPDATE covers SET remaining = CASE WHEN kind = 'order' THEN cv.remaining END,
                   unspent = CASE WHEN kind = 'standing' THEN cv.unspent END, status = cv.status,
                   released_at = CASE WHEN cv.status = 'released' THEN now() ELSE released_at END
               FROM cv WHERE covers.cover_id = cv.cover_id),
           cover_holds AS (
               INSERT INTO holds (hold_id, account_id, owner, amount, status)
               SELECT cover_id, account_id, owner, CASE WHEN held > 0 THEN held ELSE unit_price END,
                      CASE WHEN held > 0 THEN 'placed' ELSE 'released' END FROM cv
               ON CONFLICT (hold_id, account_id) DO UPDATE SET
                   amount = CASE WHEN excluded.status = 'placed' THEN excluded.amount ELSE holds.amount END,
                   status = excluded.status,
                   closed_at = CASE WHEN excluded.status = 'placed' THEN NULL ELSE now() END)""",
        (
            [c.cover_id for c in covers],
            [c.account_id for c in covers],
            [c.user_id for c in covers],
            [c.held for c in covers],
            [c.unit_price for c in covers],
            [c.remaining for c in covers],
            [c.unspent for c in covers],
            ["active" if c.active else "released" for c in covers],
        ),
        what="covers saved",
    )


async def held_on(connection: asyncpg.Connection, account_id: str, *, excluding: UUID | None = None) -> Decimal:
    """What placed holds keep on the account (``repo.PLACED_HOLDS``), but for the hold ``excluding``."""
    view = await held(connection, [account_id], [excluding] if excluding else [])
    return view.on(account_id, excluding=excluding)


@dataclass(slots=True)
class Held:
    """What placed holds keep on some accounts, and the placed hold rows of some covers (by
    cover id and account): what the attempts of a set read once (``held``)."""

    totals: dict[str, Decimal]
    covers: dict[tuple[UUID, str], Decimal]

    def on(self, account_id: str, *, excluding: UUID | None = None) -> Decimal:
        """What placed holds keep on the account, but for the hold ``excluding``."""
        total = self.totals.get(account_id, Decimal(0))
        return total - (self.covers.get((excluding, account_id), Decimal(0)) if excluding else Decimal(0))

    def placed(self, account_id: str, amount: Decimal) -> None:
        """A new hold placed on the account (an attempt's earmark, ``start_attempts``)."""
        self.totals[account_id] = self.totals.get(account_id, Decimal(0)) + amount

    def cover_saved(self, cover: Cover) -> None:
        """The cover's hold as ``save_cover`` leaves it: placed for what the cover holds, released
        when it holds nothing."""
        key = (cover.cover_id, cover.account_id)
        now = cover.held if cover.held > 0 else Decimal(0)
        self.placed(cover.account_id, now - self.covers.get(key, Decimal(0)))
        self.covers[key] = now


async def held(connection: asyncpg.Connection, account_ids: Collection[str], cover_ids: Collection[UUID]) -> Held:
    """``Held`` for these accounts and covers, in one statement."""
    rows = await connection.fetch(
        f"""SELECT key AS account_id, NULL::uuid AS hold_id, amount FROM ({PLACED_HOLDS.each("$1::text[]")}) AS t
            UNION ALL
            SELECT account_id, hold_id, amount FROM holds WHERE hold_id = ANY($2::uuid[]) AND status = 'placed'""",
        sorted(set(account_ids)),
        sorted(set(cover_ids)),
    )
    view = Held({}, {})
    for row in rows:
        if row["hold_id"] is None:
            view.totals[row["account_id"]] = row["amount"]
        else:
            view.covers[(row["hold_id"], row["account_id"])] = row["amount"]
    return view


# -- instructions --------------------------------------------------------------------------------


async def insert_instructions(
    connection: asyncpg.Connection, received: Sequence[tuple[Instruction, SecuritiesLeg, UUID]]
) -> set[int]:
    """Record instructions of distinct matching numbers, in one statement; the matching numbers of
    those recorded (not of those already there)."""
    instructions = [i for i, _, _ in received]
    rows = await connection.fetch(
        """INSERT INTO dvp_instructions (matching_number, trade_date, intended_settlement_date, issue_code,
               quantity, price, amount, currency, buyer_user_id, buyer_account, seller_user_id, seller_account,
               cover_id, partial_allowed, securities, leg_agent, processing, matching, settlement, reason, detail,
               request_id)
           SELECT * FROM unnest($1::bigint[], $2::date[], $3::date[], $4::text[], $5::bigint[], $6::numeric[],
                                $7::numeric[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[],
                                $13::uuid[], $14::boolean[], $15::jsonb[], $16::text[], $17::text[], $18::text[],
                                $19::text[], $20::text[], $21::text[], $22::uuid[])
           ON CONFLICT (matching_number) DO NOTHING RETURNING matching_number""",
        [i.matching_number for i in instructions],
        [i.trade_date for i in instructions],
        [i.intended_settlement_date for i in instructions],
        [i.issue_code for i in instructions],
        [i.quantity for i in instructions],
        [i.price for i in instructions],
        [i.amount for i in instructions],
        [i.currency for i in instructions],
        [i.buyer_user_id for i in instructions],
        [i.buyer_account for i in instructions],
        [i.seller_user_id for i in instructions],
        [i.seller_account for i in instructions],
        [i.cover_id for i in instructions],
        [i.partial_allowed for i in instructions],
        [leg.model_dump_json() for _, leg, _ in received],
        [i.leg_agent for i in instructions],
        [i.processing.value for i in instructions],
        [i.matching.value for i in instructions],
        [i.settlement.value for i in instructions],
        [i.reason.value if i.reason else None for i in instructions],
        [i.detail for i in instructions],
        [request_id for _, _, request_id in received],
    )
    return {row["matching_number"] for row in rows}


# Attempts' new statuses, from the rows of ``v`` (matching_number, a_number, a_status, a_reason,
# a_entry_id); ``ended_at`` is set when an attempt ends either way.
_END_ATTEMPTS = """UPDATE dvp_attempts a SET status = v.a_status, reason = coalesce(v.a_reason, a.reason),
               entry_id = coalesce(v.a_entry_id, a.entry_id),
               ended_at = CASE WHEN v.a_status IN ('committed', 'refused') THEN now() ELSE a.ended_at END
           FROM v WHERE a.matching_number = v.matching_number AND a.attempt = v.a_number"""
_ENDINGS = """v AS (SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::bigint[])
               AS v (matching_number, a_number, a_status, a_reason, a_entry_id))"""


@dataclass(frozen=True, slots=True)
class AttemptEnd:
    """An attempt's new status, written with its instruction (``save_instruction``)."""

    number: int
    status: str
    reason: DvpReason | None = None
    entry_id: int | None = None


_SAVE_INSTRUCTION = """UPDATE dvp_instructions SET processing = $2, settlement = $3, reason = $4, detail = $5,
               settled_quantity = $6, settled_amount = $7, attempt = $8, in_flight = $9,
               cancel_by_buyer = $10, cancel_by_seller = $11, updated_at = now()
           WHERE matching_number = $1"""


def _saved(i: Instruction) -> tuple[object, ...]:
    """``_SAVE_INSTRUCTION``'s parameters $1–$11."""
    return (
        i.matching_number,
        i.processing.value,
        i.settlement.value,
        i.reason.value if i.reason else None,
        i.detail,
        i.settled_quantity,
        i.settled_amount,
        i.attempt,
        i.in_flight,
        i.cancel_by_buyer,
        i.cancel_by_seller,
    )


async def save_instruction(connection: asyncpg.Connection, i: Instruction, ending: AttemptEnd | None = None) -> None:
    """Store the instruction; with ``ending``, also its attempt's new status, in the same statement."""
    if ending is None:
        await connection.execute(_SAVE_INSTRUCTION, *_saved(i))
        return
    await end_instructions(connection, [(i, ending)])


# Instructions' new states, from the rows of ``i`` (``_saved``'s columns, parameters $6–$16).
_SAVED = """i AS (SELECT * FROM unnest($6::bigint[], $7::text[], $8::text[], $9::text[], $10::text[], $11::bigint[],
                                     $12::numeric[], $13::bigint[], $14::boolean[], $15::boolean[], $16::boolean[])
                 AS i (matching_number, processing, settlement, reason, detail, settled_quantity, settled_amount,
                       attempt, in_flight, cancel_by_buyer, cancel_by_seller)),
           saved AS (
               UPDATE dvp_instructions d SET processing = i.processing, settlement = i.settlement, reason = i.reason,
                   detail = i.detail, settled_quantity = i.settled_quantity, settled_amount = i.settled_amount,
                   attempt = i.attempt, in_flight = i.in_flight, cancel_by_buyer = i.cancel_by_buyer,
                   cancel_by_seller = i.cancel_by_seller, updated_at = now()
               FROM i WHERE d.matching_number = i.matching_number)"""


def _saved_set(instructions: Sequence[Instruction]) -> list[list[object]]:
    """``_SAVED``'s eleven arrays."""
    return [list(column) for column in zip(*(_saved(i) for i in instructions), strict=True)]


async def end_instructions(connection: asyncpg.Connection, ended: Sequence[tuple[Instruction, AttemptEnd]]) -> None:
    """Store each instruction with its attempt's new status: one statement for the set."""
    if not ended:
        return
    await connection.execute(
        f"WITH {_ENDINGS}, {_SAVED} {_END_ATTEMPTS}",
        *_endings([(i.matching_number, end) for i, end in ended]),
        *_saved_set([i for i, _ in ended]),
    )


def _endings(ended: Sequence[tuple[int, AttemptEnd]]) -> tuple[list[object], ...]:
    """``_ENDINGS``' five arrays."""
    return (
        [number for number, _ in ended],
        [end.number for _, end in ended],
        [end.status for _, end in ended],
        [end.reason.value if end.reason else None for _, end in ended],
        [end.entry_id for _, end in ended],
    )


async def instruction(
    connection: asyncpg.Connection, matching_number: int, *, lock: bool = False
) -> Instruction | None:
    row = await connection.fetchrow(
        "SELECT * FROM dvp_instructions WHERE matching_number = $1" + (" FOR UPDATE" if lock else ""),
        matching_number,
    )
    return _instruction(row) if row else None


async def securities_leg(connection: asyncpg.Connection, matching_number: int) -> str:
    leg: str = await connection.fetchval(
        "SELECT securities::text FROM dvp_instructions WHERE matching_number = $1", matching_number
    )
    return leg


async def instructions(
    connection: asyncpg.Connection, *, live_only: bool = False, limit: int = 200
) -> list[Instruction]:
    rows = await connection.fetch(
        """SELECT * FROM dvp_instructions
           WHERE NOT $1 OR (processing = 'accepted' AND settlement IN ('pending', 'partially_settled'))
           ORDER BY matching_number DESC LIMIT $2""",
        live_only,
        limit,
    )
    return [_instruction(r) for r in rows]


async def recyclable(connection: asyncpg.Connection, today: date) -> list[int]:
    """Live instructions due by ``today`` with no attempt under way, oldest first."""
    rows = await connection.fetch(
        """SELECT matching_number FROM dvp_instructions
           WHERE processing = 'accepted' AND settlement IN ('pending', 'partially_settled')
             AND NOT in_flight AND intended_settlement_date <= $1
           ORDER BY matching_number""",
        today,
    )
    return [r["matching_number"] for r in rows]


def _instruction(row: asyncpg.Record) -> Instruction:
    return Instruction(
        matching_number=row["matching_number"],
        trade_date=row["trade_date"],
        intended_settlement_date=row["intended_settlement_date"],
        issue_code=row["issue_code"],
        quantity=row["quantity"],
        price=row["price"],
        amount=row["amount"],
        currency=row["currency"],
        buyer_user_id=row["buyer_user_id"],
        buyer_account=row["buyer_account"],
        seller_user_id=row["seller_user_id"],
        seller_account=row["seller_account"],
        cover_id=row["cover_id"],
        partial_allowed=row["partial_allowed"],
        leg_agent=row["leg_agent"],
        processing=ProcessingStatus(row["processing"]),
        matching=MatchingStatus(row["matching"]),
        settlement=SettlementStatus(row["settlement"]),
        reason=DvpReason(row["reason"]) if row["reason"] else None,
        detail=row["detail"],
        settled_quantity=row["settled_quantity"],
        settled_amount=row["settled_amount"],
        attempt=row["attempt"],
        in_flight=row["in_flight"],
        cancel_by_buyer=row["cancel_by_buyer"],
        cancel_by_seller=row["cancel_by_seller"],
    )


# -- attempts ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Started:
    """An attempt started: the instruction as it now is, the attempt, and its earmark's id."""

    instruction: Instruction
    attempt: Attempt
    hold_id: UUID


async def start_attempts(
    connection: asyncpg.Connection, started: Sequence[Started], *, riding: Sequence[Writes] = ()
) -> None:
    """Each attempt, its earmark on the buyer's account and the instruction that started it, for
    several instructions, in one statement; with ``riding`` (the covers they drew on,
    ``covers_saved``) in the same round trip."""
    if not started:
        for writes in riding:
            await writes.execute(connection)
        return
    ctes, check, args = riding_writes(riding, 20)
    verified(
        await connection.fetchval(
            f"""WITH a AS (SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::numeric[], $5::uuid[],
                                                $17::bigint[], $18::text[], $19::text[])
                           AS a (matching_number, attempt, quantity, amount, hold_id, from_cover, account_id, owner)),
               {_SAVED},
               attempt AS (
                   INSERT INTO dvp_attempts (matching_number, attempt, quantity, amount, hold_id, from_cover, status)
                   SELECT matching_number, attempt, quantity, amount, hold_id, from_cover, 'reserving' FROM a),
               earmarks AS (
                   INSERT INTO holds (hold_id, account_id, owner, amount, status)
                   SELECT hold_id, account_id, owner, amount, 'placed' FROM a){ctes}
               SELECT {check}""",
            [s.instruction.matching_number for s in started],
            [s.attempt.number for s in started],
            [s.attempt.quantity for s in started],
            [s.attempt.amount for s in started],
            [s.hold_id for s in started],
            *_saved_set([s.instruction for s in started]),
            [s.attempt.from_cover for s in started],
            [s.instruction.buyer_account for s in started],
            [s.instruction.buyer_user_id for s in started],
            *args,
        ),
        riding,
    )


@dataclass(frozen=True, slots=True)
class Current:
    """An instruction and one of its attempts, both locked: what an answer to that attempt reads."""

    instruction: Instruction
    attempt: Attempt
    hold_id: UUID
    status: str
    entry_id: int | None


async def current(connection: asyncpg.Connection, matching_number: int, number: int) -> Current | None:
    """The instruction and its attempt ``number``, both locked; None if either is missing."""
    return (await currents(connection, [(matching_number, number)])).get((matching_number, number))


async def currents(connection: asyncpg.Connection, keys: Sequence[tuple[int, int]]) -> dict[tuple[int, int], Current]:
    """Each instruction with its attempt (matching number, attempt number), both locked, in one
    statement, by key; a key is missing where either row is. Both rows are locked so that, after
    waiting for a writer of either, the statement reads the versions it committed (a row read
    beside a locked one, unlocked, could be older); in matching-number order, so that two
    transactions locking several cannot deadlock."""
    rows = await connection.fetch(
        """SELECT i.*, a.attempt AS a_number, a.quantity AS a_quantity, a.amount AS a_amount,
                  a.from_cover AS a_from_cover, a.hold_id AS a_hold_id, a.status AS a_status,
                  a.entry_id AS a_entry_id
           FROM unnest($1::bigint[], $2::bigint[]) AS k (matching_number, attempt)
           JOIN dvp_instructions i ON i.matching_number = k.matching_number
           JOIN dvp_attempts a ON a.matching_number = k.matching_number AND a.attempt = k.attempt
           ORDER BY i.matching_number
           FOR UPDATE OF i, a""",
        [number for number, _ in keys],
        [attempt for _, attempt in keys],
    )
    found = {}
    for row in rows:
        plan = Attempt(row["a_number"], row["a_quantity"], row["a_amount"], row["a_from_cover"])
        current = Current(_instruction(row), plan, row["a_hold_id"], row["a_status"], row["a_entry_id"])
        found[(current.instruction.matching_number, plan.number)] = current
    return found


async def end_attempt(
    connection: asyncpg.Connection,
    matching_number: int,
    number: int,
    status: str,
    *,
    reason: DvpReason | None = None,
    entry_id: int | None = None,
) -> None:
    await connection.execute(
        f"WITH {_ENDINGS} {_END_ATTEMPTS}",
        *_endings([(matching_number, AttemptEnd(number, status, reason, entry_id))]),
    )


@dataclass(frozen=True, slots=True)
class Consumed:
    """An attempt's earmark that gives way to its posting ``entry_id``."""

    matching_number: int
    attempt: int
    hold_id: UUID
    entry_id: int


async def consume_holds(connection: asyncpg.Connection, consumed: Sequence[Consumed]) -> int:
    """Each attempt's earmark gives way to its posting, and the attempt goes on to commit the
    securities: one statement for the set. How many earmarks were still placed and are consumed."""
    if not consumed:
        return 0
    ends = [(c.matching_number, AttemptEnd(c.attempt, "committing", None, c.entry_id)) for c in consumed]
    count: int = await connection.fetchval(
        f"""WITH {_ENDINGS},
           consumed AS (
               UPDATE holds h SET status = 'consumed', closed_at = now(), entry_id = c.entry_id
               FROM unnest($6::uuid[], $7::bigint[]) AS c (hold_id, entry_id)
               WHERE h.hold_id = c.hold_id AND h.status = 'placed' RETURNING h.hold_id),
           ended AS ({_END_ATTEMPTS})
           SELECT count(*) FROM consumed""",
        *_endings(ends),
        [c.hold_id for c in consumed],
        [c.entry_id for c in consumed],
    )
    return count


async def close_hold(connection: asyncpg.Connection, hold_id: UUID, status: str, entry_id: int | None = None) -> None:
    await connection.execute(
        "UPDATE holds SET status = $2, closed_at = now(), entry_id = $3 WHERE hold_id = $1 AND status = 'placed'",
        hold_id,
        status,
        entry_id,
    )


async def attempts(connection: asyncpg.Connection, matching_number: int) -> list[dict[str, object]]:
    rows = await connection.fetch(
        "SELECT * FROM dvp_attempts WHERE matching_number = $1 ORDER BY attempt", matching_number
    )
    return [dict(r) for r in rows]


# -- mandates ------------------------------------------------------------------------------------


async def grant_mandate(connection: asyncpg.Connection, account_id: str, agent: str, granted_by: str) -> None:
    await connection.execute(
        """INSERT INTO mandates (account_id, agent, granted_by) VALUES ($1, $2, $3)
           ON CONFLICT (account_id, agent) DO UPDATE SET granted_by = $3, granted_at = now(), revoked_at = NULL""",
        account_id,
        agent,
        granted_by,
    )


async def revoke_mandate(connection: asyncpg.Connection, account_id: str, agent: str) -> None:
    await connection.execute(
        "UPDATE mandates SET revoked_at = now() WHERE account_id = $1 AND agent = $2 AND revoked_at IS NULL",
        account_id,
        agent,
    )


async def mandated(connection: asyncpg.Connection, agent: str, account_ids: Sequence[str]) -> set[str]:
    rows = await connection.fetch(
        "SELECT account_id FROM mandates WHERE agent = $1 AND revoked_at IS NULL AND account_id = ANY($2::text[])",
        agent,
        list(account_ids),
    )
    return {r["account_id"] for r in rows}
