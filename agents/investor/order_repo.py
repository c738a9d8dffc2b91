"""SQL for the investor's trading records; records never leave this module."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import asyncpg

from agents.investor.domain import Dividend
from broker.db import Writes, unnest_columns
from schemas.certificates import IssuerSignature, SignedCertificate
from schemas.settlement import SettlementNotice, SettlementNoticeV1
from schemas.trading import SubmitOrder


@dataclass(frozen=True, slots=True)
class OrderRecord:
    user_id: str
    client_order_id: str
    issue_code: str
    side: str
    order_type: str
    price: Decimal | None
    quantity: int
    time_in_force: str
    settlement_account: str
    cert_id: UUID | None
    holder_name: str | None
    holder_address: str | None
    dividend_method: str | None
    dividend_account: str | None
    request_hash: str
    acceptance_number: int | None
    status: str
    filled: int
    reason: str | None
    detail: str | None
    updated_at: datetime
    replaces: str | None


_COLUMNS = """user_id, client_order_id, issue_code, side, order_type, price, quantity, time_in_force,
              settlement_account, cert_id, holder_name, holder_address, dividend_method,
              dividend_account, request_hash, acceptance_number, status, filled, reason, detail, updated_at,
              replaces"""


@dataclass(frozen=True, slots=True)
class Placed:
    """An order as the investor placed it: what it sent and its account in clear (the order carries
    it sealed)."""

    order: SubmitOrder
    request_hash: str
    cert_id: UUID | None
    dividend: Dividend | None
    settlement_account: str


async def record_orders(connection: asyncpg.Connection, placed: Sequence[Placed]) -> set[str]:
    """The investor's own record of its orders, in one statement: the client order ids recorded.
    One already recorded is left as it was and is not among them. Rows go in in client order id
    order, whatever the list's, so two lists racing on the same ids wait rather than deadlock."""
    ordered = sorted(placed, key=lambda p: p.order.client_order_id)
    rows = await connection.fetch(
        """INSERT INTO orders (user_id, client_order_id, issue_code, side, order_type, price, quantity,
               time_in_force, settlement_account, cert_id, holder_name, holder_address, dividend_method,
               dividend_account, request_hash)
           SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::numeric[],
               $7::bigint[], $8::text[], $9::text[], $10::uuid[], $11::text[], $12::text[], $13::text[],
               $14::text[], $15::text[])
           ON CONFLICT (user_id, client_order_id) DO NOTHING
           RETURNING client_order_id""",
        *unnest_columns([_placed_row(p) for p in ordered], 15),
    )
    return {row["client_order_id"] for row in rows}


def _placed_row(placed: Placed) -> tuple[Any, ...]:
    order, terms, dividend = placed.order, placed.order.terms, placed.dividend
    return (
        order.user_id,
        order.client_order_id,
        order.issue_code,
        terms.side.value,
        terms.order_type.value,
        terms.price,
        terms.quantity,
        terms.time_in_force.value,
        placed.settlement_account,
        placed.cert_id,
        order.holder_name,
        order.holder_address,
        dividend.method.value if dividend else None,
        dividend.account if dividend else None,
        placed.request_hash,
    )


async def client_order_used(connection: asyncpg.Connection, user_id: str, client_order_id: str) -> bool:
    used = await connection.fetchval(
        "SELECT true FROM orders WHERE user_id = $1 AND client_order_id = $2", user_id, client_order_id
    )
    return bool(used)


async def record_replacement(
    connection: asyncpg.Connection,
    old: OrderRecord,
    new_client_order_id: str,
    price: Decimal | None,
    quantity: int,
    request_hash: str,
) -> None:
    """A replacement order: the old one's terms and accounts, the new price and quantity."""
    await connection.execute(
        """INSERT INTO orders (user_id, client_order_id, issue_code, side, order_type, price, quantity,
               time_in_force, settlement_account, cert_id, holder_name, holder_address, dividend_method,
               dividend_account, request_hash, replaces)
           SELECT user_id, $3, issue_code, side, order_type, $4, $5, time_in_force, settlement_account,
                  cert_id, holder_name, holder_address, dividend_method, dividend_account, $6, $2
           FROM orders WHERE user_id = $1 AND client_order_id = $2""",
        old.user_id,
        old.client_order_id,
        new_client_order_id,
        price,
        quantity,
        request_hash,
    )


async def order(connection: asyncpg.Connection, user_id: str, client_order_id: str) -> OrderRecord | None:
    row = await connection.fetchrow(
        f"SELECT {_COLUMNS} FROM orders WHERE user_id = $1 AND client_order_id = $2 FOR UPDATE",
        user_id,
        client_order_id,
    )
    return OrderRecord(**dict(row)) if row else None


async def orders(connection: asyncpg.Connection, user_id: str) -> list[OrderRecord]:
    rows = await connection.fetch(f"SELECT {_COLUMNS} FROM orders WHERE user_id = $1 ORDER BY created_at", user_id)
    return [OrderRecord(**dict(r)) for r in rows]


async def update_order(
    connection: asyncpg.Connection, user_id: str, client_order_id: str, **changes: Any
) -> OrderRecord | None:
    """Change the user's order; the order as it is then (None: there is no such order)."""
    columns = ", ".join(f"{name} = ${i}" for i, name in enumerate(changes, start=3))
    row = await connection.fetchrow(
        f"""UPDATE orders SET {columns}, updated_at = now() WHERE user_id = $1 AND client_order_id = $2
            RETURNING {_COLUMNS}""",
        user_id,
        client_order_id,
        *changes.values(),
    )
    return OrderRecord(**dict(row)) if row else None


# ``{quantity}`` more (or, reversed, fewer) of the user's order filled, and its status with it.
_ADD_FILLED = """UPDATE orders SET filled = filled + {quantity},
               status = CASE WHEN filled + {quantity} >= quantity THEN 'filled'
                             WHEN status = 'filled' THEN 'accepted' ELSE status END,
               updated_at = now() {source}
           WHERE user_id = {user_id} AND client_order_id = {client_order_id}"""


async def add_filled(connection: asyncpg.Connection, user_id: str, client_order_id: str, quantity: int) -> None:
    await connection.execute(
        _ADD_FILLED.format(user_id="$1", client_order_id="$2", quantity="$3", source=""),
        user_id,
        client_order_id,
        quantity,
    )


async def accept_orders(connection: asyncpg.Connection, rows: Sequence[tuple[str, str, int]]) -> list[OrderRecord]:
    """Orders accepted — rows of (user, client order id, acceptance number) — in one statement;
    the orders as they are then (an order the user does not have is not among them)."""
    records = await connection.fetch(
        f"""UPDATE orders SET acceptance_number = a.number, status = 'accepted', updated_at = now()
            FROM unnest($1::text[], $2::text[], $3::bigint[]) AS a (a_user, a_order, number)
            WHERE user_id = a.a_user AND client_order_id = a.a_order
            RETURNING {_COLUMNS}""",
        *unnest_columns(rows, 3),
    )
    return [OrderRecord(**dict(r)) for r in records]


@dataclass(frozen=True, slots=True)
class Fill:
    """An execution of one of the user's orders, as the exchange reported it."""

    user_id: str
    client_order_id: str
    matching_number: int
    side: str
    issue_code: str
    price: Decimal
    quantity: int


async def record_executions(connection: asyncpg.Connection, fills: Sequence[Fill]) -> list[bool]:
    """Each execution once, and its quantity added to its order's fill, in one statement; per
    fill, in order, whether the user has the order (an execution recorded before changes
    nothing). Fills of one order must not share a set (broker.set_based keys): an order's row
    is updated once a statement. A trade's matching number recorded twice for one user (a
    self-trade) is recorded for the first fill, as one at a time."""
    if not fills:
        return []
    fill = _ADD_FILLED.format(
        user_id="r_user", client_order_id="r_order", quantity="r_quantity", source="FROM recorded"
    )
    rows = await connection.fetch(
        f"""WITH input AS (
                SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::numeric[],
                                     $7::bigint[]) WITH ORDINALITY
                    AS f (f_user, f_order, f_number, f_side, f_issue, f_price, f_quantity, n)),
            ordered AS (
                SELECT f.*, EXISTS (SELECT FROM orders WHERE user_id = f_user AND client_order_id = f_order) AS found
                FROM input f),
            recorded AS (
                INSERT INTO executions (matching_number, user_id, client_order_id, side, issue_code, price, quantity,
                    status)
                SELECT f_number, f_user, f_order, f_side, f_issue, f_price, f_quantity, 'executed'
                FROM ordered WHERE found ORDER BY n
                ON CONFLICT DO NOTHING RETURNING user_id AS r_user, client_order_id AS r_order, quantity AS r_quantity),
            filled AS ({fill})
            SELECT found FROM ordered ORDER BY n""",
        *unnest_columns(
            [
                (f.user_id, f.client_order_id, f.matching_number, f.side, f.issue_code, f.price, f.quantity)
                for f in fills
            ],
            7,
        ),
    )
    return [r["found"] for r in rows]


async def complete_executions(
    connection: asyncpg.Connection, rows: Sequence[tuple[str, str, int, int | None]]
) -> dict[tuple[str, str], OrderRecord]:
    """Executions completed — rows of (user, client order id, matching number, name-transfer
    number) — and the orders they filled, locked, in one round trip: by (user, client order id),
    an order the user does not have missing."""
    records = await connection.fetch(
        f"""WITH input AS (
                SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[])
                    AS c (c_user, c_order, c_number, c_ntn)),
            completed AS (
                UPDATE executions SET status = 'completed', name_transfer_number = coalesce(c_ntn, name_transfer_number)
                FROM input WHERE matching_number = c_number AND user_id = c_user)
            SELECT {_COLUMNS} FROM orders
            WHERE (user_id, client_order_id) IN (SELECT c_user, c_order FROM input)
            ORDER BY user_id, client_order_id FOR UPDATE""",
        *unnest_columns(rows, 4),
    )
    return {(r["user_id"], r["client_order_id"]): OrderRecord(**dict(r)) for r in records}


async def execution_status(
    connection: asyncpg.Connection, matching_number: int, user_id: str, status: str, ntn: int | None = None
) -> None:
    await connection.execute(
        """UPDATE executions SET status = $3, name_transfer_number = coalesce($4, name_transfer_number)
           WHERE matching_number = $1 AND user_id = $2""",
        matching_number,
        user_id,
        status,
        ntn,
    )


async def executions(connection: asyncpg.Connection, user_id: str) -> list[dict[str, Any]]:
    rows = await connection.fetch(
        """SELECT matching_number, client_order_id, side, issue_code, price, quantity, status, name_transfer_number
           FROM executions WHERE user_id = $1 ORDER BY matching_number""",
        user_id,
    )
    return [dict(r) for r in rows]


async def committable(connection: asyncpg.Connection, holder: str, cert_id: UUID) -> SignedCertificate | None:
    """A held certificate no order uses yet, locked for this transaction."""
    return (await committable_all(connection, holder, [cert_id])).get(cert_id)


async def committable_all(
    connection: asyncpg.Connection, holder: str, cert_ids: Sequence[UUID]
) -> dict[UUID, SignedCertificate]:
    """``committable`` for several certificates in one statement, locked in CertID order (two lists
    selling the same ones wait for each other rather than deadlock): those the wallet can commit."""
    if not cert_ids:
        return {}
    rows = await connection.fetch(
        """SELECT cert_id, content, issuer_signature, issuer_certificate FROM wallet
           WHERE cert_id = ANY($1::uuid[]) AND holder_user_id = $2 AND status = 'held' AND committed_order IS NULL
           ORDER BY cert_id FOR UPDATE""",
        list(cert_ids),
        holder,
    )
    return {
        row["cert_id"]: SignedCertificate(
            content=row["content"],
            issuer_signature=IssuerSignature(certificate=row["issuer_certificate"], signature=row["issuer_signature"]),
        )
        for row in rows
    }


async def commit_certificate(connection: asyncpg.Connection, cert_id: UUID, client_order_id: str | None) -> None:
    await connection.execute("UPDATE wallet SET committed_order = $2 WHERE cert_id = $1", cert_id, client_order_id)


async def commit_certificates(connection: asyncpg.Connection, commits: Sequence[tuple[UUID, str]]) -> None:
    """``commit_certificate`` for several certificates, each to its order, in one statement (none if none)."""
    if commits:
        await connection.execute(
            """UPDATE wallet SET committed_order = c.client_order_id
               FROM unnest($1::uuid[], $2::text[]) AS c (cert_id, client_order_id)
               WHERE wallet.cert_id = c.cert_id""",
            [cert_id for cert_id, _ in commits],
            [client_order_id for _, client_order_id in commits],
        )


async def release_certificates(connection: asyncpg.Connection, holder: str, client_order_id: str) -> None:
    await connection.execute(
        "UPDATE wallet SET committed_order = NULL WHERE holder_user_id = $1 AND committed_order = $2",
        holder,
        client_order_id,
    )


async def surrender_all(connection: asyncpg.Connection, cert_ids: Sequence[UUID]) -> None:
    """Certificates the holder no longer holds, in one statement."""
    if cert_ids:
        await connection.execute("UPDATE wallet SET status = 'surrendered' WHERE cert_id = ANY($1::uuid[])", cert_ids)


async def surrender(connection: asyncpg.Connection, cert_id: UUID) -> str | None:
    """A certificate the holder no longer holds; returns the order it backed."""
    committed: str | None = await connection.fetchval(
        "UPDATE wallet SET status = 'surrendered' WHERE cert_id = $1 RETURNING committed_order", cert_id
    )
    return committed


def settlement_messages_kept(rows: Sequence[tuple[str, str, int | None, str]]) -> Writes:
    """What settlement said, kept as received: rows of settlement_messages (user, type, trade,
    body), in their order (their ids); appends nothing reads back in the batch that makes them."""
    return Writes(
        """said AS (
               INSERT INTO settlement_messages (user_id, message_type, matching_number, body)
               SELECT user_id, message_type, matching_number, body::jsonb
               FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[])
                    WITH ORDINALITY AS k (user_id, message_type, matching_number, body, n)
               ORDER BY n)""",
        tuple(unnest_columns(rows, 4)),
        what="settlement's messages kept",
        appends=True,
    )


def notices_recorded(notices: Sequence[tuple[str, SettlementNotice | SettlementNoticeV1]]) -> Writes:
    """Settlement's notices of trades' cash legs, each to its user, in their order: a notice
    already kept for the user and trade stays as it was (the first one, as one at a time)."""
    return Writes(
        """noticed AS (
               INSERT INTO settlement_notices (matching_number, user_id, settled, amount, currency, failure, detail)
               SELECT matching_number, user_id, settled, amount, currency, failure, detail
               FROM unnest($1::bigint[], $2::text[], $3::boolean[], $4::numeric[], $5::text[], $6::text[], $7::text[])
                    WITH ORDINALITY AS k (matching_number, user_id, settled, amount, currency, failure, detail, n)
               ORDER BY n
               ON CONFLICT DO NOTHING)""",
        tuple(unnest_columns([_notice_row(user, notice) for user, notice in notices], 7)),
        what="settlement's notices recorded",
        appends=True,
    )


def _notice_row(user: str, notice: SettlementNotice | SettlementNoticeV1) -> tuple[object, ...]:
    failure = notice.failure.value if notice.failure else None
    return (notice.matching_number, user, notice.settled, notice.amount, notice.currency, failure, notice.detail)


async def notices(connection: asyncpg.Connection, user_id: str) -> list[dict[str, Any]]:
    rows = await connection.fetch(
        "SELECT * FROM settlement_notices WHERE user_id = $1 ORDER BY matching_number", user_id
    )
    return [dict(r) for r in rows]


async def record_statement(connection: asyncpg.Connection, user_id: str, account: str, statement: str) -> None:
    await connection.execute(
        """INSERT INTO account_statements (user_id, account, statement) VALUES ($1, $2, $3::jsonb)
           ON CONFLICT (user_id, account) DO UPDATE SET statement = excluded.statement, received_at = now()""",
        user_id,
        account,
        statement,
    )


async def statement(connection: asyncpg.Connection, user_id: str, account: str) -> str | None:
    text: str | None = await connection.fetchval(
        "SELECT statement FROM account_statements WHERE user_id = $1 AND account = $2", user_id, account
    )
    return text


async def replaced(connection: asyncpg.Connection, user_id: str, old: str, new: str) -> None:
    """The exchange accepted ``new`` in place of ``old``: retire the old order, move its certificate."""
    await connection.execute(
        """UPDATE orders SET status = 'replaced', updated_at = now()
           WHERE user_id = $1 AND client_order_id = $2 AND status IN ('sent', 'accepted')""",
        user_id,
        old,
    )
    await connection.execute(
        "UPDATE wallet SET committed_order = $3 WHERE holder_user_id = $1 AND committed_order = $2", user_id, old, new
    )
