"""Settlement as the DvP coordinator (issue 11, docs/dvp.md): covers, instructions, the two legs.

Each handler is one step of the protocol and one transaction: load and lock, decide in
``instructions``, save, emit. An attempt's cash is earmarked in the transaction that asks the
securities leg to deliver, and stays bound to the attempt until the leg answers: then it is
posted when the leg delivered (``on_committed``; or, when the leg only reserved, in
``on_reserved`` with the ``securities.commit`` it sends), or given back when it refused. So
neither leg can happen without the other, whichever agent crashes where (docs/dvp.md).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from decimal import Decimal

import asyncpg
from pydantic import TypeAdapter

from agents.settlement import dvp_repo, repo, sealed_accounts
from agents.settlement import instructions as decide
from agents.settlement.domain import Account, Entry, EntryKind, Leg, money
from agents.settlement.instructions import Attempt, Cover, Fail, Instruction, Wait
from broker import logs
from broker.context import Context
from broker.errors import InputRejected, Reason, SecurityRejected, Transient
from broker.set_based import SetBased
from schemas.dvp import (
    CancelInstruction,
    CancelRefused,
    CoverGranted,
    CoverRefusal,
    CoverRefused,
    CoverRelease,
    CoverRequest,
    CoverRequestV1,
    Delivery,
    DvpReason,
    InstructionStatus,
    InstructionStatusChanged,
    SecuritiesCommit,
    SecuritiesCommitted,
    SecuritiesLeg,
    SecuritiesRelease,
    SecuritiesReservationRefused,
    SecuritiesReserve,
    SecuritiesReserved,
    SettlementInstruction,
    SettlementInstructionV1,
    SettlementStatus,
    StandingCoverRequest,
)
from schemas.identity import EXCHANGE_ID
from schemas.settlement import SettlementCompleted, SettlementNotice
from schemas.trading import Side

log = logs.get("kabuto.settlement")
LEG: TypeAdapter[SecuritiesLeg] = TypeAdapter(SecuritiesLeg)


# -- cover ---------------------------------------------------------------------------------------


async def on_cover_request(request: CoverRequest, ctx: Context) -> None:
    """Hold a buy order's worst case on the buyer's own account, or say why not; the account is
    the box the buyer sealed in its order (R-001-06)."""
    account = sealed_accounts.opened(ctx, request.account, request.user_id)
    if account is None:
        _refuse_cover(ctx, request.cover_id, CoverRefusal.SEALED_FIELD_INVALID, _UNOPENED)
        return
    await _cover(ctx, request, account)


async def on_cover_request_v1(request: CoverRequestV1, ctx: Context) -> None:
    """Before the cut-over: the account in clear (the consumer refuses this version after it)."""
    await _cover(ctx, request, request.account)


_UNOPENED = "the settlement account does not open with settlement's key (sealed for another order, field or key)"


def _refuse_cover(ctx: Context, cover_id: uuid.UUID, reason: CoverRefusal, detail: str) -> None:
    assert ctx.sender is not None
    log.info("cover_refused", cover_id=str(cover_id), reason=reason.value)
    ctx.emit(CoverRefused(cover_id=cover_id, reason=reason, detail=detail), to=ctx.sender.user_id)


async def on_standing_cover_request(request: StandingCoverRequest, ctx: Context) -> None:
    """Hold a standing cover's amount on the buyer's own account (docs/dvp.md, "Standing
    cover"): the same checks and answers as a buy order's cover, under the cover's id."""
    account = sealed_accounts.opened(ctx, request.account, request.user_id)
    if account is None:
        _refuse_cover(ctx, request.cover_id, CoverRefusal.SEALED_FIELD_INVALID, _UNOPENED)
        return
    await _cover(ctx, request, account)


async def _cover(ctx: Context, request: CoverRequest | CoverRequestV1 | StandingCoverRequest, account_id: str) -> None:
    assert ctx.sender is not None
    view = await repo.cover_view(ctx.connection, account_id, request.cover_id)
    if view.duplicate:
        _refuse_cover(ctx, request.cover_id, CoverRefusal.DUPLICATE_COVER, "cover exists")
        return
    available = view.account.balance - view.held if view.account else Decimal(0)
    refusal = decide.cover_refusal(request, view.account, available)
    if refusal is not None:
        _refuse_cover(ctx, request.cover_id, *refusal)
        return
    if isinstance(request, StandingCoverRequest):
        await dvp_repo.open_standing_cover(ctx.connection, request, account_id)
    else:
        await dvp_repo.open_cover(ctx.connection, request, account_id)
    log.info("cover_granted", cover_id=str(request.cover_id), amount=str(request.amount))
    ctx.emit(CoverGranted(cover_id=request.cover_id, amount=request.amount), to=ctx.sender.user_id)


async def on_cover_release(release: CoverRelease, ctx: Context) -> None:
    cover = await dvp_repo.cover(ctx.connection, release.cover_id, lock=True)
    if cover is None or not cover.active:
        return
    await dvp_repo.save_cover(ctx.connection, replace(cover, active=False))
    log.info("cover_released", cover_id=str(release.cover_id), freed=str(cover.held))


# -- instruction ---------------------------------------------------------------------------------


async def _on_instructions(messages: Sequence[tuple[SettlementInstruction, Context]]) -> None:
    """Record and validate executions' instructions, then make their first attempts; both accounts
    are the parties' sealed boxes, opened here only (R-001-06)."""
    received = []
    for message, ctx in messages:
        with ctx.bound():
            buyer = sealed_accounts.opened(ctx, message.buyer_account, message.buyer_user_id)
            seller = sealed_accounts.opened(ctx, message.seller_account, message.seller_user_id)
        received.append(_Received(ctx, message, buyer, seller))
    await _instructions(received)


async def _on_instructions_v1(messages: Sequence[tuple[SettlementInstructionV1, Context]]) -> None:
    """Before the cut-over: both accounts in clear (the consumer refuses this version after it)."""
    await _instructions([_Received(ctx, m, m.buyer_account, m.seller_account) for m, ctx in messages])


def _matching_number(message: SettlementInstruction | SettlementInstructionV1) -> tuple[int]:
    return (message.matching_number,)


on_instruction = SetBased(_on_instructions, keys=_matching_number)
on_instruction_v1 = SetBased(_on_instructions_v1, keys=_matching_number)


@dataclass(frozen=True, slots=True)
class _Received:
    """An instruction as it arrived, with its accounts opened (None: the box did not open)."""

    ctx: Context
    message: SettlementInstruction | SettlementInstructionV1
    buyer_account: str | None
    seller_account: str | None


async def _instructions(received: Sequence[_Received]) -> None:
    """The instructions recorded in one statement, their accounts locked and read in one, and
    their first attempts made on what they read once (``_Attempts``). A box that did not open
    (None) rejects its instruction as ``sealed_field_invalid``."""
    connection = received[0].ctx.connection
    accounts = await repo.accounts_for_update(
        connection, [a for r in received for a in (r.buyer_account, r.seller_account) if a]
    )
    validated = []
    for r in received:
        instruction = decide.received(
            r.message, r.buyer_account or "", r.seller_account or "", r.message.securities.agent
        )
        validated.append(
            decide.validate(
                instruction, accounts.get(instruction.buyer_account), accounts.get(instruction.seller_account)
            )
        )
    recorded = await dvp_repo.insert_instructions(
        connection,
        [(i, r.message.securities, _message_id(r.ctx)) for r, i in zip(received, validated, strict=True)],
    )
    live = []
    for r, instruction in zip(received, validated, strict=True):
        with r.ctx.bound():
            if instruction.matching_number not in recorded:
                log.warning("instruction_repeated", matching_number=instruction.matching_number)
                continue
            log.info(
                "instruction_received",
                matching_number=instruction.matching_number,
                processing=instruction.processing.value,
            )
            _announce(r.ctx, instruction)
        if instruction.live:  # the buyer's account is locked and read already, the leg is in hand
            live.append((r, instruction))
    if not live:
        return
    attempts = await _Attempts.read(connection, [instruction for _, instruction in live])
    for r, instruction in live:
        with r.ctx.bound():
            await attempts.attempt(r.ctx, instruction, accounts.get(instruction.buyer_account), r.message.securities)
    await attempts.write(connection)


def _message_id(ctx: Context) -> uuid.UUID:
    assert ctx.message_id is not None
    return ctx.message_id


async def attempt(ctx: Context, instruction: Instruction) -> Instruction:
    """Earmark the cash (cover first) and ask for the securities; or stay pending and say why."""
    accounts = await repo.accounts_for_update(ctx.connection, (instruction.buyer_account,))
    leg = LEG.validate_json(await dvp_repo.securities_leg(ctx.connection, instruction.matching_number))
    attempts = await _Attempts.read(ctx.connection, [instruction])
    after = await attempts.attempt(ctx, instruction, accounts.get(instruction.buyer_account), leg)
    await attempts.write(ctx.connection)
    return after


@dataclass(slots=True)
class _Attempts:
    """Attempts planned one after another on what they read once — the covers they draw on
    (locked) and the holds on their buyers' accounts — each seeing them as the attempts before it
    left them, as one by one would; written together at the end (``write``)."""

    covers: dict[uuid.UUID, Cover]
    held: dvp_repo.Held
    taken: dict[uuid.UUID, Cover] = field(default_factory=dict)
    # A cover emptied by a draw after an earlier draw of the set, as it was just before: saved
    # first, since a released hold keeps the amount it last held (``save_cover``).
    emptied: dict[uuid.UUID, Cover] = field(default_factory=dict)
    started: list[dvp_repo.Started] = field(default_factory=list)

    @classmethod
    async def read(cls, connection: asyncpg.Connection, instructions: Sequence[Instruction]) -> _Attempts:
        """The buyers' accounts must be locked already (their balances read)."""
        cover_ids = {i.cover_id for i in instructions if i.cover_id}
        covers = await dvp_repo.covers_for_update(connection, cover_ids) if cover_ids else {}
        held = await dvp_repo.held(connection, {i.buyer_account for i in instructions}, cover_ids)
        return cls(covers, held)

    async def attempt(
        self, ctx: Context, instruction: Instruction, buyer: Account | None, leg: SecuritiesLeg
    ) -> Instruction:
        """Earmark the cash (cover first) and ask for the securities; or stay pending and say why."""
        cover = self.covers.get(instruction.cover_id) if instruction.cover_id else None
        available = (buyer.balance if buyer else 0) - self.held.on(
            instruction.buyer_account, excluding=instruction.cover_id
        )
        plan = decide.plan(instruction, cover, available, ctx.now.date())
        if isinstance(plan, Wait):
            return await _wait(ctx, instruction, plan)
        if cover is not None and plan.from_cover:
            self._draw(cover, cover.taken(plan.from_cover, instruction.price))
        instruction = decide.started(instruction, plan)
        self.started.append(dvp_repo.Started(instruction, plan, uuid.uuid4()))
        self.held.placed(instruction.buyer_account, plan.amount)
        ctx.emit(_reserve(instruction, plan, leg), to=instruction.leg_agent)
        log.info("securities_reserve_sent", matching_number=instruction.matching_number, attempt=plan.number)
        return instruction

    def _draw(self, before: Cover, after: Cover) -> None:
        if after.held <= 0 and before.cover_id in self.taken:
            self.emptied[before.cover_id] = before
        self.covers[after.cover_id] = self.taken[after.cover_id] = after
        self.held.cover_saved(after)

    async def write(self, connection: asyncpg.Connection) -> None:
        """The covers drawn on, and the attempts with their earmarks: one statement, after the
        covers emptied by a later draw of the set are saved as they were before it."""
        for cover_id in self.taken:
            if cover_id in self.emptied:
                await dvp_repo.save_cover(connection, self.emptied[cover_id])
        covers = [dvp_repo.covers_saved(list(self.taken.values()))] if self.taken else []
        await dvp_repo.start_attempts(connection, self.started, riding=covers)


def _reserve(instruction: Instruction, plan: Attempt, leg: SecuritiesLeg) -> SecuritiesReserve:
    return SecuritiesReserve(
        instruction=instruction.matching_number,
        attempt=plan.number,
        issue_code=instruction.issue_code,
        quantity=plan.quantity,
        deliverer=instruction.seller_user_id,
        receiver=instruction.buyer_user_id,
        leg=leg,
        deliver=True,  # the earmark is bound to the attempt until the answer (docs/dvp.md)
    )


async def _wait(ctx: Context, instruction: Instruction, wait: Wait) -> Instruction:
    changed = instruction.reason is not wait.reason
    instruction = decide.waiting(instruction, wait)
    await dvp_repo.save_instruction(ctx.connection, instruction)
    if changed:
        log.info("instruction_pending", matching_number=instruction.matching_number, reason=wait.reason.value)
        _announce(ctx, instruction)
    return instruction


async def _current(ctx: Context, matching_number: int, number: int) -> tuple[Instruction, Attempt, uuid.UUID] | None:
    """The instruction and its outstanding attempt ``number``, locked; None for a stale answer."""
    current = _outstanding(await dvp_repo.current(ctx.connection, matching_number, number), number)
    return None if current is None else (current.instruction, current.attempt, current.hold_id)


def _outstanding(found: dvp_repo.Current | None, number: int) -> dvp_repo.Current | None:
    """``found`` if attempt ``number`` is the instruction's outstanding one; None for a stale answer."""
    if found is None or not found.instruction.in_flight or found.instruction.attempt != number:
        return None
    return found


async def _on_reserved(answers: Sequence[tuple[SecuritiesReserved, Context]]) -> None:
    """Both legs are reserved: move the cash and send the commit, in one transaction — for a set
    of answers, one statement per table (docs/netting.md)."""
    connection = answers[0][1].connection
    found = await dvp_repo.currents(connection, [(answer.instruction, answer.attempt) for answer, _ in answers])
    _from_their_legs(answers, found)
    going: list[tuple[Context, Instruction, Attempt, uuid.UUID]] = []
    for answer, ctx in answers:
        current = _outstanding(found.get((answer.instruction, answer.attempt)), answer.attempt)
        if current is None:
            with ctx.bound():
                log.warning("stale_reservation_released", matching_number=answer.instruction, attempt=answer.attempt)
            ctx.emit(SecuritiesRelease(instruction=answer.instruction, attempt=answer.attempt), to=_sender(ctx))
        elif decide.cancel_due(replace(current.instruction, in_flight=False)) is not None:
            await _post_cash_legs(going)  # those before it first, as one by one
            going = []
            with ctx.bound():
                await _cancelled_while_reserved(ctx, current)
        else:
            going.append((ctx, current.instruction, current.attempt, current.hold_id))
    await _post_cash_legs(going)


on_reserved = SetBased(_on_reserved, keys=lambda answer: (answer.instruction,))


async def _cancelled_while_reserved(ctx: Context, current: dvp_repo.Current) -> None:
    instruction, plan = current.instruction, current.attempt
    release = SecuritiesRelease(instruction=instruction.matching_number, attempt=plan.number)
    ctx.emit(release, to=_sender(ctx))
    instruction = await _unwind(ctx, instruction, plan, current.hold_id, DvpReason.CANCELLED_BY_PARTY)
    await fail(ctx, instruction, Fail(DvpReason.CANCELLED_BY_PARTY, "cancelled by both parties"))


async def _post_cash_legs(
    going: Sequence[tuple[Context, Instruction, Attempt, uuid.UUID]], *, commit: bool = True
) -> list[int]:
    """The cash legs of attempts posted and their earmarks consumed; with ``commit``, for attempts
    reserved, their commits sent. Each posting's entry id, in order."""
    if not going:
        return []
    connection, now = going[0][0].connection, going[0][0].now
    accounts = [account for _, i, _, _ in going for account in (i.buyer_account, i.seller_account)]
    await repo.lock_accounts(connection, accounts)
    entry_ids = await repo.post_all(connection, [_cash_leg(i, plan) for _, i, plan, _ in going], now)
    consumed = []
    for (ctx, instruction, plan, hold_id), entry_id in zip(going, entry_ids, strict=True):
        if entry_id is None:
            raise Transient(f"instruction {instruction.matching_number} attempt {plan.number} was posted meanwhile")
        consumed.append(dvp_repo.Consumed(instruction.matching_number, plan.number, hold_id, entry_id))
        if commit:
            ctx.emit(
                SecuritiesCommit(instruction=instruction.matching_number, attempt=plan.number), to=instruction.leg_agent
            )
        with ctx.bound():
            event = "cash_posted_commit_sent" if commit else "cash_posted_on_delivery"
            log.info(event, matching_number=instruction.matching_number, entry_id=entry_id)
    # the earmarks give way to the postings: each must still be placed, or the cash was never bound
    if await dvp_repo.consume_holds(connection, consumed) != len(consumed):
        raise RuntimeError(f"an earmark of {[c.matching_number for c in consumed]} was no longer placed")
    return [c.entry_id for c in consumed]


def _cash_leg(instruction: Instruction, plan: Attempt) -> Entry:
    return Entry(
        EntryKind.TRADE,
        f"{instruction.matching_number}/{plan.number}",
        f"trade {instruction.matching_number}: {plan.quantity} {instruction.issue_code} at "
        f"{money(instruction.price, instruction.currency)}, {instruction.buyer_user_id} pays "
        f"{instruction.seller_user_id} (delivery versus payment)",
        (Leg(instruction.buyer_account, -plan.amount), Leg(instruction.seller_account, plan.amount)),
    )


async def _on_committed(answers: Sequence[tuple[SecuritiesCommitted, Context]]) -> None:
    """The securities moved: the attempts are settled, and everyone is told. An attempt the leg
    delivered at once (still ``reserving``) has its cash posted from its earmark first: the
    earmark was bound to it, so the posting cannot be refused (docs/dvp.md)."""
    connection = answers[0][1].connection
    found = await dvp_repo.currents(connection, [(answer.instruction, answer.attempt) for answer, _ in answers])
    _from_their_legs(answers, found)
    await _paid_on_delivery(answers, found)
    settled = []
    for answer, ctx in answers:
        with ctx.bound():
            ended = _settled(ctx, answer, found.get((answer.instruction, answer.attempt)))
        if ended is not None:
            settled.append(ended)
    await dvp_repo.end_instructions(connection, settled)


on_committed = SetBased(_on_committed, keys=lambda answer: (answer.instruction,))


def _from_their_legs(
    answers: Sequence[tuple[SecuritiesReserved, Context]] | Sequence[tuple[SecuritiesCommitted, Context]],
    found: dict[tuple[int, int], dvp_repo.Current],
) -> None:
    """Every answer comes from its instruction's securities-leg agent and, a delivery, says the
    quantity its attempt asked for; otherwise it is refused, before anything is written (found by
    review at stop 34: any leg agent's ``securities.committed`` settled any instruction)."""
    for answer, ctx in answers:
        current = found.get((answer.instruction, answer.attempt))
        if current is None:
            continue
        _from_its_leg(ctx, current.instruction)
        if isinstance(answer, SecuritiesCommitted) and answer.quantity != current.attempt.quantity:
            raise InputRejected(
                Reason.DATA_INVALID,
                f"instruction {answer.instruction} attempt {answer.attempt} asked for {current.attempt.quantity} "
                f"shares; the answer delivered {answer.quantity}",
            )


def _from_its_leg(ctx: Context, instruction: Instruction) -> None:
    if _sender(ctx) != instruction.leg_agent:
        raise SecurityRejected(
            Reason.SENDER_NOT_AUTHORIZED,
            f"instruction {instruction.matching_number}'s securities leg is {instruction.leg_agent}, "
            f"not {_sender(ctx)}",
        )


async def _paid_on_delivery(
    answers: Sequence[tuple[SecuritiesCommitted, Context]], found: dict[tuple[int, int], dvp_repo.Current]
) -> None:
    """The cash legs of the attempts delivered at once, posted; ``found`` updated to show them
    committing with their postings, as a commit sent after the posting would have left them.
    A cancel asked meanwhile comes too late: the securities have moved, so the trade settles."""
    paying = []
    for answer, ctx in answers:
        current = _outstanding(found.get((answer.instruction, answer.attempt)), answer.attempt)
        if current is not None and current.status == "reserving":
            paying.append((ctx, current))
    entry_ids = await _post_cash_legs([(ctx, c.instruction, c.attempt, c.hold_id) for ctx, c in paying], commit=False)
    for (_, current), entry_id in zip(paying, entry_ids, strict=True):
        key = (current.instruction.matching_number, current.attempt.number)
        found[key] = replace(current, status="committing", entry_id=entry_id)


def _settled(
    ctx: Context, answer: SecuritiesCommitted, found: dvp_repo.Current | None
) -> tuple[Instruction, dvp_repo.AttemptEnd] | None:
    """The instruction settled by ``answer`` (everyone told) and its attempt's end; None for an
    answer to no attempt committing."""
    if found is None or found.status != "committing" or found.entry_id is None:
        # A repeat of an answer settled before is harmless; any other answer to an attempt not
        # committing says the leg moved securities that settlement will not pay for.
        repeat = found is not None and found.status == "committed"
        (log.warning if repeat else log.error)(
            "commit_answer_ignored", matching_number=answer.instruction, attempt=answer.attempt
        )
        return None
    plan, entry_id = found.attempt, found.entry_id
    instruction = decide.settled(found.instruction, plan.quantity, plan.amount)
    log.info("instruction_settled", matching_number=instruction.matching_number, status=instruction.settlement.value)
    _announce(ctx, instruction, answer.delivery, entry_id)
    _notify_settled(ctx, instruction, plan, entry_id)
    return instruction, dvp_repo.AttemptEnd(plan.number, "committed")


def _notify_settled(ctx: Context, instruction: Instruction, plan: Attempt, entry_id: int) -> None:
    """Each party hears of its own account only: the counterparty's stays here (R-001-06)."""
    for side, party, account in (
        (Side.BUY, instruction.buyer_user_id, instruction.buyer_account),
        (Side.SELL, instruction.seller_user_id, instruction.seller_account),
    ):
        notice = SettlementNotice(
            matching_number=instruction.matching_number,
            side=side,
            settled=True,
            amount=plan.amount,
            currency=instruction.currency,
            account=account,
            entry_id=entry_id,
        )
        ctx.emit(notice, to=party)
    ctx.emit(
        SettlementCompleted(
            matching_number=instruction.matching_number,
            issue_code=instruction.issue_code,
            shares=plan.quantity,
            amount=plan.amount,
            currency=instruction.currency,
            entry_id=entry_id,
        )
    )


async def on_reservation_refused(answer: SecuritiesReservationRefused, ctx: Context) -> None:
    """Nothing was reserved: the earmark goes back, and the instruction waits or fails."""
    current = await _current(ctx, answer.instruction, answer.attempt)
    if current is None:
        log.warning("refusal_ignored", matching_number=answer.instruction, attempt=answer.attempt)
        return
    instruction, plan, hold_id = current
    _from_its_leg(ctx, instruction)
    instruction = await _unwind(ctx, instruction, plan, hold_id, answer.reason)
    instruction = decide.refused(instruction, answer.reason, answer.detail, answer.retryable)
    cancel = decide.cancel_due(instruction)
    if cancel is not None:
        await fail(ctx, instruction, cancel)
        return
    await dvp_repo.save_instruction(ctx.connection, instruction)
    log.info("reservation_refused", matching_number=answer.instruction, reason=answer.reason.value)
    _announce(ctx, instruction)


async def _unwind(
    ctx: Context, instruction: Instruction, plan: Attempt, hold_id: uuid.UUID, reason: DvpReason
) -> Instruction:
    """The attempt ends unsettled: its earmark is freed and its shares go back on the cover."""
    await dvp_repo.close_hold(ctx.connection, hold_id, "released")
    await dvp_repo.end_attempt(ctx.connection, instruction.matching_number, plan.number, "refused", reason=reason)
    if instruction.cover_id and plan.from_cover:
        cover = await dvp_repo.cover(ctx.connection, instruction.cover_id, lock=True)
        if cover is not None and cover.active:
            await dvp_repo.save_cover(ctx.connection, cover.given_back(plan.from_cover, instruction.price))
    return replace(instruction, in_flight=False)


async def fail(ctx: Context, instruction: Instruction, failure: Fail) -> Instruction:
    instruction = decide.failed(instruction, failure)
    await dvp_repo.save_instruction(ctx.connection, instruction)
    log.info("instruction_failed", matching_number=instruction.matching_number, reason=failure.reason.value)
    _announce(ctx, instruction)
    return instruction


# -- cancellation by the parties -----------------------------------------------------------------


async def on_cancel(request: CancelInstruction, ctx: Context) -> None:
    party = _sender(ctx)
    instruction = await dvp_repo.instruction(ctx.connection, request.instruction, lock=True)
    await cancel(ctx, request.instruction, instruction, party, operator=False)


async def cancel(
    ctx: Context, number: int, instruction: Instruction | None, party: str, *, operator: bool
) -> Instruction | DvpReason:
    asked = decide.ask_cancel(instruction, party, operator) if instruction else DvpReason.UNKNOWN_INSTRUCTION
    if isinstance(asked, DvpReason):
        if not operator:
            detail = f"instruction {number} cannot be cancelled by {party}"
            ctx.emit(CancelRefused(instruction=number, reason=asked, detail=detail), to=party)
        return asked
    due = decide.cancel_due(asked)
    if due is not None:
        return await fail(ctx, asked, due)
    await dvp_repo.save_instruction(ctx.connection, asked)
    log.info("cancel_recorded", matching_number=number, party=party)
    return asked


# -- recycling -----------------------------------------------------------------------------------


async def recycle(ctx: Context, today: date, recycle_days: int) -> dict[str, int]:
    """Attempt every due instruction again; those past their cut-off fail. Returns what happened."""
    outcome = {"attempted": 0, "failed": 0, "waiting": 0}
    for number in await dvp_repo.recyclable(ctx.connection, today):
        instruction = await dvp_repo.instruction(ctx.connection, number, lock=True)
        if instruction is None or not instruction.live or instruction.in_flight:
            continue
        failure = decide.recycle(instruction, today, recycle_days) or decide.cancel_due(instruction)
        if failure is not None:
            await fail(ctx, instruction, failure)
            outcome["failed"] += 1
            continue
        after = await attempt(ctx, instruction)
        outcome["attempted" if after.in_flight else "waiting"] += 1
    return outcome


# -- telling everyone ----------------------------------------------------------------------------


def _parties(instruction: Instruction) -> tuple[str, ...]:
    return tuple(dict.fromkeys((instruction.buyer_user_id, instruction.seller_user_id)))


def _announce(
    ctx: Context, instruction: Instruction, delivery: Delivery | None = None, entry_id: int | None = None
) -> None:
    """Every status change: the exchange (with the delivery), both parties, and integrators."""
    fields = instruction.status()
    status = InstructionStatus(instruction=instruction.matching_number, status=fields, entry_id=entry_id)
    ctx.emit(status.model_copy(update={"delivery": delivery}), to=EXCHANGE_ID)
    for party in _parties(instruction):
        ctx.emit(status, to=party)
    ctx.emit(
        InstructionStatusChanged(
            instruction=instruction.matching_number,
            issue_code=instruction.issue_code,
            intended_settlement_date=instruction.intended_settlement_date,
            status=fields,
        )
    )


def _sender(ctx: Context) -> str:
    assert ctx.sender is not None
    return ctx.sender.user_id


SETTLED = (SettlementStatus.SETTLED,)
