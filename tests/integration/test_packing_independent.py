"""Packed bundles (commit f38355e), tested independently of the author's suites: the SQL view
``outbox_messages`` against Python's ``unpack`` (many items, large and non-ASCII bodies, items with
headers, answers queues, hosted investors), a batch packed end to end between running agents (and
``outbox_pack`` off), a packed bundle narrowed to two items, redelivered after a crash, replayed
item by item and twice, the group commit's savepoint fallback, and every agent's own login reading
the view."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import uuid4

import aio_pika
import pytest

from broker import ops, outbox
from broker.access import agent_urls
from broker.bundle import BUNDLE_TYPE, ITEMS_HEADER, Bundling, Item, pack, sealed_bytes, unbundled, unpack
from broker.consumer import Outcome
from broker.db import agent_pool
from broker.envelope import Sealed, seal, verified_signer
from broker.errors import Reason
from broker.group_commit import settle_batch
from broker.outbox import seal_headers
from broker.pki import Identity
from broker.runtime import AgentRuntime, running
from broker.settings import AGENT_IDS, Settings
from broker.topology import Names
from broker.trust import TrustStore
from schemas.dvp import CoverGranted
from schemas.envelope import SIGNATURE_HEADER
from tests import support
from tests.integration.test_group_commit import REFUSED, issuer_recording


def packed_seal(identity: Identity, body: bytes) -> dict[str, str]:
    """A packed bundle's seal, as ``broker.outbox.store`` makes it."""
    return seal_headers(identity, body, packed=True)


# --- helpers ------------------------------------------------------------------------------------


def signed_item(sealed: Sealed) -> Item:
    return Item(str(sealed.envelope.message_id), sealed.envelope.type, dict(sealed.headers), sealed.body)


def request_to(identity: Identity, to: str, shares: int = 100, **changes: Any) -> Sealed:
    return support.sealed_request(identity, to=to, shares=shares, **changes)


def unvalidated_request(identity: Identity, to: str, **changes: Any) -> Sealed:
    """A request whose fields no schema limited (a long address): the view only frames bytes."""
    payload = support.issuance_request(identity.user_id).model_copy(update=changes)  # not validated
    return seal(identity, payload, recipient=to, now=datetime.now(UTC))


async def publish_bundle(
    settings: Settings, body: bytes, headers: dict[str, Any], routing_key: str = "issuer", message_id: str = "b-1"
) -> None:
    await support.publish_bundle(settings, body, headers, routing_key=routing_key, message_id=message_id)


async def dead_letter_whole(settings: Settings, body: bytes, headers: dict[str, Any], agent: str = "issuer") -> None:
    """As the broker dead-letters a delivery past its limit (``support.dead_lettered_whole``)."""
    await support.dead_lettered_whole(settings, body, headers, agent=agent, message_id=f"row-{uuid4()}")


def expected_messages(rows: Sequence[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """What outbox_messages should say of ``rows`` (the outbox in seq order), unpacked in Python."""
    found: list[tuple[Any, ...]] = []
    for row in rows:
        if row["message_type"] != BUNDLE_TYPE:
            found.append(
                (row["seq"], 1, str(row["message_id"]), row["message_type"], row["routing_key"], row["body"], None)
            )
            continue
        answers = row["routing_key"].endswith(".answers")
        for place, item in enumerate(unpack(row["body"]), start=1):
            recipient = json.loads(item.body)["recipient"] + (".answers" if answers else "")
            found.append((row["seq"], place, item.message_id, item.type, recipient, item.body, str(row["message_id"])))
    return found


async def view_and_expected(runtime: AgentRuntime) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    rows = await support.rows(
        runtime, "SELECT seq, message_id, message_type, routing_key, body FROM outbox ORDER BY seq"
    )
    view = await support.rows(
        runtime,
        "SELECT seq, place, message_id::text AS id, message_type, routing_key, body, bundle_id::text AS bundle"
        " FROM outbox_messages ORDER BY seq, place",
    )
    got = [(r["seq"], r["place"], r["id"], r["message_type"], r["routing_key"], r["body"], r["bundle"]) for r in view]
    return got, expected_messages(rows)


def row_signer(row: dict[str, Any], trust: TrustStore) -> str:
    """Who a stored row proves it came from: a bundle by its seal, a message by its signature."""
    headers = json.loads(row["headers"])
    signed = sealed_bytes(row["body"], packed=True) if row["message_type"] == BUNDLE_TYPE else row["body"]
    return verified_signer(signed, headers, trust, datetime.now(UTC)).participant.user_id


async def store(runtime: AgentRuntime, messages: Sequence[Sealed], packing: Bundling | None) -> None:
    async with runtime.pool.acquire() as connection, connection.transaction():
        await outbox.store(connection, messages, packing)


# --- the view against unpack -----------------------------------------------------------------------


async def test_the_view_unpacks_a_full_bundle_of_256_items_as_python_does(settings: Settings, keys: Any) -> None:
    """256 items (the count's second byte set), non-ASCII text in every body: the view lists each
    in place, with its id, type, bytes and recipient, in the order the batch emitted them."""
    alice = keys.load_identity("alice")
    names = ["山田 花子", "Zoë Ørsted", "Алиса 🐢", 'O\'Brien "quoted" \\ back']
    sealed = [request_to(alice, "exchange", shares=100 + n, holder_name=names[n % len(names)]) for n in range(256)]
    assert all(b"\\u" not in s.body for s in sealed[:3])  # raw UTF-8, not escapes
    async with AgentRuntime(support.AGENTS["issuer"], settings) as issuer:
        await store(issuer, sealed, Bundling(256, 50_000_000))
        rows = await support.rows(issuer, "SELECT message_type, routing_key, body, headers FROM outbox")
        got, expected = await view_and_expected(issuer)
        trust = issuer.trust
    assert [(r["message_type"], r["routing_key"]) for r in rows] == [(BUNDLE_TYPE, "exchange")]
    assert row_signer(rows[0], trust) == "alice"
    assert got == expected
    assert [g[2] for g in got] == [str(s.envelope.message_id) for s in sealed]
    assert [g[5] for g in got] == [s.body for s in sealed]
    assert {g[4] for g in got} == {"exchange"}


async def test_the_view_reads_large_bodies_and_items_cut_by_the_byte_limit_in_order(
    settings: Settings, keys: Any
) -> None:
    """Bodies past 64 KiB (a length's third byte set) packed; one past the bundle's byte limit
    stored alone, signed, between the two bundles its neighbours make, so the queue's order holds."""
    alice = keys.load_identity("alice")
    sizes = [10, 70_000, 150_000, 250_000, 20, 66_000]  # characters of 3 bytes each
    sealed = [unvalidated_request(alice, "settlement", holder_address="町" * size) for size in sizes]
    packing = Bundling(32, 600_000)
    async with AgentRuntime(support.AGENTS["issuer"], settings) as issuer:
        await store(issuer, sealed, packing)
        rows = await support.rows(
            issuer, "SELECT message_id::text AS id, message_type, body, headers FROM outbox ORDER BY seq"
        )
        got, expected = await view_and_expected(issuer)
        trust = issuer.trust
    # 30 B + 210 kB fit 600 kB; 450 kB more does not (a group of one: signed); 750 kB is past the limit
    kinds = [(r["message_type"], len(unpack(r["body"])) if r["message_type"] == BUNDLE_TYPE else 1) for r in rows]
    request = "certificate.issuance.request"
    assert kinds == [(BUNDLE_TYPE, 2), (request, 1), (request, 1), (BUNDLE_TYPE, 2)]
    assert got == expected
    assert [g[5] for g in got] == [s.body for s in sealed]  # each queue's order, message by message
    big = next(r for r in rows if r["id"] == str(sealed[3].envelope.message_id))
    assert big["message_type"] == "certificate.issuance.request"
    assert SIGNATURE_HEADER in json.loads(big["headers"]) and row_signer(big, trust) == "alice"
    assert all(row_signer(r, trust) == "alice" for r in rows)


async def test_the_bundle_function_frames_items_with_headers_as_python_does(settings: Settings, keys: Any) -> None:
    """A bundle row whose items carry headers (a certificate of a kilobyte, a value of 10,000 bytes,
    none at all): kabuto_bundle_items skips each header by its length and reads what unpack reads."""
    alice, bob = keys.load_identity("alice"), keys.load_identity("bob")
    first, second, third = request_to(alice, "exchange"), request_to(bob, "exchange"), request_to(alice, "exchange")
    items = [
        signed_item(first),
        support.packed_item(second),
        Item(str(third.envelope.message_id), third.envelope.type, {**third.headers, "x-long": "é" * 5_000}, third.body),
    ]
    body = pack(items)
    async with AgentRuntime(support.AGENTS["issuer"], settings) as issuer:
        await issuer.query(
            lambda c: c.execute(
                "INSERT INTO outbox (message_id, message_type, exchange, routing_key, body, headers)"
                " VALUES ($1, $2, 'messages', 'exchange', $3, $4::jsonb)",
                uuid4(),
                BUNDLE_TYPE,
                body,
                json.dumps(packed_seal(alice, body)),
            )
        )
        framed = await support.rows(
            issuer, "SELECT place, message_id, message_type, signed, body FROM public.kabuto_bundle_items($1)", body
        )
        got, expected = await view_and_expected(issuer)
    assert [(r["place"], r["message_id"], r["message_type"], r["signed"], r["body"]) for r in framed] == [
        (n + 1, i.message_id, i.type, bool(i.headers), i.body) for n, i in enumerate(unpack(body))
    ]
    assert [r["signed"] for r in framed] == [True, False, True]
    assert got == expected and len(got) == 3


async def test_answers_and_hosted_investors_are_packed_per_queue_and_listed_under_each_recipients_key(
    settings: Settings, keys: Any
) -> None:
    """The settlement agent's answers to the exchange (its answers queue) packed apart from new work
    for the exchange; messages to two hosted investors and the investor agent itself packed as one
    row for the investor agent's queue; a participant with its own queue alone. The view gives each
    item its own recipient's key, '.answers' where the bundle went to an answers queue."""
    settlement = keys.load_identity("settlement")
    now = datetime.now(UTC)

    def granted() -> Sealed:
        return seal(settlement, CoverGranted(cover_id=uuid4(), amount=Decimal(5)), recipient="exchange", now=now)

    messages = [
        granted(),
        request_to(settlement, "alice"),
        request_to(settlement, "exchange"),
        granted(),
        request_to(settlement, "bob"),
        request_to(settlement, "dora"),  # hosted by no agent: its own queue
        request_to(settlement, "investor"),
        request_to(settlement, "exchange"),
        granted(),
    ]
    packing = Bundling(32, 524_288, frozenset({"alice", "bob"}))
    async with AgentRuntime(support.AGENTS["settlement"], settings) as agent:
        await store(agent, messages, packing)
        rows = await support.rows(agent, "SELECT message_type, routing_key, body, headers FROM outbox ORDER BY seq")
        got, expected = await view_and_expected(agent)
        trust = agent.trust
    assert [(r["message_type"], r["routing_key"]) for r in rows] == [
        (BUNDLE_TYPE, "exchange.answers"),
        (BUNDLE_TYPE, "alice"),
        (BUNDLE_TYPE, "exchange"),
        ("certificate.issuance.request", "dora"),
    ]
    assert [[i.message_id for i in unpack(r["body"])] for r in rows[:3]] == [
        [str(messages[i].envelope.message_id) for i in group] for group in ((0, 3, 8), (1, 4, 6), (2, 7))
    ]
    assert all(row_signer(r, trust) == "settlement" for r in rows)
    assert got == expected
    by_id = {g[2]: g[4] for g in got}
    assert [by_id[str(m.envelope.message_id)] for m in messages] == [
        "exchange.answers",
        "alice",
        "exchange",
        "exchange.answers",
        "bob",
        "dora",
        "investor",
        "exchange",
        "exchange.answers",
    ]


# --- packing end to end ------------------------------------------------------------------------------


@pytest.mark.parametrize("pack_on", [True, False])
async def test_a_batch_of_issuances_is_packed_per_queue_and_every_receiver_claims_each_item(
    settings: Settings, keys: Any, pack_on: bool
) -> None:
    """Five requests from two hosted investors reach the issuer as one delivery (one batch). It
    emits a certificate to each investor (the investor agent's queue), a CertID change to the
    exchange, an event each: two packed rows and five events alone — or, with outbox_pack off,
    fifteen signed rows. Either way the investor and the exchange claim each message by its own id
    with the digest of its own bytes, and the certificates keep the order of the requests."""
    settings = dataclasses.replace(settings, outbox_pack=pack_on)
    users = ["alice", "alice", "bob", "alice", "bob"]
    async with (
        AgentRuntime(support.AGENTS["investor"], settings) as investor,
        AgentRuntime(support.AGENTS["exchange"], settings) as exchange,
        AgentRuntime(support.AGENTS["issuer"], settings) as issuer,
    ):
        await support.open_offering(issuer)
        request_ids = [await support.request(investor, user, shares=100 * (n + 1)) for n, user in enumerate(users)]
        assert await investor.relay.publish_pending() == len(users)  # one window: one bundle to the issuer
        async with running(issuer), running(investor), running(exchange):
            issued = [await investor.outcomes.reply("certificate.issued", r, timeout=30) for r in request_ids]
            listed = [await exchange.outcomes.reply("certid_list.updated", r, timeout=30) for r in request_ids]
        rows = await support.rows(
            issuer, "SELECT message_id::text AS id, message_type, routing_key, body, headers FROM outbox ORDER BY seq"
        )
        sent = await support.rows(
            issuer,
            "SELECT message_id::text AS id, message_type, routing_key, body, bundle_id::text AS bundle"
            " FROM outbox_messages ORDER BY seq, place",
        )
        got, expected = await view_and_expected(issuer)
        investor_inbox = await support.rows(investor, "SELECT message_id::text AS id, digest FROM inbox")
        commands = await support.rows(investor, "SELECT message_type, headers FROM outbox ORDER BY seq")
        exchange_inbox = await support.rows(exchange, "SELECT message_id::text AS id, digest FROM inbox")
        wallet = await support.rows(investor, "SELECT holder_user_id, shares FROM wallet ORDER BY shares")
        trust = issuer.trust
    assert [s.outcome for s in issued + listed] == [Outcome.PROCESSED] * 10
    # a command's messages are never packed: a signed row each
    assert [r["message_type"] for r in commands] == ["certificate.issuance.request"] * 5
    assert all(SIGNATURE_HEADER in json.loads(r["headers"]) for r in commands)
    assert got == expected
    certificates = [m for m in sent if m["message_type"] == "certificate.issued"]
    changes = [m for m in sent if m["message_type"] == "certid_list.updated"]
    events = [m for m in sent if m["message_type"] == "certificate.issuance.completed"]
    assert (len(certificates), len(changes), len(events)) == (5, 5, 5)
    # the certificates in the order of the requests, each under its investor's key
    assert [json.loads(m["body"])["payload"]["request_id"] for m in certificates] == [str(r) for r in request_ids]
    assert [m["routing_key"] for m in certificates] == users
    assert {m["routing_key"] for m in changes} == {"exchange"}
    if pack_on:
        bundles = [r for r in rows if r["message_type"] == BUNDLE_TYPE]
        assert len(rows) == 7 and len(bundles) == 2
        assert {m["bundle"] for m in certificates} == {bundles[0]["id"]}
        assert {m["bundle"] for m in changes} == {bundles[1]["id"]}
        assert all(m["bundle"] is None for m in events)
        assert all(json.loads(b["headers"]).keys() >= {SIGNATURE_HEADER} for b in bundles)
    else:
        assert len(rows) == 15 and all(r["message_type"] != BUNDLE_TYPE for r in rows)
        assert all(SIGNATURE_HEADER in json.loads(r["headers"]) for r in rows)
    assert all(row_signer(r, trust) == "issuer" for r in rows)
    # each receiver claimed each message by its id, with the sha256 of its own bytes
    digests = {m["id"]: hashlib.sha256(m["body"]).hexdigest() for m in sent}
    assert {(r["id"], r["digest"]) for r in investor_inbox} >= {(m["id"], digests[m["id"]]) for m in certificates}
    assert {(r["id"], r["digest"]) for r in exchange_inbox} == {(m["id"], digests[m["id"]]) for m in changes}
    assert [(w["holder_user_id"], w["shares"]) for w in wallet] == [(u, 100 * (n + 1)) for n, u in enumerate(users)]


async def fallback(settings: Settings, keys: Any) -> tuple[list[Any], list[int], Any, list[dict[str, Any]], Any]:
    """A packed bundle of alice's requests for 100, 7 (refused by the handler), 200 and 300 shares,
    handled by the issuer in one batch: the refusal sends the batch through a savepoint each."""
    alice = keys.load_identity("alice")
    sealed = [support.sealed_request(alice, shares=n) for n in (100, REFUSED, 200, 300)]
    items = [support.packed_item(s) for s in sealed]
    body = pack(items)
    transactions: list[int] = []
    async with AgentRuntime(issuer_recording(transactions), settings) as issuer:
        await support.open_offering(issuer)
        await publish_bundle(settings, body, packed_seal(alice, body))
        async with running(issuer):
            settled = [await issuer.outcomes.wait_for(i.message_id, timeout=20) for i in items]
            letter = await support.dead_letter(settings, "issuer")
        rows = await support.rows(issuer, "SELECT message_type, routing_key, body, headers FROM outbox ORDER BY seq")
        sent = await support.rows(
            issuer, "SELECT message_type, routing_key, body FROM outbox_messages ORDER BY seq, place"
        )
        got, expected = await view_and_expected(issuer)
        assert got == expected
        assert all(row_signer(r, issuer.trust) == "issuer" for r in rows)
    assert [(s.outcome, s.reason) for s in settled] == [
        (Outcome.PROCESSED, None),
        (Outcome.DEAD_LETTERED, Reason.SCHEMA_VIOLATION),
        (Outcome.PROCESSED, None),
        (Outcome.PROCESSED, None),
    ]
    assert len(set(transactions)) >= 2  # the batch ran again, a savepoint each
    return items, transactions, letter, rows, sent


async def test_the_savepoint_fallback_stores_what_the_batch_sends_in_order_and_nothing_of_the_refused(
    settings: Settings, keys: Any
) -> None:
    """What the others emitted is stored in their order, sealed or signed by the issuer; the refused
    item sends nothing, and its dead letter is the bundle narrowed to it."""
    items, _, letter, _, sent = await fallback(settings, keys)
    body = pack(items)
    assert letter.type == BUNDLE_TYPE and letter.body == body
    assert letter.headers[ITEMS_HEADER] == items[1].message_id
    certificates = [json.loads(m["body"])["causation_id"] for m in sent if m["message_type"] == "certificate.issued"]
    changes = [json.loads(m["body"])["causation_id"] for m in sent if m["message_type"] == "certid_list.updated"]
    assert certificates == changes == [items[i].message_id for i in (0, 2, 3)]
    assert len(sent) == 9


async def test_the_savepoint_fallback_still_packs_what_the_batch_sends_one_queue(settings: Settings, keys: Any) -> None:
    """The contract: what a consumer batch sends one of Kabuto's queues under one key is one row."""
    _, _, _, rows, _ = await fallback(settings, keys)
    # Found by this suite: the savepoint fallback stored each delivery's messages alone, three
    # signed rows to alice's queue; it now stores what the kept deliveries emitted together.
    to_alice = [r for r in rows if r["routing_key"] == "alice"]
    assert [r["message_type"] for r in to_alice] == [BUNDLE_TYPE]


# --- the receiving consumer -------------------------------------------------------------------------


async def test_a_packed_bundle_narrowed_to_two_items_runs_those_two_and_the_whole_later_absorbs_them(
    settings: Settings, keys: Any
) -> None:
    alice = keys.load_identity("alice")
    sealed = [support.sealed_request(alice, shares=n) for n in (100, 200, 300, 400)]
    items = [support.packed_item(s) for s in sealed]
    ids = [i.message_id for i in items]
    body = pack(items)
    seal = packed_seal(alice, body)
    async with AgentRuntime(support.AGENTS["issuer"], settings) as issuer:
        await support.open_offering(issuer)
        await publish_bundle(settings, body, {**seal, ITEMS_HEADER: f"{ids[3]},{ids[1]}"}, message_id="narrowed")
        async with running(issuer):
            narrowed = [await issuer.outcomes.wait_for(ids[i]) for i in (1, 3)]
            registered_first = await support.rows(issuer, "SELECT shares FROM register ORDER BY shares")
            await publish_bundle(settings, body, seal, message_id="whole")
            whole = await issuer.outcomes.wait_count(lambda s: True, 6, timeout=20)
        registered = await support.rows(issuer, "SELECT shares FROM register ORDER BY shares")
        inbox = await support.rows(issuer, "SELECT message_id::text AS id, digest FROM inbox")
    assert [s.outcome for s in narrowed] == [Outcome.PROCESSED] * 2
    assert [r["shares"] for r in registered_first] == [200, 400]
    later = {s.message_id: s.outcome for s in whole[2:]}
    assert later == {
        ids[0]: Outcome.PROCESSED,
        ids[1]: Outcome.DUPLICATE,
        ids[2]: Outcome.PROCESSED,
        ids[3]: Outcome.DUPLICATE,
    }
    assert [r["shares"] for r in registered] == [100, 200, 300, 400]
    assert {(r["id"], r["digest"]) for r in inbox} == {
        (i.message_id, hashlib.sha256(i.body).hexdigest()) for i in items
    }


async def test_a_packed_bundle_redelivered_after_a_crash_mid_batch_is_absorbed_item_by_item(
    settings: Settings, keys: Any
) -> None:
    """The consumer committed the first item of a packed bundle and crashed before the ack: the
    broker delivers the bundle again, the inbox absorbs that item, the others run once; the one the
    handler refuses is dead-lettered as the bundle narrowed to it, seal and all."""
    alice = keys.load_identity("alice")
    sealed = [support.sealed_request(alice, shares=n) for n in (100, REFUSED, 200)]
    items = [support.packed_item(s) for s in sealed]
    body = pack(items)
    seal = packed_seal(alice, body)
    transactions: list[int] = []
    async with AgentRuntime(issuer_recording(transactions), settings) as issuer:
        await support.open_offering(issuer)
        await publish_bundle(settings, body, seal)
        connection = await aio_pika.connect(settings.amqp_url)
        channel = await connection.channel()
        queue = await channel.get_queue(Names(settings.namespace).inbox("issuer"))
        delivery = await queue.get(no_ack=False, timeout=5)
        first = await settle_batch(issuer.consumer, unbundled(delivery)[:1])
        await connection.close()  # the crash: unacked, delivered again
        async with running(issuer):
            again = [await issuer.outcomes.wait_for(i.message_id, timeout=20) for i in items]
            letter = await support.dead_letter(settings, "issuer")
        registered = await support.rows(issuer, "SELECT shares FROM register ORDER BY shares")
        inbox = await support.rows(issuer, "SELECT message_id::text AS id, digest FROM inbox")
        trust = issuer.trust
    assert [s.outcome for s in first] == [Outcome.PROCESSED]
    assert [(s.outcome, s.reason) for s in again] == [
        (Outcome.DUPLICATE, None),
        (Outcome.DEAD_LETTERED, Reason.SCHEMA_VIOLATION),
        (Outcome.PROCESSED, None),
    ]
    assert [r["shares"] for r in registered] == [100, 200]
    assert {(r["id"], r["digest"]) for r in inbox} == {
        (items[i].message_id, hashlib.sha256(items[i].body).hexdigest()) for i in (0, 2)
    }
    assert letter.message_id == items[1].message_id and letter.type == BUNDLE_TYPE and letter.body == body
    assert letter.headers[ITEMS_HEADER] == items[1].message_id
    assert letter.headers[SIGNATURE_HEADER] == seal[SIGNATURE_HEADER]
    proven = verified_signer(sealed_bytes(letter.body, packed=True), letter.headers, trust, datetime.now(UTC))
    assert proven.participant.user_id == "alice"


# --- dead letters and replay ------------------------------------------------------------------------


async def test_replaying_a_packed_item_twice_finds_it_once_and_the_rest_stays_dead_narrowed_until_none_is_left(
    settings: Settings, keys: Any
) -> None:
    alice = keys.load_identity("alice")
    sealed = [support.sealed_request(alice, shares=n) for n in (100, 200, 300)]
    items = [support.packed_item(s) for s in sealed]
    ids = [i.message_id for i in items]
    body = pack(items)
    async with AgentRuntime(support.AGENTS["issuer"], settings) as issuer:
        await support.open_offering(issuer)
        await dead_letter_whole(settings, body, packed_seal(alice, body))
        assert await ops.replay(settings, "issuer", ids[0])
        again = await ops.replay(settings, "issuer", ids[0])  # replayed already: not dead any more
        after_one = await ops.dead_letter_page(settings, "issuer", issuer.trust)
        assert await ops.replay(settings, "issuer", ids[2])
        after_two = await ops.dead_letters(settings, "issuer")
        page_two = await ops.dead_letter_page(settings, "issuer", issuer.trust)
        assert await ops.replay(settings, "issuer", ids[1])
        left = await ops.dead_letters(settings, "issuer")
        async with running(issuer):
            replayed = [await issuer.outcomes.wait_for(i) for i in ids]
            count = len(issuer.outcomes)
            assert not await ops.replay(settings, "issuer", ids[1])
        registered = await support.rows(issuer, "SELECT shares FROM register ORDER BY shares")
    assert again is False
    assert [(letter.message_id, p.sender, p.verified) for letter, p in after_one.letters] == [
        (ids[1], "alice", True),
        (ids[2], "alice", True),
    ]
    assert all(letter.sealed_in == body for letter, _ in after_one.letters)
    assert all(letter.headers[ITEMS_HEADER] == f"{ids[1]},{ids[2]}" for letter, _ in after_one.letters)
    assert [(letter.message_id, letter.body, letter.headers[ITEMS_HEADER]) for letter in after_two] == [
        (ids[1], items[1].body, ids[1])
    ]
    assert [(p.sender, p.verified) for _, p in page_two.letters] == [("alice", True)]
    assert after_two[0].reason == "broker:delivery_limit"
    assert left == []
    assert [s.outcome for s in replayed] == [Outcome.PROCESSED] * 3 and count == 3
    assert [r["shares"] for r in registered] == [100, 200, 300]


async def test_a_packed_item_dead_lettered_by_the_consumer_replays_alone_and_its_sibling_is_not_run_again(
    settings: Settings, keys: Any
) -> None:
    """A packed item refused by its handler, listed by the deadletters page as itself, proven by the
    seal; replayed (the handler now accepting it) it runs alone: its processed siblings, in the same
    bundle bytes, are not even absorbed."""
    alice = keys.load_identity("alice")
    sealed = [support.sealed_request(alice, shares=n) for n in (100, REFUSED, 300)]
    items = [support.packed_item(s) for s in sealed]
    ids = [i.message_id for i in items]
    body = pack(items)
    transactions: list[int] = []
    async with AgentRuntime(issuer_recording(transactions), settings) as issuer:
        await support.open_offering(issuer)
        await publish_bundle(settings, body, packed_seal(alice, body))
        async with running(issuer):
            first = [await issuer.outcomes.wait_for(i) for i in ids]
        page = await ops.dead_letter_page(settings, "issuer", issuer.trust)
        assert await ops.replay(settings, "issuer", ids[1])
        async with running(issuer):
            runs = await issuer.outcomes.wait_count(lambda s: s.message_id == ids[1], 2, timeout=20)
            replayed = runs[-1]
            others = issuer.outcomes.count(Outcome.DUPLICATE)
        after = await ops.dead_letters(settings, "issuer")
    assert [s.outcome for s in first] == [Outcome.PROCESSED, Outcome.DEAD_LETTERED, Outcome.PROCESSED]
    assert [(letter.message_id, letter.body, letter.sealed_in, p.sender, p.verified) for letter, p in page.letters] == [
        (ids[1], items[1].body, body, "alice", True)
    ]
    assert (replayed.outcome, replayed.reason) == (Outcome.DEAD_LETTERED, Reason.SCHEMA_VIOLATION)
    assert others == 0
    assert [(letter.message_id, letter.headers[ITEMS_HEADER]) for letter in after] == [(ids[1], ids[1])]


# --- least privilege ----------------------------------------------------------------------------------


async def test_every_agents_own_login_reads_its_outbox_unpacked(settings: Settings, keys: Any) -> None:
    """Each of Kabuto's agents, under its own least-privilege login, has outbox_messages in its
    schema and may unpack a bundle row it wrote."""
    alice = keys.load_identity("alice")
    sealed = [request_to(alice, "exchange", shares=n) for n in (100, 200)]
    body = pack([support.packed_item(s) for s in sealed])
    headers = json.dumps(packed_seal(alice, body))
    found = {}
    for agent in AGENT_IDS:
        async with agent_pool(agent_urls(settings, agent).database, agent, max_size=1) as pool:
            user = await pool.fetchval("SELECT session_user")
            await pool.execute(
                "INSERT INTO outbox (message_id, message_type, exchange, routing_key, body, headers)"
                " VALUES ($1, $2, 'messages', 'exchange', $3, $4::jsonb)",
                uuid4(),
                BUNDLE_TYPE,
                body,
                headers,
            )
            listed = await pool.fetch("SELECT message_id::text AS id, routing_key FROM outbox_messages ORDER BY place")
            found[agent] = ([(r["id"], r["routing_key"]) for r in listed], user)
    for agent, (listed, user) in found.items():
        assert user != "postgres" and f"_{agent}_" in user, (agent, user)
        assert listed == [(str(s.envelope.message_id), "exchange") for s in sealed], agent
