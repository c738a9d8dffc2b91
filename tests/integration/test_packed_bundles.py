"""Packed bundles (issue 8, stop 32; broker/bundle.py, broker/outbox.py): what one batch of an
agent's consumer sends to one of Kabuto's queues under one key is stored as one outbox row, a
bundle whose items carry no signature of their own, sealed once. The seal is then each item's
only signature: an item is accepted only where the seal verifies under the key its envelope names,
and every item of a bundle whose seal does not is refused (docs/bad-input.md, B90–B93). An item that
cannot be signed alone does not travel alone: its retry copy and its dead letter are the whole
bundle, sealed as it was, narrowed to it (``x-kabuto-items``), so a retry or a replay runs that
item and no other, and a listed dead letter still proves who sent it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aio_pika
import pytest
from prometheus_client import REGISTRY

from broker import ops, outbox, watch
from broker.bundle import BUNDLE_TYPE, ITEMS_HEADER, Bundling, Item, pack, sealed_bytes, unpack
from broker.consumer import Outcome
from broker.envelope import Sealed, sign_headers, verified_signer
from broker.errors import Reason
from broker.outbox import seal_headers
from broker.pki import Identity
from broker.runtime import AgentRuntime, running
from broker.settings import Settings
from broker.topology import Names
from schemas.envelope import SIGNATURE_HEADER
from tests import support
from tests.integration.test_bundle_seal import publish, relayed_to_the_issuer
from tests.integration.test_group_commit import POISON, REFUSED, issuer_recording

Seal = Callable[[bytes], dict[str, str]]


def requests(identity: Identity, *shares: int) -> list[Sealed]:
    return [support.sealed_request(identity, shares=n) for n in shares]


async def test_a_packed_bundle_is_settled_item_by_item_and_what_fails_travels_narrowed_to_it(
    settings: Settings, keys: Any
) -> None:
    alice, bob = keys.load_identity("alice"), keys.load_identity("bob")
    sealed = [*requests(alice, 100, 200, POISON, 300, REFUSED, 400), *requests(bob, 500)]
    items = [support.packed_item(s) for s in sealed]
    ids = [i.message_id for i in items]
    body = pack(items)
    transactions: list[int] = []
    async with AgentRuntime(issuer_recording(transactions), settings) as issuer:
        await support.open_offering(issuer)
        await publish(settings, body, seal_headers(alice, body, packed=True))
        async with running(issuer):
            done = await issuer.outcomes.wait_count(lambda s: s.outcome is Outcome.PROCESSED, 4, timeout=20)
            refused = await issuer.outcomes.wait_for(ids[4])
            impostor = await issuer.outcomes.wait_for(ids[6])
            poisoned = await issuer.outcomes.wait(
                lambda s: s.message_id == ids[2] and s.outcome is Outcome.DEAD_LETTERED, timeout=20
            )
            retries = issuer.outcomes.count(Outcome.RETRY_SCHEDULED)
            listed = await ops.dead_letters(settings, "issuer")
            page = await ops.dead_letter_page(settings, "issuer", issuer.trust)
            # replayed, the refused item runs again, alone: refused again, and nothing else runs
            assert await ops.replay(settings, "issuer", ids[4])
            again = await issuer.outcomes.wait_count(lambda s: s.message_id == ids[4], 2, timeout=20)
            duplicates = issuer.outcomes.count(Outcome.DUPLICATE)
        registered = await support.rows(issuer, "SELECT shares FROM register ORDER BY shares")
        inbox = await support.rows(issuer, "SELECT message_id::text AS id, digest FROM inbox")
    assert sorted(s.message_id for s in done) == sorted(ids[i] for i in (0, 1, 3, 5))
    assert [r["shares"] for r in registered] == [100, 200, 300, 400]
    # each item claimed by its own id, with the digest of its own bytes (R-001-07 echoes it)
    assert {(r["id"], r["digest"]) for r in inbox} == {
        (ids[i], hashlib.sha256(items[i].body).hexdigest()) for i in (0, 1, 3, 5)
    }
    assert (refused.outcome, refused.reason) == (Outcome.DEAD_LETTERED, Reason.SCHEMA_VIOLATION)
    # bob's request inside alice's seal: the seal vouches for alice's key only
    assert (impostor.outcome, impostor.reason) == (Outcome.DEAD_LETTERED, Reason.SENDER_MISMATCH)
    assert poisoned.reason is Reason.RETRIES_EXHAUSTED
    # two retries (settings: two delays), each a copy of the bundle narrowed to the poisoned item:
    # no other item ran again, not even to be absorbed by the inbox
    assert retries == 2 and duplicates == 0
    assert [(s.outcome, s.reason) for s in again] == [(Outcome.DEAD_LETTERED, Reason.SCHEMA_VIOLATION)] * 2
    # each dead letter lists as its item, and proves its sender by the bundle's seal
    by_id = {letter.message_id: letter for letter in listed}
    assert set(by_id) == {ids[2], ids[4], ids[6]}
    for index, reason in ((2, "retries_exhausted"), (4, "schema_violation"), (6, "sender_mismatch")):
        letter = by_id[ids[index]]
        assert (letter.type, letter.body, letter.sealed_in) == ("certificate.issuance.request", items[index].body, body)
        assert letter.headers["x-kabuto-reason"] == reason and letter.headers[ITEMS_HEADER] == ids[index]
    proven = {letter.message_id: p for letter, p in page.letters}
    assert [(proven[ids[i]].sender, proven[ids[i]].verified) for i in (2, 4)] == [("alice", True)] * 2
    assert proven[ids[6]].problem is not None and proven[ids[6]].problem.startswith("sender_mismatch")


def _no_seal(alice: Identity, bob: Identity) -> Seal:
    return lambda body: {}


def _bobs_seal(alice: Identity, bob: Identity) -> Seal:
    return lambda body: seal_headers(bob, body, packed=True)


def _other_bytes(alice: Identity, bob: Identity) -> Seal:
    return lambda body: seal_headers(alice, body + b"!", packed=True)


def _relays_seal(alice: Identity, bob: Identity) -> Seal:
    """A relay's seal (over rows it found in the outbox table) never stands for an unsigned item."""
    return lambda body: seal_headers(alice, body)


def _no_context(alice: Identity, bob: Identity) -> Seal:
    """Alice's signature over the bundle's bytes without the seal's context is not a seal."""
    return lambda body: sign_headers(alice, body)


@pytest.mark.parametrize(
    ("seal", "reason", "letters"),
    [
        (_no_seal, Reason.UNSIGNED, 1),
        (_bobs_seal, Reason.SENDER_MISMATCH, 3),
        (_other_bytes, Reason.SIGNATURE_INVALID, 1),
        (_relays_seal, Reason.SIGNATURE_INVALID, 1),
        (_no_context, Reason.SIGNATURE_INVALID, 1),
    ],
)
async def test_packed_items_whose_seal_does_not_vouch_for_them_are_all_refused_and_change_nothing(
    settings: Settings, keys: Any, seal: Callable[[Identity, Identity], Seal], reason: Reason, letters: int
) -> None:
    """Where no seal verifies, the bundle is dead-lettered once, whole (found by an independent
    suite: a copy of it for each item let any client turn one message into 256); where one does,
    bob's, which vouches for no item of alice's, each item's dead letter is the bundle narrowed to
    it. Either way each item is listed with its reason."""
    alice, bob = keys.load_identity("alice"), keys.load_identity("bob")
    items = [support.packed_item(s) for s in requests(alice, 100, 200, 300)]
    body = pack(items)
    async with AgentRuntime(support.AGENTS["issuer"], settings) as issuer:
        await support.open_offering(issuer)
        await publish(settings, body, seal(alice, bob)(body))
        async with running(issuer):
            settled = [await issuer.outcomes.wait_for(i.message_id) for i in items]
        registered = await support.rows(issuer, "SELECT shares FROM register")
        inbox = await support.rows(issuer, "SELECT message_id FROM inbox")
        depth = await support.queue_depth(settings, Names(settings.namespace).dead_letters("issuer"))
        listed = await ops.dead_letters(settings, "issuer")
    assert [(s.outcome, s.reason) for s in settled] == [(Outcome.DEAD_LETTERED, reason)] * 3
    assert registered == [] and inbox == []
    assert depth == letters
    assert sorted((letter.message_id, letter.reason) for letter in listed) == sorted(
        (i.message_id, reason.value) for i in items
    )


async def test_a_packed_bundle_changed_after_its_seal_has_every_item_refused(settings: Settings, keys: Any) -> None:
    """One byte of one item changed after the bundle was sealed: no item has a signature of its own
    to fall back on, so the untouched ones are refused with it."""
    alice = keys.load_identity("alice")
    items = [support.packed_item(s) for s in requests(alice, 100, 200, 300)]
    body = pack(items)
    headers = seal_headers(alice, body, packed=True)
    altered = body.replace(b'"shares":200', b'"shares":900', 1)
    assert altered != body
    async with AgentRuntime(support.AGENTS["issuer"], settings) as issuer:
        await support.open_offering(issuer)
        await publish(settings, altered, headers)
        async with running(issuer):
            settled = [await issuer.outcomes.wait_for(i.message_id) for i in items]
        registered = await support.rows(issuer, "SELECT shares FROM register")
    assert [(s.outcome, s.reason) for s in settled] == [(Outcome.DEAD_LETTERED, Reason.SIGNATURE_INVALID)] * 3
    assert registered == []


async def test_a_batch_stores_what_it_sends_each_agent_queue_as_one_sealed_row_in_order(
    settings: Settings, keys: Any
) -> None:
    """Interleaved messages for the exchange and settlement, one for a participant's own queue and
    an event: one packed row per agent queue (at the place of its first message), the others alone
    and signed; the relay publishes each row as it was stored."""
    alice = keys.load_identity("alice")
    to = ["exchange", "settlement", "exchange", "carol", "exchange", "settlement"]
    sealed = [support.sealed_request(alice, to=recipient, shares=100 * (n + 1)) for n, recipient in enumerate(to)]
    packing = Bundling(32, 524_288)
    names = Names(settings.namespace)
    async with (
        AgentRuntime(support.AGENTS["exchange"], settings),
        AgentRuntime(support.AGENTS["settlement"], settings),
        AgentRuntime(support.AGENTS["issuer"], settings) as issuer,
    ):
        async with issuer.pool.acquire() as connection, connection.transaction():
            await outbox.store(connection, sealed, packing)
        rows = await support.rows(
            issuer, "SELECT message_id::text AS id, message_type, routing_key, body, headers FROM outbox ORDER BY seq"
        )
        sent = await support.rows(
            issuer,
            "SELECT message_id::text AS id, routing_key, body, bundle_id::text FROM outbox_messages"
            " ORDER BY seq, place",
        )
        counted = _published("certificate.issuance.request")
        await issuer.relay.publish_pending()
        counted = _published("certificate.issuance.request") - counted
        published, _, _ = await watch._activity(issuer.pool, timedelta(minutes=1))  # what kabuto status counts
        found = {agent: await _queued(settings, names.inbox(agent)) for agent in ("exchange", "settlement")}
    assert [(r["message_type"], r["routing_key"]) for r in rows] == [
        (BUNDLE_TYPE, "exchange"),
        (BUNDLE_TYPE, "settlement"),
        ("certificate.issuance.request", "carol"),
    ]
    for row, indexes in ((rows[0], (0, 2, 4)), (rows[1], (1, 5))):
        assert unpack(row["body"]) == [support.packed_item(sealed[i]) for i in indexes]
        seal = json.loads(row["headers"])
        # the seal is alice's signature over the bundle's bytes, verified as a receiver does
        signer = verified_signer(sealed_bytes(row["body"], packed=True), seal, issuer.trust, datetime.now(UTC))
        assert signer.participant.user_id == "alice"
    alone = json.loads(rows[2]["headers"])
    assert rows[2]["id"] == str(sealed[3].envelope.message_id) and SIGNATURE_HEADER in alone
    # what the agent sent, message by message, as it reads in outbox_messages (migration 0080)
    assert [(r["id"], r["routing_key"], r["body"]) for r in sent] == [
        (str(sealed[i].envelope.message_id), to[i], sealed[i].body) for i in (0, 2, 4, 1, 5, 3)
    ]
    assert [r["bundle_id"] for r in sent] == [rows[0]["id"]] * 3 + [rows[1]["id"]] * 2 + [None]
    # kabuto_outbox_published_total and kabuto status count each packed item (carol's is parked)
    assert counted == 5 and published == 5
    assert [m.body for m in found["exchange"]] == [rows[0]["body"]]
    assert [m.body for m in found["settlement"]] == [rows[1]["body"]]
    assert found["exchange"][0].type == BUNDLE_TYPE


def _published(message_type: str) -> float:
    labels = {"agent": "issuer", "type": message_type}
    return REGISTRY.get_sample_value("kabuto_outbox_published_total", labels) or 0.0


async def _queued(settings: Settings, queue_name: str) -> list[aio_pika.abc.AbstractIncomingMessage]:
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(queue_name)
        found = []
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            found.append(message)
        return found


async def test_without_packing_or_bundles_every_message_is_a_row_of_its_own(settings: Settings, keys: Any) -> None:
    alice = keys.load_identity("alice")
    sealed = requests(alice, 100, 200)
    async with AgentRuntime(support.AGENTS["issuer"], settings) as issuer:
        async with issuer.pool.acquire() as connection, connection.transaction():
            await outbox.store(connection, sealed)  # no packing: a command's messages
            await outbox.store(connection, requests(alice, 300, 400), Bundling(1))  # bundles off
        rows = await support.rows(issuer, "SELECT message_type, headers FROM outbox ORDER BY seq")
    assert [r["message_type"] for r in rows] == ["certificate.issuance.request"] * 4
    assert all(SIGNATURE_HEADER in json.loads(r["headers"]) for r in rows)


async def test_a_packed_bundle_the_broker_dead_lettered_whole_is_replayed_item_by_item_sealed(
    settings: Settings, keys: Any
) -> None:
    """Past the delivery limit the broker dead-letters a packed bundle whole: each item is listed
    with its own id and the sender its seal proves; one replayed goes back as the bundle narrowed to
    it, and what is left stays dead, narrowed to the rest, still proven."""
    alice = keys.load_identity("alice")
    sealed = requests(alice, 100, 200, 300)
    ids = [str(s.envelope.message_id) for s in sealed]
    body = pack([support.packed_item(s) for s in sealed])
    async with AgentRuntime(support.AGENTS["issuer"], settings) as issuer:
        await support.open_offering(issuer)
        await support.dead_lettered_whole(settings, body, seal_headers(alice, body, packed=True))
        listed = await ops.dead_letters(settings, "issuer")
        page = await ops.dead_letter_page(settings, "issuer", issuer.trust)
        assert await ops.replay(settings, "issuer", ids[1])
        async with running(issuer):
            replayed = await issuer.outcomes.wait_for(ids[1])
            others = len(issuer.outcomes)
        left = await ops.dead_letter_page(settings, "issuer", issuer.trust)
        registered = await support.rows(issuer, "SELECT shares FROM register")
    assert [(letter.message_id, letter.reason) for letter in listed] == [(i, "broker:delivery_limit") for i in ids]
    assert [(p.sender, p.verified) for _, p in page.letters] == [("alice", True)] * 3
    assert replayed.outcome is Outcome.PROCESSED and others == 1
    assert [(letter.message_id, p.verified) for letter, p in left.letters] == [(ids[0], True), (ids[2], True)]
    assert registered == [{"shares": 200}]


async def test_a_bundle_narrowed_to_an_item_it_does_not_hold_is_refused_whole(settings: Settings, keys: Any) -> None:
    """B92: ``x-kabuto-items`` can only narrow what a bundle holds; naming anything else makes the
    delivery no bundle at all, dead-lettered as it came."""
    alice = keys.load_identity("alice")
    body = pack([support.packed_item(s) for s in requests(alice, 100, 200)])
    async with AgentRuntime(support.AGENTS["issuer"], settings) as issuer:
        await support.open_offering(issuer)
        await publish(settings, body, {**seal_headers(alice, body, packed=True), ITEMS_HEADER: "not-an-item"})
        async with running(issuer):
            settled = await issuer.outcomes.wait_for("bundle-1")
        letter = await support.dead_letter(settings, "issuer")
        registered = await support.rows(issuer, "SELECT shares FROM register")
    assert (settled.outcome, settled.reason) == (Outcome.DEAD_LETTERED, Reason.BUNDLE_MALFORMED)
    assert letter.body == body and "does not hold" in str(letter.headers["x-kabuto-detail"])
    assert registered == []


async def test_a_row_written_into_the_outbox_with_no_signature_never_travels_under_a_seal(
    settings: Settings, keys: Any
) -> None:
    """Found by review: a row written straight into the outbox table with no headers, beside one
    of alice's signed rows, travelled in the relay's bundle under the seal alice's key made — and
    was taken for a packed item. A relay never bundles an unsigned row, and a relay's seal never
    stands for an unsigned item (only a packed seal, made as a batch packs, does): it is refused."""
    async with (
        AgentRuntime(support.AGENTS["issuer"], settings) as issuer,
        AgentRuntime(support.AGENTS["investor"], settings) as investor,
    ):
        alice = investor.identities["alice"]
        good, forged = requests(alice, 100, 900)
        await support.open_offering(issuer)
        async with investor.pool.acquire() as connection, connection.transaction():
            await outbox.store(connection, [good])
            await connection.execute(
                """INSERT INTO outbox (message_id, message_type, exchange, routing_key, body, headers)
                   VALUES ($1, $2, 'messages', 'issuer', $3, '{}')""",
                forged.envelope.message_id,
                forged.envelope.type,
                forged.body,
            )
        first, second, registered = await relayed_to_the_issuer(investor, issuer, good, forged)
    assert first.outcome is Outcome.PROCESSED
    assert (second.outcome, second.reason) == (Outcome.DEAD_LETTERED, Reason.UNSIGNED)
    assert registered == [100]


async def test_a_relays_seal_over_a_bundle_with_an_unsigned_item_vouches_for_none_of_its_items(
    settings: Settings, keys: Any
) -> None:
    """However the unsigned item got there: under a relay's seal (not a packed one) the unsigned
    item is refused and alice's signed ones are each checked on their own signature."""
    alice = keys.load_identity("alice")
    signed, unsigned = requests(alice, 100, 900)
    items = [Item(str(signed.envelope.message_id), signed.envelope.type, signed.headers, signed.body)]
    items.append(support.packed_item(unsigned))
    body = pack(items)
    async with AgentRuntime(support.AGENTS["issuer"], settings) as issuer:
        await support.open_offering(issuer)
        await publish(settings, body, seal_headers(alice, body))
        async with running(issuer):
            settled = [await issuer.outcomes.wait_for(i.message_id) for i in items]
        registered = await support.rows(issuer, "SELECT shares FROM register")
    assert [(s.outcome, s.reason) for s in settled] == [
        (Outcome.PROCESSED, None),
        (Outcome.DEAD_LETTERED, Reason.SIGNATURE_INVALID),
    ]
    assert registered == [{"shares": 100}]
