"""The instruction desk: R-001-42 notices presented by investors, operators' inquiries,
cancellation and recycling, and the periodic recycling job (issue 11, docs/dvp.md)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date

from agents.settlement import dvp, dvp_repo
from agents.settlement import instructions as decide
from agents.settlement.instructions import Instruction
from broker import logs
from broker.context import Context
from broker.progress import pause
from broker.runtime import AgentRuntime
from schemas.dvp import DvpReason, PresentTradeNotice, TradeNoticeVerified
from schemas.identity import SETTLEMENT_ID

log = logs.get("kabuto.settlement")


async def on_present_notice(notice: PresentTradeNotice, ctx: Context) -> None:
    """R-001-42: an investor presents its trade completion notice (37); settlement verifies it
    against the instruction and answers with the instruction's status."""
    assert ctx.sender is not None
    instruction = await dvp_repo.instruction(ctx.connection, notice.matching_number)
    reason = decide.notice_reason(instruction, notice, ctx.sender.user_id)
    log.info("trade_notice_presented", matching_number=notice.matching_number, verified=reason is None)
    ctx.emit(
        TradeNoticeVerified(
            matching_number=notice.matching_number,
            verified=reason is None,
            reason=reason,
            status=instruction.status() if instruction is not None and reason is None else None,
        ),
        to=ctx.sender.user_id,
    )


@dataclass(frozen=True, slots=True)
class InstructionView:
    instruction: Instruction
    attempts: list[dict[str, object]]


class UnknownInstruction(ValueError):
    """No instruction with that matching number."""


def list_instructions(live_only: bool = False) -> Callable[[Context], Awaitable[list[Instruction]]]:
    async def action(ctx: Context) -> list[Instruction]:
        return await dvp_repo.instructions(ctx.connection, live_only=live_only)

    return action


def show_instruction(number: int) -> Callable[[Context], Awaitable[InstructionView]]:
    async def action(ctx: Context) -> InstructionView:
        instruction = await dvp_repo.instruction(ctx.connection, number)
        if instruction is None:
            raise UnknownInstruction(f"no instruction {number}")
        return InstructionView(instruction, await dvp_repo.attempts(ctx.connection, number))

    return action


def cancel_instruction(number: int) -> Callable[[Context], Awaitable[Instruction | DvpReason]]:
    """An operator cancels on the parties' behalf: as if both had asked."""

    async def action(ctx: Context) -> Instruction | DvpReason:
        instruction = await dvp_repo.instruction(ctx.connection, number, lock=True)
        if instruction is None:
            raise UnknownInstruction(f"no instruction {number}")
        return await dvp.cancel(ctx, number, instruction, "operator", operator=True)

    return action


def recycle(today: date | None = None, recycle_days: int = 2) -> Callable[[Context], Awaitable[dict[str, int]]]:
    """Attempt every due pending instruction again; fail those past their cut-off."""

    async def action(ctx: Context) -> dict[str, int]:
        return await dvp.recycle(ctx, today or ctx.now.date(), recycle_days)

    return action


async def periodic_recycle(runtime: AgentRuntime) -> None:
    """Recycle on a timer, so a buyer funded or a seller's securities arriving settle by themselves."""
    interval = runtime.settings.settlement_recycle_interval.total_seconds()
    days = runtime.settings.settlement_recycle_days
    while True:
        await pause(interval)
        async with runtime.round_of(periodic_recycle):
            outcome = await runtime.command(SETTLEMENT_ID, recycle(None, days))
        if any(outcome.values()):
            log.info("instructions_recycled", **outcome)
