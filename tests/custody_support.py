"""Helpers for the custody tests: talking to custody as the credit holder over the real broker
and reading what custody answered from its outbox."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from agents.custody import books, repo
from agents.custody.domain import Balances
from broker.envelope import seal
from broker.pki import KeyStore
from broker.runtime import AgentRuntime
from broker.settings import Settings
from schemas.catalogue import Message
from tests import support


async def send_as(settings: Settings, sender: str, payload: Message, to: str = "custody") -> UUID:
    """Sign ``payload`` as ``sender`` and publish it, as that participant's agent would."""
    identity = KeyStore(settings.key_dir).load_identity(sender)
    sealed = seal(identity, payload, recipient=to, now=datetime.now(UTC))
    await support.publish_sealed(settings, sealed)
    return sealed.envelope.message_id


async def ask(settings: Settings, custody: AgentRuntime, payload: Message, sender: str = "credit") -> dict[str, Any]:
    """Send ``payload`` and return custody's answer to it: {"type": …, **payload}."""
    message_id = await send_as(settings, sender, payload)
    await custody.outcomes.wait_for(message_id)
    answers = await answers_to(custody, message_id)
    assert len(answers) == 1, answers
    return answers[0]


async def answers_to(custody: AgentRuntime, message_id: UUID) -> list[dict[str, Any]]:
    rows = await support.rows(
        custody, "SELECT body FROM outbox_messages WHERE exchange = 'messages' ORDER BY seq, place"
    )
    found = []
    for row in rows:
        envelope = json.loads(row["body"])
        if envelope["causation_id"] == str(message_id):
            found.append({"type": envelope["type"], **envelope["payload"]})
    return found


async def balances(custody: AgentRuntime, account: str, issue: str) -> dict[str, int]:
    found = await support.rows(
        custody,
        "SELECT available, locked, pending_delivery, pending_receipt FROM positions"
        " WHERE account_id = $1 AND issue_code = $2",
        account,
        issue,
    )
    return found[0] if found else {}


async def open_account(custody: AgentRuntime, account: str, client: str, custodian: str = "custody") -> None:
    await custody.command("custody", lambda ctx: repo.open_account(ctx.connection, account, client, custodian))


async def credit_position(custody: AgentRuntime, account: str, issue: str, quantity: int) -> None:
    """Put shares in a position directly, for tests of what happens once shares are in custody
    (the deposit path through the issuer has tests of its own)."""

    async def action(ctx: Any) -> None:
        acct = await repo.account(ctx.connection, account)
        assert acct is not None
        before = await repo.position_for_update(ctx.connection, account, issue) or Balances()
        after = Balances(before.available + quantity, before.locked, before.pending_delivery, before.pending_receipt)
        await books.apply(ctx, acct, issue, after, "deposit", "test")

    await custody.command("custody", action)
