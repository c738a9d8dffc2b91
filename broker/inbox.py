"""The inbox: each delivered message id claimed once, with the digest of its bytes.

A claim is an ``INSERT … ON CONFLICT DO NOTHING`` in the handler's transaction, so it
commits with the handler's effects or not at all. An id already claimed is a redelivery
when the bytes are the same (nothing happens) and a replayed message id when they differ
(a security refusal). ``claim_all`` does the same for a batch in one statement.
"""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

import asyncpg

from broker.envelope import Opened
from broker.errors import Reason, SecurityRejected


async def claim(connection: asyncpg.Connection, opened: Opened) -> bool:
    """True if this delivery's id is new (claimed now); False for a redelivery of the same bytes."""
    env = opened.envelope
    inserted = await connection.fetchval(
        """INSERT INTO inbox (message_id, digest, message_type, sender)
           VALUES ($1, $2, $3, $4) ON CONFLICT (message_id) DO NOTHING
           RETURNING true""",
        env.message_id,
        opened.digest,
        env.type,
        env.sender,
    )
    if inserted:
        return True
    digest = await connection.fetchval("SELECT digest FROM inbox WHERE message_id = $1", env.message_id)
    _same_bytes(opened, digest)
    return False


async def claim_all(connection: asyncpg.Connection, batch: Sequence[Opened]) -> list[bool]:
    """``claim`` for each delivery of ``batch``, in two statements at most; one flag per delivery.

    An id that occurs twice in the batch is claimed by its first occurrence; the later one is
    then a redelivery (same bytes) or a replay (other bytes), exactly as if it came later.
    """
    rows = await connection.fetch(
        """INSERT INTO inbox (message_id, digest, message_type, sender)
           SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[])
           ON CONFLICT (message_id) DO NOTHING
           RETURNING message_id""",
        [o.envelope.message_id for o in batch],
        [o.digest for o in batch],
        [o.envelope.type for o in batch],
        [o.envelope.sender for o in batch],
    )
    inserted: set[UUID] = {row["message_id"] for row in rows}
    fresh = []
    for opened in batch:
        message_id = opened.envelope.message_id
        fresh.append(message_id in inserted)
        inserted.discard(message_id)  # a second occurrence in this batch is not new
    seen = [o for o, new in zip(batch, fresh, strict=True) if not new]
    if seen:
        digests = dict(
            await connection.fetch(
                "SELECT message_id, digest FROM inbox WHERE message_id = ANY($1::uuid[])",
                [o.envelope.message_id for o in seen],
            )
        )
        for opened in seen:
            _same_bytes(opened, digests.get(opened.envelope.message_id))
    return fresh


def _same_bytes(opened: Opened, digest: str | None) -> None:
    if digest != opened.digest:
        raise SecurityRejected(
            Reason.REPLAYED_MESSAGE_ID,
            f"message id {opened.envelope.message_id} was already used for other content",
        )
