"""What every entry of the bad-input catalogue proves, written once (docs/bad-input.md).

A refusal is one of two things, and both change nothing:

* a dead letter: the delivery reaches the agent's dead-letter queue with its reason code,
  no inbox row and no outbox row are written, and every table of the agent's schema holds
  exactly what it held before;
* a business refusal: the request is consumed (one inbox row) and answered by one refusal
  message carrying the reason code, and every other table is unchanged.

``State`` is a snapshot of every table of the agent's own schema, read through the agent's
own pool, so the comparison cannot miss a table the catalogue did not think of.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from uuid import uuid4

from broker.consumer import Outcome
from broker.envelope import Sealed
from broker.errors import Reason
from broker.runtime import AgentRuntime
from broker.settings import Settings
from tests import support

RUNTIME_TABLES = ("inbox", "outbox")
RELAY_COLUMNS = ("published_at", "failed_at", "error")
# The runtime's own heartbeats (broker/progress.py) move every few seconds whatever arrives.
LIVENESS_TABLES = ("runtime_tasks",)
START_UP_JOB = "subscribe_prices"  # the brokerage's, which emits as the agent starts


@dataclass(frozen=True, slots=True)
class State:
    tables: dict[str, list[str]]

    def without(self, *names: str) -> dict[str, list[str]]:
        return {k: v for k, v in self.tables.items() if k not in names}


async def state(runtime: AgentRuntime) -> State:
    """Every row of every table in the agent's schema, as sorted text, once its start-up work is
    in: the brokerage subscribes to prices as it starts, and a snapshot taken before that row was
    written differed from the next one (seen under load)."""
    if START_UP_JOB in runtime.heartbeats.beats:
        await runtime.heartbeats.beat(START_UP_JOB).until_progress(0.0)
    names = await support.rows(
        runtime,
        """SELECT table_name FROM information_schema.tables
           WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' ORDER BY table_name""",
    )
    tables: dict[str, list[str]] = {}
    for row in names:
        name = row["table_name"]
        if name in LIVENESS_TABLES:
            continue
        found = await support.rows(runtime, f'SELECT * FROM "{name}"')
        # The relay's bookkeeping moves on its own as it publishes earlier rows; it is not state a
        # refusal could change.
        moving = RELAY_COLUMNS if name == "outbox" else ()
        tables[name] = sorted(repr(sorted((k, v) for k, v in r.items() if k not in moving)) for r in found)
    return State(tables)


async def expect_dead_letter(
    settings: Settings,
    runtime: AgentRuntime,
    body: bytes,
    headers: Mapping[str, Any],
    reason: Reason,
    *,
    routing_key: str | None = None,
) -> None:
    """Publish one delivery; it is dead-lettered with ``reason`` and no table changes."""
    before = await state(runtime)
    delivery_id = str(uuid4())
    await support.publish(settings, body, headers, routing_key or runtime.id, delivery_id)
    settled = await runtime.outcomes.wait_for(delivery_id)
    assert (settled.outcome, settled.reason) == (Outcome.DEAD_LETTERED, reason), settled
    dead = await support.dead_letter(settings, runtime.id)
    assert dead.headers["x-kabuto-reason"] == reason.value, dead.headers
    assert dead.headers["x-kabuto-agent"] == runtime.id
    assert await state(runtime) == before


async def expect_refusal(
    settings: Settings,
    runtime: AgentRuntime,
    sealed: Sealed,
    reply_type: str,
    reason: object,
    *,
    field: str = "reason",
    journal: str | None = None,
) -> dict[str, Any]:
    """Publish one request; it is answered by one ``reply_type`` carrying ``reason``, and nothing else changes.

    ``journal`` names a table where the agent records every request it examined, refused ones
    included (the issuer's ``issuance_requests``): it may gain that one row, nothing more.
    """
    before = await state(runtime)
    await support.publish_sealed(settings, sealed, routing_key=_route(runtime, sealed))
    settled = await runtime.outcomes.wait_for(sealed.envelope.message_id)
    assert settled.outcome is Outcome.PROCESSED, settled
    emitted = await support.rows(
        runtime,
        "SELECT message_type, body FROM outbox_messages WHERE headers IS NOT NULL AND body IS NOT NULL"
        " ORDER BY seq, place",
    )
    replies = [json.loads(bytes(r["body"])) for r in emitted if _answers(r, sealed)]
    assert [r["type"] for r in replies] == [reply_type], emitted
    payload: dict[str, Any] = replies[0]["payload"]
    assert payload[field] == reason, payload
    after = await state(runtime)
    kept = (*RUNTIME_TABLES, journal) if journal else RUNTIME_TABLES
    assert after.without(*kept) == before.without(*kept)
    if journal:
        assert len(after.tables[journal]) == len(before.tables[journal]) + 1
    assert len(after.tables["inbox"]) == len(before.tables["inbox"]) + 1
    assert len(after.tables["outbox"]) == len(before.tables["outbox"]) + 1
    return payload


def _answers(row: Mapping[str, Any], sealed: Sealed) -> bool:
    envelope = json.loads(bytes(row["body"]))
    return bool(envelope.get("causation_id") == str(sealed.envelope.message_id))


def _route(runtime: AgentRuntime, sealed: Sealed) -> str:
    return sealed.envelope.recipient or runtime.id
