"""How each investor command's answer shows in the investor's own tables: one ``Probe`` per kind of
message sent, for ``broker.awaiting.outcome`` (issue 10). SQL for the investor's schema only;
each probe returns None until the answer has been recorded."""

from __future__ import annotations

import json
from decimal import Decimal
from uuid import UUID

import asyncpg

from broker.awaiting import Answer, Probe, Verdict

ACCEPTED, REFUSED = Verdict.ACCEPTED, Verdict.REFUSED
# When an answer came after the message was sent: the outbox row's creation time is the send time.
_SENT = "(SELECT created_at FROM outbox WHERE message_id = $2)"


def request(request_id: UUID) -> Probe:
    """A certificate, name-transfer or reissue request (messages 32, 41, 46)."""

    async def probe(c: asyncpg.Connection) -> Answer | None:
        row = await c.fetchrow(
            "SELECT kind, status, reason, detail, cert_id FROM requests WHERE request_id = $1", request_id
        )
        if row is None or row["status"] == "sent":
            return None
        if row["status"] == "fulfilled":
            return Answer(
                ACCEPTED, f"{row['kind']} request {request_id} fulfilled; certificate {row['cert_id']} is in the wallet"
            )
        return Answer(REFUSED, f"{row['reason']}: {row['detail']}")

    return probe


def order(user_id: str, client_order_id: str) -> Probe:
    """An order or a replacement (message 33): accepted with its acceptance number, or rejected."""

    async def probe(c: asyncpg.Connection) -> Answer | None:
        row = await c.fetchrow(
            """SELECT status, acceptance_number, filled, quantity, reason, detail FROM orders
               WHERE user_id = $1 AND client_order_id = $2""",
            user_id,
            client_order_id,
        )
        if row is None or row["status"] == "sent":
            return None
        if row["status"] == "rejected":
            return Answer(REFUSED, f"order {client_order_id}: {row['reason']}: {row['detail']}")
        then = f", then {row['status']} ({row['reason']})" if row["status"] in ("cancelled", "replaced") else ""
        return Answer(
            ACCEPTED,
            f"order {client_order_id} accepted as number {row['acceptance_number']}, "
            f"{row['filled']} of {row['quantity']} filled so far{then}",
        )

    return probe


def cancel(user_id: str, client_order_id: str, message_id: UUID) -> Probe:
    async def probe(c: asyncpg.Connection) -> Answer | None:
        row = await c.fetchrow(
            f"""SELECT status, reason, detail, updated_at >= {_SENT} AS answered FROM orders
                WHERE user_id = $1 AND client_order_id = $3""",
            user_id,
            message_id,
            client_order_id,
        )
        if row is None or not row["answered"]:
            return None
        if row["status"] in ("cancelled", "replaced"):
            return Answer(ACCEPTED, f"order {client_order_id} {row['status']}")
        if row["reason"]:
            return Answer(REFUSED, f"cancel of {client_order_id}: {row['reason']}: {row['detail']}")
        return None

    return probe


def order_status(user_id: str, acceptance_number: int, message_id: UUID) -> Probe:
    async def probe(c: asyncpg.Connection) -> Answer | None:
        row = await c.fetchrow(
            f"""SELECT client_order_id, last_status FROM orders
                WHERE user_id = $1 AND acceptance_number = $3 AND last_status IS NOT NULL AND updated_at >= {_SENT}""",
            user_id,
            message_id,
            acceptance_number,
        )
        if row is None:
            return None
        status = json.loads(row["last_status"])
        return Answer(ACCEPTED, f"order {row['client_order_id']} (number {acceptance_number}): {status.get('status')}")

    return probe


def statement(user_id: str, account: str, message_id: UUID) -> Probe:
    async def probe(c: asyncpg.Connection) -> Answer | None:
        text = await c.fetchval(
            """SELECT statement FROM account_statements
               WHERE user_id = $1 AND account = $2 AND statement->>'inquiry_id' = $3""",
            user_id,
            account,
            str(message_id),
        )
        if text is None:
            return None
        found = json.loads(text)
        if not found["found"]:
            return Answer(REFUSED, f"settlement has no account {account} of {user_id}")
        return Answer(ACCEPTED, f"statement of {account}: balance {Decimal(found['balance']):,} {found['currency']}")

    return probe


def holdings(user_id: str, message_id: UUID) -> Probe:
    async def probe(c: asyncpg.Connection) -> Answer | None:
        text = await c.fetchval(
            f"SELECT statement FROM holdings_statements WHERE user_id = $1 AND received_at >= {_SENT}",
            user_id,
            message_id,
        )
        if text is None:
            return None
        return Answer(
            ACCEPTED, f"the issuer's register holds {len(json.loads(text)['holdings'])} certificate(s) for you"
        )

    return probe


def handover(handover_id: UUID) -> Probe:
    async def probe(c: asyncpg.Connection) -> Answer | None:
        row = await c.fetchrow("SELECT transferee, status, reason FROM handovers WHERE handover_id = $1", handover_id)
        if row is None:
            return None
        if row["status"] == "rejected":
            return Answer(REFUSED, f"{row['transferee']}'s client rejected the hand-over: {row['reason']}")
        return Answer(ACCEPTED, f"{row['transferee']}'s client verified the hand-over ({row['status']})")

    return probe


def identification(request_id: UUID) -> Probe:
    async def probe(c: asyncpg.Connection) -> Answer | None:
        row = await c.fetchrow(
            "SELECT customer_id, status, reason, detail FROM identifications WHERE request_id = $1", request_id
        )
        if row is None or row["status"] == "sent":
            return None
        if row["status"] == "refused":
            return Answer(REFUSED, f"{row['reason']}: {row['detail']}")
        return Answer(ACCEPTED, f"identified as customer {row['customer_id']}; the brokerage sent your view")

    return probe


def brokered_order(user_id: str, client_order_id: str) -> Probe:
    async def probe(c: asyncpg.Connection) -> Answer | None:
        row = await c.fetchrow(
            "SELECT status, reason, detail, trial FROM brokered_orders WHERE user_id = $1 AND client_order_id = $2",
            user_id,
            client_order_id,
        )
        if row is None or row["status"] == "sent":
            return None
        if row["status"] == "refused":
            return Answer(REFUSED, f"brokered order {client_order_id}: {row['reason']}: {row['detail']}")
        trial = json.loads(row["trial"]) if row["trial"] else {}
        held = f"; allowance {Decimal(trial['allowance']):,} held" if trial else ""
        return Answer(ACCEPTED, f"brokered order {client_order_id} relayed to the exchange ({row['status']}){held}")

    return probe


def standing_cover_opened(user_id: str, cover_id: UUID) -> Probe:
    """A standing cover's open: held by settlement (active), or refused with the reason."""

    async def probe(c: asyncpg.Connection) -> Answer | None:
        row = await c.fetchrow(
            "SELECT account, amount, status, reason, detail FROM standing_covers WHERE user_id = $1 AND cover_id = $2",
            user_id,
            cover_id,
        )
        if row is None or row["status"] == "requested":
            return None
        if row["status"] == "refused":
            return Answer(REFUSED, f"standing cover {cover_id}: {row['reason']}: {row['detail']}")
        return Answer(
            ACCEPTED,
            f"standing cover {cover_id} opened: settlement holds {row['amount']:,} on {row['account']}; "
            f"buy orders on {row['account']} draw on it",
        )

    return probe


def standing_cover_closed(user_id: str, cover_id: UUID, message_id: UUID) -> Probe:
    """A standing cover's close: closed once nothing drawn on it is live, or refused."""

    async def probe(c: asyncpg.Connection) -> Answer | None:
        row = await c.fetchrow(
            f"""SELECT amount, spent, status, reason, detail, updated_at >= {_SENT} AS answered
                FROM standing_covers WHERE user_id = $1 AND cover_id = $3""",
            user_id,
            message_id,
            cover_id,
        )
        if row is None or not row["answered"]:
            return None
        if row["status"] == "closed":
            return Answer(ACCEPTED, f"standing cover {cover_id} closed: {row['spent']:,} of {row['amount']:,} spent")
        if row["reason"]:
            return Answer(REFUSED, f"close of standing cover {cover_id}: {row['reason']}: {row['detail']}")
        return None

    return probe
