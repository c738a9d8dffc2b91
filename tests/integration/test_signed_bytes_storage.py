"""Signed bytes are stored as they are (migration 0078): a large outbox body or header, or a hot
row's endorsed certificate, moves out of its row without being run through pglz first — the
attempt cost PostgreSQL CPU and never saved a byte on what Kabuto stores (docs/performance.md,
stop 29). The body read back is the body written, byte for byte, whatever its storage."""

from __future__ import annotations

import json

import asyncpg
import pytest

from agents.registry import AGENTS
from broker.settings import Settings

# Every column migration 0078 stores out of line uncompressed.
EXTERNAL = [
    *((agent, "outbox", column) for agent in AGENTS for column in ("body", "headers")),
    ("exchange", "orders", "certificate"),
    ("settlement", "dvp_instructions", "securities"),
    ("issuer", "reservations", "request"),
    ("issuer", "reservations", "delivery"),
]


async def test_every_column_of_signed_bytes_is_stored_external(settings: Settings) -> None:
    admin = await asyncpg.connect(settings.database_url)
    try:
        rows = await admin.fetch(
            """SELECT n.nspname AS agent, c.relname AS table_name, a.attname AS column_name,
                      a.attstorage::text AS attstorage
               FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
               JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE (n.nspname, c.relname, a.attname) IN (SELECT * FROM unnest($1::text[], $2::text[], $3::text[]))""",
            *(list(column) for column in zip(*EXTERNAL, strict=True)),
        )
    finally:
        await admin.close()
    found = {(r["agent"], r["table_name"], r["column_name"]): r["attstorage"] for r in rows}
    assert set(found) == set(EXTERNAL), "a column named here is missing from the schema"
    assert {column: storage for column, storage in found.items() if storage != "e"} == {}


@pytest.mark.parametrize("size", [100, 3_000, 64_000])
async def test_an_outbox_body_is_kept_byte_for_byte_and_never_compressed(settings: Settings, size: int) -> None:
    """A body of one repeated byte is as compressible as a value can be: under the default
    storage pglz shrinks a large one to a few dozen bytes (the last assertion fails without 0078)."""
    body = b"k" * size
    headers = {"kabuto-signature": "s" * size}
    admin = await asyncpg.connect(settings.database_url)
    written = admin.transaction()  # rolled back: the row is never published, nothing of it stays
    await written.start()
    try:
        await admin.execute(
            """INSERT INTO investor.outbox (message_id, message_type, exchange, routing_key, body, headers)
               VALUES (gen_random_uuid(), 'test.storage', 'messages', 'nobody', $1, $2::text::jsonb)""",
            body,
            json.dumps(headers),
        )
        stored = await admin.fetchrow(
            """SELECT body, pg_column_size(body) AS body_stored, pg_column_size(headers) AS headers_stored
               FROM investor.outbox WHERE message_type = 'test.storage'"""
        )
    finally:
        await written.rollback()
        await admin.close()
    assert stored is not None
    assert stored["body"] == body
    assert stored["body_stored"] >= size
    assert stored["headers_stored"] >= size
