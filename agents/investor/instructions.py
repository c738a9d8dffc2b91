"""The investor's side of delivery versus payment (issue 11, docs/dvp.md): what settlement says
about its instructions, and what the investor may ask — present its trade completion notice
(R-001-42), cancel an instruction, give the brokerage a mandate on its account."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from uuid import UUID

import asyncpg

from agents.investor import order_repo
from broker import group_commit, logs
from broker.consumer import Handler
from broker.context import Context
from broker.set_based import SetBased
from schemas.catalogue import Message
from schemas.dvp import (
    CancelInstruction,
    CancelRefused,
    GrantMandate,
    InstructionStatus,
    MandateRecorded,
    PresentTradeNotice,
    RevokeMandate,
    TradeNoticeVerified,
)
from schemas.identity import SETTLEMENT_ID
from schemas.settlement import SettlementNotice, SettlementNoticeV1
from schemas.trading import Side

log = logs.get("kabuto.investor")
Command = Callable[[Context], Awaitable[UUID]]


# What settlement says to an investor, kept as received: its statuses and answers in
# settlement_messages, its notices of a trade's cash leg in settlement_notices.
Said = InstructionStatus | CancelRefused | TradeNoticeVerified | MandateRecorded | SettlementNotice | SettlementNoticeV1


async def _keep_all(items: Sequence[tuple[Said, Context]]) -> None:
    """A run of what settlement said, kept with one statement per table (broker.set_based): the
    investor agent takes a status, a notice and a completion per party and trade, and one at a
    time they were its most frequent statements (docs/performance.md, stop 27). In a batch run
    all at once both ride in the statement that claims it (``group_commit.ride``, stop 42)."""
    kept: list[tuple[str, str, int | None, str]] = []
    notices: list[tuple[str, SettlementNotice | SettlementNoticeV1]] = []
    for message, ctx in items:
        user = ctx.identity.user_id
        if isinstance(message, SettlementNotice | SettlementNoticeV1):
            notices.append((user, message))
            continue
        if isinstance(message, InstructionStatus):
            with ctx.bound():
                log.info(
                    "instruction_status",
                    matching_number=message.instruction,
                    settlement=message.status.settlement.value,
                )
        kept.append((user, type(message).spec.type, _trade_of(message), message.model_dump_json()))
    connection = items[0][1].connection
    # appends nothing in the batch reads back: made by the statement that claims it
    if kept:
        await group_commit.ride_or_write(connection, order_repo.settlement_messages_kept(kept))
    if notices:
        await group_commit.ride_or_write(connection, order_repo.notices_recorded(notices))


def _trade_of(message: Said) -> int | None:
    if isinstance(message, InstructionStatus | CancelRefused):
        return message.instruction
    if isinstance(message, TradeNoticeVerified):
        return message.matching_number
    return None


# Appends only (a notice already kept for the party and trade is left as it was, as one at a
# time): no two messages of a run work on one row that another reads, so no keys.
on_settlement_said: SetBased[Said] = SetBased(_keep_all, keys=lambda _: ())


def present_notice(matching_number: int, settlement: str = SETTLEMENT_ID) -> Command:
    """R-001-42: present the trade completion notice (37) of this trade to settlement."""

    async def action(ctx: Context) -> UUID:
        row = await ctx.connection.fetchrow(
            """SELECT side, issue_code, price, quantity FROM executions
               WHERE matching_number = $1 AND user_id = $2 AND status = 'completed'""",
            matching_number,
            ctx.identity.user_id,
        )
        if row is None:
            raise ValueError(f"{ctx.identity.user_id} has no completed trade {matching_number}")
        notice = PresentTradeNotice(
            matching_number=matching_number,
            side=Side(row["side"]),
            issue_code=row["issue_code"],
            quantity=row["quantity"],
            price=row["price"],
            amount=row["price"] * row["quantity"],
        )
        return ctx.emit(notice, to=settlement).envelope.message_id

    return action


def cancel_instruction(matching_number: int, settlement: str = SETTLEMENT_ID) -> Command:
    async def action(ctx: Context) -> UUID:
        return ctx.emit(CancelInstruction(instruction=matching_number), to=settlement).envelope.message_id

    return action


def mandate(account: str, agent: str, *, revoke: bool = False, settlement: str = SETTLEMENT_ID) -> Command:
    """The account owner lets ``agent`` post on its settlement account (or stops it)."""

    async def action(ctx: Context) -> UUID:
        message = RevokeMandate(account=account, agent=agent) if revoke else GrantMandate(account=account, agent=agent)
        return ctx.emit(message, to=settlement).envelope.message_id

    return action


async def received(connection: asyncpg.Connection, user_id: str) -> list[dict[str, Any]]:
    rows = await connection.fetch(
        """SELECT message_type, matching_number, body, received_at FROM settlement_messages
           WHERE user_id = $1 ORDER BY id""",
        user_id,
    )
    return [dict(r) for r in rows]


HANDLERS: dict[type[Message], Handler] = {
    InstructionStatus: on_settlement_said,
    CancelRefused: on_settlement_said,
    TradeNoticeVerified: on_settlement_said,
    MandateRecorded: on_settlement_said,
    SettlementNotice: on_settlement_said,
    SettlementNoticeV1: on_settlement_said,
}
