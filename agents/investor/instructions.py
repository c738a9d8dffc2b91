"""The investor's side of delivery versus payment (issue 11, docs/dvp.md): what settlement says
about its instructions, and what the investor may ask — present its trade completion notice
(R-001-42), cancel an instruction, give the brokerage a mandate on its account."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from uuid import UUID

import asyncpg

from broker import logs
from broker.consumer import Handler
from broker.context import Context
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
from schemas.trading import Side

log = logs.get("kabuto.investor")
Command = Callable[[Context], Awaitable[UUID]]


async def _keep(ctx: Context, message: Message, matching_number: int | None) -> None:
    await ctx.connection.execute(
        "INSERT INTO settlement_messages (user_id, message_type, matching_number, body) VALUES ($1, $2, $3, $4)",
        ctx.identity.user_id,
        type(message).spec.type,
        matching_number,
        message.model_dump_json(),
    )


async def on_status(message: InstructionStatus, ctx: Context) -> None:
    log.info("instruction_status", matching_number=message.instruction, settlement=message.status.settlement.value)
    await _keep(ctx, message, message.instruction)


async def on_cancel_refused(message: CancelRefused, ctx: Context) -> None:
    await _keep(ctx, message, message.instruction)


async def on_notice_verified(message: TradeNoticeVerified, ctx: Context) -> None:
    await _keep(ctx, message, message.matching_number)


async def on_mandate(message: MandateRecorded, ctx: Context) -> None:
    await _keep(ctx, message, None)


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
    InstructionStatus: on_status,
    CancelRefused: on_cancel_refused,
    TradeNoticeVerified: on_notice_verified,
    MandateRecorded: on_mandate,
}
