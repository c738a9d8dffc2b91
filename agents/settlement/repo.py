"""SQL for the settlement agent's own schema: accounts, the ledger and settlement instructions.

Records never leave this module. A balance is the sum of an account's postings, kept beside them
by the database (migration 0072: a trigger records each posting, the agent may read the kept
balance but not write it); the database refuses an unbalanced or overdrawing entry at commit
(migrations 0005, 0072) whatever the code does.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from uuid import UUID

import asyncpg

from agents.settlement.domain import (
    Account,
    AccountExists,
    AccountKind,
    Entry,
    Statement,
    external_account,
)
from broker.batch_locks import BatchLocks
from broker.running_totals import RunningTotal
from schemas.settlement import Posting

# Account locks a group-committed batch already holds (the agent's batch scope, app.py).
LOCKS = BatchLocks("settlement")
# What placed holds keep on each account, kept beside the holds (migration 0068;
# broker.running_totals) so that it costs the same however many are placed.
PLACED_HOLDS = RunningTotal("placed_holds", "account_id")
# An account's balance, kept beside its postings (migration 0072): the sum of its postings, read
# at the same cost however many it has. The ledger stays append-only; ``balance_drift`` compares.
ACCOUNT_BALANCES = RunningTotal("account_balances", "account_id", folder="fold_account_balances")
_BALANCE = ACCOUNT_BALANCES.of("a.account_id")


async def open_account(connection: asyncpg.Connection, account: Account) -> None:
    """Open an account, and the external account of its currency if this is the first."""
    opened = await _insert_account(connection, account)
    if not opened:
        raise AccountExists(f"account {account.account_id} is already open")
    await _insert_account(connection, external_account(account.currency))


async def _insert_account(connection: asyncpg.Connection, account: Account) -> bool:
    inserted = await connection.fetchval(
        """INSERT INTO accounts (account_id, owner_user_id, currency, kind, institution, label)
           VALUES ($1, $2, $3, $4, $5, $6)
           ON CONFLICT (account_id) DO NOTHING RETURNING true""",
        account.account_id,
        account.owner_user_id,
        account.currency,
        account.kind.value,
        account.institution,
        account.label,
    )
    return bool(inserted)


async def account(connection: asyncpg.Connection, account_id: str) -> Account | None:
    row = await connection.fetchrow(
        f"SELECT a.*, {_BALANCE} AS balance FROM accounts a WHERE a.account_id = $1", account_id
    )
    return _account(row) if row else None


async def accounts_for_update(connection: asyncpg.Connection, account_ids: Collection[str]) -> dict[str, Account]:
    """The accounts with their balances, locked until the transaction ends.

    Locked in id order so that two entries touching the same accounts cannot deadlock; ``NO KEY
    UPDATE`` so that other entries' foreign-key checks on these accounts do not wait. Read in a
    second statement: a statement's snapshot is taken before it waits for a lock,
    so a balance read in the locking statement could miss the entry it waited for.
    """
    ids = await lock_accounts(connection, account_ids)
    rows = await connection.fetch(
        f"SELECT a.*, {_BALANCE} AS balance FROM accounts a WHERE a.account_id = ANY($1::text[])", ids
    )
    return {row["account_id"]: _account(row) for row in rows}


async def lock_accounts(connection: asyncpg.Connection, account_ids: Collection[str]) -> list[str]:
    """Lock the accounts (as ``accounts_for_update`` does) without reading them; the ids, sorted.
    In a batch a set of accounts is locked once (broker.batch_locks): a batch's trades often
    share their buyer's and seller's accounts."""
    ids = sorted(set(account_ids))
    await LOCKS.lock(
        connection,
        ("accounts", tuple(ids)),
        "SELECT 1 FROM accounts WHERE account_id = ANY($1::text[]) ORDER BY account_id FOR NO KEY UPDATE",
        ids,
        rows=len(ids),
    )
    return ids


@dataclass(frozen=True, slots=True)
class CoverView:
    """What a cover decision reads: the buyer's account (locked), what is held on it, and
    whether this cover id was seen before."""

    account: Account | None
    held: Decimal
    duplicate: bool


async def cover_view(connection: asyncpg.Connection, account_id: str, cover_id: UUID) -> CoverView:
    """Lock the account, then read it with its holds and the cover id's use in one statement
    (the lock and the read stay apart, as in ``accounts_for_update``). The id is used if a cover
    or any hold has it: a cover's id is its hold's, and a brokerage's hold under the same id
    would then have two placers (B101). In a batch the account
    is locked once (broker.batch_locks): a buyer's covers often come several to a batch."""
    await LOCKS.lock(
        connection,
        ("account", account_id),
        "SELECT 1 FROM accounts WHERE account_id = $1 FOR NO KEY UPDATE",
        account_id,
    )
    row = await connection.fetchrow(
        f"""SELECT a.*, {_BALANCE} AS balance,
                   {PLACED_HOLDS.of("$1")} AS held,
                   EXISTS (SELECT 1 FROM covers c WHERE c.cover_id = $2)
                       OR EXISTS (SELECT 1 FROM holds h WHERE h.hold_id = $2) AS duplicate
            FROM (VALUES (1)) AS one (x) LEFT JOIN accounts a ON a.account_id = $1""",
        account_id,
        cover_id,
    )
    assert row is not None  # the VALUES row
    account = _account(row) if row["account_id"] is not None else None
    return CoverView(account, row["held"], row["duplicate"])


def _account(row: asyncpg.Record) -> Account:
    return Account(
        account_id=row["account_id"],
        owner_user_id=row["owner_user_id"],
        currency=row["currency"],
        kind=AccountKind(row["kind"]),
        balance=row["balance"],
        institution=row["institution"],
        label=row["label"],
    )


async def post(connection: asyncpg.Connection, entry: Entry, posted_at: datetime) -> int | None:
    """Write the entry and its postings, in one statement; None if its (kind, reference) was
    already posted."""
    return (await post_all(connection, [entry], posted_at))[0]


async def post_all(connection: asyncpg.Connection, entries: Sequence[Entry], posted_at: datetime) -> list[int | None]:
    """Write the entries and their postings, in one statement; each one's id, in order, None
    where its (kind, reference) was already posted. Their (kind, reference) are distinct."""
    if len({(entry.kind, entry.reference) for entry in entries}) < len(entries):
        raise ValueError("two entries of one (kind, reference) in one posting")
    rows = await connection.fetch(
        """WITH entry AS (
               INSERT INTO entries (kind, reference, description, posted_at)
               SELECT e.kind, e.reference, e.description, $4
               FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS e (kind, reference, description, n)
               ORDER BY e.n
               ON CONFLICT (kind, reference) DO NOTHING RETURNING entry_id, kind, reference),
           legs AS (
               INSERT INTO postings (entry_id, account_id, amount)
               SELECT entry.entry_id, leg.account_id, leg.amount
               FROM entry JOIN unnest($5::text[], $6::text[], $7::text[], $8::numeric[])
                   AS leg (kind, reference, account_id, amount)
                   ON leg.kind = entry.kind AND leg.reference = entry.reference)
           SELECT entry_id, kind, reference FROM entry""",
        [entry.kind.value for entry in entries],
        [entry.reference for entry in entries],
        [entry.description for entry in entries],
        posted_at,
        [entry.kind.value for entry in entries for _ in entry.legs],
        [entry.reference for entry in entries for _ in entry.legs],
        [leg.account_id for entry in entries for leg in entry.legs],
        [leg.amount for entry in entries for leg in entry.legs],
    )
    posted = {(row["kind"], row["reference"]): row["entry_id"] for row in rows}
    return [posted.pop((entry.kind.value, entry.reference), None) for entry in entries]


async def balance(connection: asyncpg.Connection, account_id: str) -> Decimal:
    total: Decimal = await connection.fetchval(f"SELECT {ACCOUNT_BALANCES.of('$1')}", account_id)
    return total


async def balance_drift(connection: asyncpg.Connection) -> list[tuple[str, Decimal, Decimal]]:
    """Every account whose kept balance differs from the sum of its postings: (account, kept,
    summed). Empty unless a write bypassed migration 0072's trigger."""
    return await ACCOUNT_BALANCES.drift(
        connection, "SELECT account_id AS key, sum(amount) AS summed FROM postings GROUP BY account_id"
    )


async def statement(connection: asyncpg.Connection, account: Account, recent: int) -> Statement:
    """The account's deposits and withdrawals in total, and its ``recent`` latest postings, oldest first.

    The share lock keeps entries to this account from committing between the two reads, so the
    balance always equals the last posting's balance after it.
    """
    await connection.execute("SELECT 1 FROM accounts WHERE account_id = $1 FOR SHARE", account.account_id)
    totals = await connection.fetchrow(
        """SELECT coalesce(sum(p.amount) FILTER (WHERE e.kind = 'deposit'), 0) AS deposits,
                  coalesce(-sum(p.amount) FILTER (WHERE e.kind = 'withdrawal'), 0) AS withdrawals,
                  coalesce(sum(p.amount), 0) AS balance
           FROM postings p JOIN entries e USING (entry_id) WHERE p.account_id = $1""",
        account.account_id,
    )
    rows = await connection.fetch(
        """SELECT * FROM (
               SELECT p.entry_id, e.posted_at, e.kind, e.reference, p.amount,
                      sum(p.amount) OVER (ORDER BY p.entry_id) AS balance_after
               FROM postings p JOIN entries e USING (entry_id) WHERE p.account_id = $1
           ) AS history ORDER BY entry_id DESC LIMIT $2""",
        account.account_id,
        recent,
    )
    postings = tuple(Posting(**dict(row)) for row in reversed(rows))
    current = Account(account.account_id, account.owner_user_id, account.currency, account.kind, totals["balance"])
    return Statement(current, totals["deposits"], totals["withdrawals"], postings)
