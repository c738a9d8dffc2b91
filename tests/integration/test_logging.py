"""Logs are structured facts an operator can search, and never carry a secret."""

from __future__ import annotations

import io
import json
import uuid
from datetime import UTC, datetime

from broker import logs
from broker.pki import KeyStore
from broker.settings import Settings
from schemas.envelope import Envelope
from tests import support


async def test_every_processed_message_is_logged_with_agent_ids_type_and_correlation(
    settings: Settings, log_lines: io.StringIO
) -> None:
    async with support.agents(settings, "investor", "issuer", "exchange") as rt:
        await support.open_offering(rt["issuer"])
        request_id = await support.request(rt["investor"], "alice")
        await rt["exchange"].outcomes.reply("certid_list.updated", request_id)
        await rt["investor"].outcomes.reply("certificate.issued", request_id)  # sent alongside, in parallel
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


def test_bound_fields_nest_the_innermost_wins_and_a_line_s_own_fields_win_over_both(log_lines: io.StringIO) -> None:
    """``logs.bound`` and ``logs.bound_to`` (stop 33: one context variable, a message's fields read
    out of its envelope only when a line is written) say what structlog's bound_contextvars said."""
    log = logs.get("test")
    envelope = Envelope(
        message_id=uuid.uuid4(),
        type="securities.reserve",
        version=1,
        sender="settlement",
        recipient="issuer",
        correlation_id=uuid.uuid4(),
        causation_id=None,
        created_at=datetime.now(UTC),
        signer="0" * 64,
        payload={},
    )
    with logs.bound(agent="settlement", type="outer", run=3):
        with logs.bound_to(envelope, agent="issuer"):
            log.info("inner")
            log.info("own", type="mine")
        log.info("outer")
    log.info("unbound")
    inner, own, outer, unbound = (json.loads(line) for line in log_lines.getvalue().splitlines())
    assert inner["agent"] == "issuer" and inner["type"] == envelope.type and inner["run"] == 3
    assert inner["message_id"] == str(envelope.message_id) and inner["sender"] == envelope.sender
    assert inner["correlation_id"] == str(envelope.correlation_id) and inner["causation_id"] == ""
    assert own["type"] == "mine"
    assert outer["agent"] == "settlement" and outer["type"] == "outer" and "message_id" not in outer
    assert not {"agent", "type", "run", "message_id"} & unbound.keys()
