"""The audit trail (R-003-63): every decision, lock, unlock, sell instruction and notice, with
the purchaser and seed 003's step id, written in the transaction of the change it records."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from broker.context import Context


@dataclass(frozen=True, slots=True)
class AuditEntry:
    seq: int
    at: datetime
    institution: str
    purchaser: str
    step: str
    action: str
    obligation_id: UUID | None
    detail: dict[str, Any]


async def record(
    ctx: Context, purchaser: str, step: str, action: str, obligation_id: UUID | None = None, **detail: object
) -> None:
    await ctx.connection.execute(
        """INSERT INTO audit_trail (at, institution, purchaser, step, action, obligation_id, detail)
           VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb)""",
        ctx.now,
        ctx.identity.user_id,
        purchaser,
        step,
        action,
        obligation_id,
        json.dumps(detail, default=str),
    )


async def entries(ctx: Context, purchaser: str | None = None, obligation_id: UUID | None = None) -> list[AuditEntry]:
    rows = await ctx.connection.fetch(
        """SELECT seq, at, institution, purchaser, step, action, obligation_id, detail FROM audit_trail
           WHERE ($1::text IS NULL OR purchaser = $1) AND ($2::uuid IS NULL OR obligation_id = $2)
           ORDER BY seq""",
        purchaser,
        obligation_id,
    )
    return [AuditEntry(**{**dict(r), "detail": json.loads(r["detail"])}) for r in rows]
