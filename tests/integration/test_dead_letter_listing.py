"""``kabuto dead-letters``: the envelope's verified id and type, forgeries marked, and pages (issues 9, 13)."""

from __future__ import annotations

import asyncio
import base64
import sys
from datetime import UTC, datetime
from typing import Any

from broker import ops
from broker.consumer import Outcome
from broker.envelope import seal
from broker.pki import KeyStore
from broker.settings import Settings
from broker.trust import TrustStore
from schemas.dvp import CancelInstruction
from tests import support


async def kabuto(settings: Settings, *args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agents.cli",
        *args,
        env=support.environment(settings),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(60):
        out, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode()


async def test_dead_letters_show_verified_ids_mark_forgeries_and_page(settings: Settings, keys: KeyStore) -> None:
    alice = keys.load_identity("alice")
    # A genuine message the exchange may not receive: its id and type verify.
    wrong_type = seal(alice, CancelInstruction(instruction=7), recipient="exchange", now=datetime.now(UTC))
    # The same bytes under a signature that does not hold, with lying AMQP properties.
    forged_headers: dict[str, Any] = {**wrong_type.headers, "kabuto-signature": base64.b64encode(b"x" * 64).decode()}
    extras = [support.sealed_request(alice, to="exchange") for _ in range(4)]
    async with support.agents(settings, "exchange") as rt:
        await support.publish_sealed(settings, wrong_type)
        await support.publish(settings, wrong_type.body, forged_headers, "exchange", message_id="claimed-id")
        for sealed in extras:
            await support.publish_sealed(settings, sealed)
        await rt["exchange"].outcomes.wait_count(lambda s: s.outcome is Outcome.DEAD_LETTERED, 6)

    trust = TrustStore(keys.ca_certificate())
    first = await ops.dead_letter_page(settings, "exchange", trust, limit=2)
    assert (first.total, first.remaining, len(first.letters)) == (6, 4, 2)
    (genuine, proof), (forged, forged_proof) = first.letters
    assert proof.verified and proof.message_id == str(wrong_type.envelope.message_id)
    assert (proof.type, proof.sender) == ("settlement.instruction.cancel v1", "alice")
    assert genuine.reason == "sender_not_authorized"
    assert not forged_proof.verified and forged_proof.message_id is None
    assert forged_proof.problem is not None and forged_proof.problem.startswith("signature_invalid")
    assert forged.message_id == "claimed-id"

    last = await ops.dead_letter_page(settings, "exchange", trust, offset=4, limit=10)
    assert (len(last.letters), last.remaining) == (2, 0)
    assert [p.message_id for _, p in last.letters] == [str(s.envelope.message_id) for s in extras[2:]]

    code, out = await kabuto(settings, "dead-letters", "exchange", "--limit", "3")
    assert code == 0, out
    assert "claimed-id (claimed)" in out and "NO — signature_invalid" in out
    assert str(wrong_type.envelope.message_id) in out and "settlement.instruction.cancel v1" in out
    assert "1–3 of 6 dead letter(s); 3 more: --offset 3" in out
    code, out = await kabuto(settings, "dead-letters", "exchange", "--offset", "3")
    assert "4–6 of 6 dead letter(s)" in out and "more" not in out.splitlines()[-1]
