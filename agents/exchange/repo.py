"""SQL for the exchange's own schema: the CertID list.

Merging a list is a last-writer-wins by register version, entry by entry: an entry changes
only when the list is newer than what the exchange holds for that CertID, so lists that
arrive late, twice or out of order converge to the issuer's register. A snapshot also
retires every valid CertID of its issue that it does not list.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from uuid import UUID

import asyncpg

from broker.db import Writes
from schemas.issuance import CertIdListUpdated


@dataclass(frozen=True, slots=True)
class CertIdListEntry:
    cert_id: UUID
    issue_code: str
    user_id: str | None
    shares: int | None
    status: str
    version: int


async def merge(connection: asyncpg.Connection, update: CertIdListUpdated) -> None:
    await connection.executemany(
        """INSERT INTO certid_list (cert_id, issue_code, user_id, shares, status, version)
           VALUES ($1, $2, $3, $4, 'valid', $5)
           ON CONFLICT (cert_id) DO UPDATE
           SET user_id = excluded.user_id, shares = excluded.shares,
               status = 'valid', version = excluded.version
           WHERE certid_list.version < excluded.version AND certid_list.status <> 'in_transfer'""",
        [(e.cert_id, update.issue_code, e.user_id, e.shares, update.version) for e in update.valid],
    )
    await connection.executemany(
        """INSERT INTO certid_list (cert_id, issue_code, status, version)
           VALUES ($1, $2, 'retired', $3)
           ON CONFLICT (cert_id) DO UPDATE SET status = 'retired', version = excluded.version
           WHERE certid_list.version < excluded.version AND certid_list.status <> 'in_transfer'""",
        [(cert_id, update.issue_code, update.version) for cert_id in update.retired],
    )
    if update.kind == "snapshot":  # what it does not list, within its bounds, is no longer valid
        await connection.execute(
            """UPDATE certid_list SET status = 'retired', version = $3
               WHERE issue_code = $1 AND status = 'valid' AND version < $3
                 AND NOT (cert_id = ANY($2::uuid[]))
                 AND ($4::uuid IS NULL OR cert_id > $4) AND ($5::uuid IS NULL OR cert_id <= $5)""",
            update.issue_code,
            [e.cert_id for e in update.valid],
            update.version,
            update.after,
            update.through,
        )
    await connection.execute(
        """INSERT INTO certid_lists (issue_code, share_class, list_id, version)
           VALUES ($1, $2, $3, $4)
           ON CONFLICT (issue_code) DO UPDATE
           SET list_id = excluded.list_id, version = excluded.version, received_at = now()
           WHERE certid_lists.version <= excluded.version""",
        update.issue_code,
        update.share_class.value,
        update.list_id,
        update.version,
    )


async def transferred(
    connection: asyncpg.Connection,
    issue_code: str,
    old_cert_id: UUID,
    version: int,
    valid: list[tuple[UUID, str, int]],
) -> None:
    """S127: the old CertID is retired and the new ones (buyer, seller's remainder) are valid, in
    one round trip (the new CertIDs are never the old one)."""
    await transferred_all(connection, [Transferred(issue_code, old_cert_id, version, valid)])


@dataclass(frozen=True, slots=True)
class Transferred:
    """A name transfer as the CertID list sees it: the old CertID, the register version, and the
    new CertIDs with their holders and shares."""

    issue_code: str
    old_cert_id: UUID
    version: int
    valid: list[tuple[UUID, str, int]]


async def transferred_all(connection: asyncpg.Connection, transfers: Sequence[Transferred]) -> None:
    """``transferred`` for several transfers (of distinct old CertIDs), in one statement."""
    await listing(transfers).execute(connection)


def listing(transfers: Sequence[Transferred]) -> Writes:
    """``transferred_all``'s writes, to ride in another statement (``order_repo.complete``): each
    old CertID retired, each new one listed valid (the new CertIDs are never an old one)."""
    new = [(t, cert_id, user_id, shares) for t in transfers for cert_id, user_id, shares in t.valid]
    return Writes(
        """retired AS (
               UPDATE certid_list l SET status = 'retired', version = greatest(l.version, r.version)
               FROM unnest($1::uuid[], $2::bigint[]) AS r (old_cert_id, version)
               WHERE l.cert_id = r.old_cert_id),
           listed AS (
               INSERT INTO certid_list (cert_id, issue_code, user_id, shares, status, version)
               SELECT cert_id, issue_code, user_id, shares, 'valid', version
               FROM unnest($3::uuid[], $4::text[], $5::text[], $6::bigint[], $7::bigint[])
                   AS v (cert_id, issue_code, user_id, shares, version)
               ON CONFLICT (cert_id) DO NOTHING)""",
        (
            [t.old_cert_id for t in transfers],
            [t.version for t in transfers],
            [cert_id for _, cert_id, _, _ in new],
            [t.issue_code for t, _, _, _ in new],
            [user_id for _, _, user_id, _ in new],
            [shares for _, _, _, shares in new],
            [t.version for t, _, _, _ in new],
        ),
    )


async def transfer_abandoned(connection: asyncpg.Connection, cert_id: UUID) -> None:
    """The trade did not settle and the certificate did not move: it is valid again (issue 11)."""
    await connection.execute(
        "UPDATE certid_list SET status = 'valid' WHERE cert_id = $1 AND status = 'in_transfer'", cert_id
    )


async def invalidated(connection: asyncpg.Connection, cert_id: UUID) -> None:
    """The issuer refused the transfer: the CertID is not valid, whatever the list said."""
    await connection.execute("UPDATE certid_list SET status = 'retired' WHERE cert_id = $1", cert_id)


async def certid_list(connection: asyncpg.Connection, issue_code: str | None = None) -> list[CertIdListEntry]:
    rows = await connection.fetch(
        """SELECT cert_id, issue_code, user_id, shares, status, version FROM certid_list
           WHERE $1::text IS NULL OR issue_code = $1 ORDER BY issue_code, version, cert_id""",
        issue_code,
    )
    return [CertIdListEntry(**dict(r)) for r in rows]
