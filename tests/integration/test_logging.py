"""Logs are structured facts an operator can search, and never carry a secret."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pytest
import structlog

from broker import logs
from broker.pki import KeyStore
from broker.settings import Settings
from tests import support


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    logs.configure("debug", "json", stream, cache=False)
    yield stream
    structlog.reset_defaults()


async def test_every_processed_message_is_logged_with_agent_ids_type_and_correlation(
    settings: Settings, log_lines: io.StringIO
) -> None:
    async with support.agents(settings, "investor", "issuer", "exchange") as rt:
        await support.open_offering(rt["issuer"])
        request_id = await support.request(rt["investor"], "alice")
        await rt["exchange"].outcomes.reply("certid_list.updated", request_id)
    lines = [json.loads(line) for line in log_lines.getvalue().splitlines()]
    processed = [line for line in lines if line["event"] == "message_processed"]
    assert {line["agent"] for line in processed} == {"issuer", "investor", "exchange"}
    for line in processed:
        assert {"message_id", "type", "correlation_id", "causation_id", "sender", "timestamp", "level"} <= line.keys()
        assert line["correlation_id"] == str(request_id)


async def test_no_private_key_signature_or_pin_ever_reaches_a_log(
    settings: Settings, keys: KeyStore, log_lines: io.StringIO
) -> None:
    from agents.brokerage import operators
    from agents.investor.brokered import identify

    async with support.agents(settings, "investor", "issuer", "exchange", "settlement", "brokerage") as rt:
        await support.open_offering(rt["issuer"])
        request_id = await support.request(rt["investor"], "alice")
        await rt["exchange"].outcomes.reply("certid_list.updated", request_id)
        await rt["brokerage"].command("brokerage", operators.register_customer("IM-9", "alice", "97531864", []))
        asked = await rt["investor"].command("alice", identify("IM-9", "97531864"))
        await rt["investor"].outcomes.reply("brokerage.customer_view", asked)
        wrong = await rt["investor"].command("alice", identify("IM-9", "00000000"))
        await rt["investor"].outcomes.reply("brokerage.identify_refused", wrong)
    text = log_lines.getvalue()
    assert "message_processed" in text  # the logs were captured
    secrets = ["PRIVATE KEY", "97531864", "00000000", keys.key_path("alice").read_text().splitlines()[1]]
    for secret in secrets:
        assert secret not in text
    outbox_signature = await _a_signature(settings)
    assert outbox_signature not in text


async def _a_signature(settings: Settings) -> str:
    import asyncpg

    conn = await asyncpg.connect(settings.database_url)
    try:
        headers = await conn.fetchval("SELECT headers FROM investor.outbox LIMIT 1")
    finally:
        await conn.close()
    return str(json.loads(headers)["kabuto-signature"])
