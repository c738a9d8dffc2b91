"""The purchaser's terminal in seed 003 (user terminal 100): it keeps what it is told — the
merchant's card payment answer (S1130, R-003-17), the collateral statement (S1150, R-003-40),
the release notice (S8040, R-003-49) and the sale notice (S9130, R-003-57)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from broker import logs
from broker.consumer import Handler
from broker.context import Context
from schemas.catalogue import Message
from schemas.credit import AssetsSold, CardPaymentAnswer, CollateralReleased, CollateralStatement

log = logs.get("kabuto.investor")


@dataclass(frozen=True, slots=True)
class Notice:
    sender: str
    kind: str
    reference: str
    content: dict[str, Any]
    received_at: datetime


def _reference(message: Message) -> str:
    if isinstance(message, CardPaymentAnswer):
        return message.purchase_id
    return str(getattr(message, "obligation_id", ""))


async def on_notice(message: Message, ctx: Context) -> None:
    assert ctx.envelope is not None and ctx.sender is not None
    await ctx.connection.execute(
        """INSERT INTO credit_notices (message_id, user_id, sender, kind, reference, content, received_at)
           VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7)""",
        ctx.envelope.message_id,
        ctx.identity.user_id,
        ctx.sender.user_id,
        ctx.envelope.type,
        _reference(message),
        message.model_dump_json(),
        ctx.now,
    )
    log.info("credit_notice_received", kind=ctx.envelope.type, reference=_reference(message))


async def notices(connection: asyncpg.Connection, user_id: str) -> list[Notice]:
    rows = await connection.fetch(
        """SELECT sender, kind, reference, content, received_at FROM credit_notices
           WHERE user_id = $1 ORDER BY received_at, message_id""",
        user_id,
    )
    return [Notice(**{**dict(r), "content": json.loads(r["content"])}) for r in rows]


HANDLERS: dict[type[Message], Handler] = {
    CardPaymentAnswer: on_notice,
    CollateralStatement: on_notice,
    CollateralReleased: on_notice,
    AssetsSold: on_notice,
}
