"""The inbox: each delivered message id claimed once, with the digest of its bytes.

A claim is an ``INSERT … ON CONFLICT DO NOTHING`` in the handler's transaction, so it
commits with the handler's effects or not at all. An id already claimed is a redelivery
when the bytes are the same (nothing happens) and a replayed message id when they differ
(a security refusal). ``claim_all`` does the same for a batch in one statement.

``claim_storing`` claims after the handlers instead, in the statement that stores what they
emitted: one round trip fewer a transaction, which is what a batch of one or two deliveries
pays most for (docs/performance.md, stop 38). It is optimistic: a delivery seen before (a
redelivery, a replayed id) makes it raise ``SeenBefore``, the caller's transaction is rolled
back whole, and the batch is decided again with the claim first, so that the effects of a
handler run on a redelivery are never kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

import asyncpg

from broker import outbox
from broker.db import Writes, riding, verified
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


class SeenBefore(Exception):
    """An optimistic claim (``claim_storing``) met a delivery the inbox holds already: the
    caller's transaction must roll back, and the batch be decided again with the claim first."""


async def claim_storing(
    connection: asyncpg.Connection,
    batch: Sequence[Opened],
    stored: outbox.Rows | None,
    riders: Sequence[Writes] = (),
) -> None:
    """Claim every delivery of ``batch`` after its handlers ran, in the statement that stores the
    outbox rows they emitted (``outbox.rows``; None: nothing to store, and the relay not woken),
    and makes the ``riders``' writes: the last writes of the batch's handlers, which nothing after
    them reads (``group_commit.ride``), checked as each says.

    Raises ``SeenBefore`` if any id was claimed before (or occurs twice in ``batch``): whether
    it is a redelivery or a replay is for ``claim_all`` to say once the caller has rolled back."""
    ids = [o.envelope.message_id for o in batch]
    claim = [ids, [o.digest for o in batch], [o.envelope.type for o in batch], [o.envelope.sender for o in batch]]
    args = [*claim, *stored] if stored is not None else claim
    ctes, check, ridden = riding(riders, len(args) + 1)
    storing = f", stored AS ({outbox.store_statement(5)})" if stored is not None else ""
    # Every insert and rider runs to completion whatever the query reads (PostgreSQL's data-modifying WITH).
    row = await connection.fetchrow(
        f"WITH claimed AS ({_CLAIM}){storing}{ctes} SELECT count(*) AS claimed, {check} AS done FROM claimed",
        *args,
        *ridden,
    )
    assert row is not None
    if row["claimed"] != len(ids):
        raise SeenBefore(f"{len(ids) - row['claimed']} of {len(ids)} deliveries claimed before")
    verified(row["done"], riders)


async def claim_all(connection: asyncpg.Connection, batch: Sequence[Opened]) -> list[bool]:
    """``claim`` for each delivery of ``batch``, in two statements at most; one flag per delivery.

    An id that occurs twice in the batch is claimed by its first occurrence; the later one is
    then a redelivery (same bytes) or a replay (other bytes), exactly as if it came later.
    """
    rows = await connection.fetch(
        _CLAIM,
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


_CLAIM = """INSERT INTO inbox (message_id, digest, message_type, sender)
            SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[])
            ON CONFLICT (message_id) DO NOTHING
            RETURNING message_id"""


def _same_bytes(opened: Opened, digest: str | None) -> None:
    if digest != opened.digest:
        raise SecurityRejected(
            Reason.REPLAYED_MESSAGE_ID,
            f"message id {opened.envelope.message_id} was already used for other content",
        )
