"""``kabuto dead-letters``: the envelope's verified id and type, forgeries marked, and pages (issues 9, 13)."""

from __future__ import annotations

import asyncio
import base64
import sys
from datetime import UTC, datetime
from typing import Any

import aio_pika

from broker import ops
from broker.bundle import BUNDLE_TYPE, Item, pack
from broker.consumer import Outcome
from broker.envelope import seal
from broker.pki import KeyStore
from broker.settings import Settings
from broker.topology import Names
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


async def test_pages_of_dead_letters_show_each_once_in_the_order_they_died(settings: Settings, keys: KeyStore) -> None:
    """A quorum queue puts back what a page read in an order of its own; pages are ordered by when
    each letter died, so paging through shows every letter once (found by review: offsets skipped
    and repeated letters). A bundle the broker dead-lettered whole shows each item, in its place."""
    alice = keys.load_identity("alice")
    names = Names(settings.namespace)
    sealed = [support.sealed_request(alice, to="exchange", shares=100 * (n + 1)) for n in range(7)]
    died = [datetime(2026, 12, 3, 9, minute, tzinfo=UTC) for minute in (5, 1, 4, 2, 6, 3)]
    async with support.agents(settings, "exchange"):
        pass  # its queues exist
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        dead = await channel.get_exchange(names.dead)
        for at, letter in zip(died[:5], sealed[:5], strict=True):
            headers = {
                **letter.headers,
                "x-kabuto-reason": "schema_violation",
                "x-kabuto-dead-lettered-at": at.isoformat(),
            }
            await dead.publish(
                aio_pika.Message(letter.body, headers=headers, message_id=str(letter.envelope.message_id)), "exchange"
            )
        items = [Item(str(s.envelope.message_id), s.envelope.type, s.headers, s.body) for s in sealed[5:]]
        death = [{"reason": "delivery_limit", "time": died[5], "routing-keys": ["exchange"]}]
        await dead.publish(aio_pika.Message(pack(items), type=BUNDLE_TYPE, headers={"x-death": death}), "exchange")
    trust = TrustStore(keys.ca_certificate())
    pages = [await ops.dead_letter_page(settings, "exchange", trust, offset=o, limit=2) for o in range(0, 8, 2)]
    shown = [p.message_id for page in pages for _, p in page.letters]
    ids = [str(s.envelope.message_id) for s in sealed]
    assert shown == [ids[1], ids[3], ids[5], ids[6], ids[2], ids[0], ids[4]]
    assert [page.total for page in pages] == [7] * 4 and pages[-1].remaining == 0
