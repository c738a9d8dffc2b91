"""Bundles between agents (issue 8, broker/bundle.py): the relay sends an agent's rows for one
queue as one AMQP message, and the consumer settles each item as the delivery it would have been
alone — verified before parsing, claimed in the inbox by its own id, a poisoned or forged item
dead-lettered alone with its own reason while the rest commits, a bundle redelivered after a
crash absorbed item by item (R-001-26), a bundle that is not one refused whole (docs/bad-input.md,
B81–B83)."""

from __future__ import annotations

import dataclasses
from typing import Any

import aio_pika

from broker import ops, outbox
from broker.bundle import BUNDLE_TYPE, CONTENT_TYPE, Item, pack, unbundled, unpack
from broker.consumer import Outcome
from broker.envelope import Sealed
from broker.errors import Reason
from broker.group_commit import settle_batch
from broker.runtime import AgentRuntime, running
from broker.settings import Settings
from broker.topology import Names
from tests import support
from tests.integration.test_group_commit import POISON, REFUSED, issuer_recording


def item(sealed: Sealed) -> Item:
    return Item(str(sealed.envelope.message_id), sealed.envelope.type, sealed.headers, sealed.body)


def forged(sealed: Sealed) -> Item:
    """The same signed message with one byte of its body changed after signing."""
    body = sealed.body.replace(b'"shares":', b'"shares": ', 1)
    return dataclasses.replace(item(sealed), body=body)


async def publish_bundle(settings: Settings, body: bytes, routing_key: str = "issuer") -> None:
    await support.publish_bundle(settings, body, routing_key=routing_key)


async def test_each_item_of_a_bundle_is_settled_alone_and_the_bundle_acked_once(settings: Settings, keys: Any) -> None:
    alice = keys.load_identity("alice")
    sealed = [support.sealed_request(alice, shares=n) for n in (100, 200, POISON, 300, REFUSED, 400, 500)]
    items = [item(s) for s in sealed]
    items[6] = forged(sealed[6])
    ids = [i.message_id for i in items]
    transactions: list[int] = []
    async with AgentRuntime(issuer_recording(transactions), settings) as issuer:
        await support.open_offering(issuer)
        await publish_bundle(settings, pack(items))
        async with running(issuer):
            done = await issuer.outcomes.wait_count(lambda s: s.outcome is Outcome.PROCESSED, 4, timeout=20)
            refused = await issuer.outcomes.wait_for(ids[4])
            forgery = await issuer.outcomes.wait_for(ids[6])
            poisoned = await issuer.outcomes.wait(
                lambda s: s.message_id == ids[2] and s.outcome is Outcome.DEAD_LETTERED, timeout=20
            )
            letters = [await support.dead_letter(settings, "issuer") for _ in range(3)]
        registered = await support.rows(issuer, "SELECT shares FROM register ORDER BY shares")
        inbox = await support.rows(issuer, "SELECT message_id::text AS id FROM inbox")
        depth = await support.queue_depth(settings, Names(settings.namespace).inbox("issuer"))
    assert sorted(s.message_id for s in done) == sorted(ids[i] for i in (0, 1, 3, 5))
    # one batch: the six items that passed their checks ran in one transaction until the poisoned
    # one failed, then in one more with a savepoint each (broker.group_commit)
    assert transactions[:3] == [transactions[0]] * 3 and transactions[3:9] == [transactions[3]] * 6
    assert [r["shares"] for r in registered] == [100, 200, 300, 400]
    assert {r["id"] for r in inbox} == {ids[i] for i in (0, 1, 3, 5)}
    assert (refused.outcome, refused.reason) == (Outcome.DEAD_LETTERED, Reason.SCHEMA_VIOLATION)
    assert (forgery.outcome, forgery.reason) == (Outcome.DEAD_LETTERED, Reason.SIGNATURE_INVALID)
    assert poisoned.reason is Reason.RETRIES_EXHAUSTED
    # each dead letter is its item alone, byte for byte, with its own reason
    by_id = {letter.message_id: letter for letter in letters}
    assert set(by_id) == {ids[2], ids[4], ids[6]}
    for index, reason in ((2, "retries_exhausted"), (4, "schema_violation"), (6, "signature_invalid")):
        assert by_id[ids[index]].body == items[index].body
        assert by_id[ids[index]].headers["x-kabuto-reason"] == reason
        assert by_id[ids[index]].type == "certificate.issuance.request"
    assert depth == 0  # acked: nothing of the bundle is left on the queue


async def test_a_bundle_delivered_again_after_a_crash_is_absorbed_item_by_item(settings: Settings, keys: Any) -> None:
    alice = keys.load_identity("alice")
    sealed = [support.sealed_request(alice, shares=n) for n in (100, 200, 300)]
    async with AgentRuntime(support.AGENTS["issuer"], settings) as issuer:
        await support.open_offering(issuer)
        await publish_bundle(settings, pack([item(s) for s in sealed]))
        # The consumer takes the bundle and commits its items, then "crashes" before the ack.
        connection = await aio_pika.connect(settings.amqp_url)
        channel = await connection.channel()
        queue = await channel.get_queue(Names(settings.namespace).inbox("issuer"))
        delivery = await queue.get(no_ack=False, timeout=5)
        first = await settle_batch(issuer.consumer, unbundled(delivery))
        await connection.close()  # unacked: the broker delivers the bundle again
        async with running(issuer):
            again = [await issuer.outcomes.wait_for(s.envelope.message_id) for s in sealed]
        registered = await support.rows(issuer, "SELECT shares FROM register ORDER BY shares")
    assert [s.outcome for s in first] == [Outcome.PROCESSED] * 3
    assert [s.outcome for s in again] == [Outcome.DUPLICATE] * 3
    assert [r["shares"] for r in registered] == [100, 200, 300]


async def test_a_bundle_that_is_not_one_is_dead_lettered_whole_and_changes_nothing(
    settings: Settings, keys: Any
) -> None:
    good = pack([item(support.sealed_request(keys.load_identity("alice")))])
    body = good + b"trailing"
    async with AgentRuntime(support.AGENTS["issuer"], settings) as issuer:
        await support.open_offering(issuer)
        await publish_bundle(settings, body)
        async with running(issuer):
            settled = await issuer.outcomes.wait_for("bundle-1")
        letter = await support.dead_letter(settings, "issuer")
        registered = await support.rows(issuer, "SELECT shares FROM register")
    assert (settled.outcome, settled.reason) == (Outcome.DEAD_LETTERED, Reason.BUNDLE_MALFORMED)
    assert letter.body == body and letter.type == BUNDLE_TYPE
    assert "after the last item" in str(letter.headers["x-kabuto-detail"])
    assert registered == []


async def relayed(settings: Settings, keys: Any) -> tuple[list[Sealed], dict[str, list[aio_pika.IncomingMessage]]]:
    """Rows for the exchange and settlement, interleaved in one outbox window of the issuer's
    relay; what each of those queues then holds."""
    alice = keys.load_identity("alice")
    to = ["exchange", "settlement", "exchange", "exchange", "settlement"]
    sealed = [support.sealed_request(alice, to=recipient, shares=100 * (n + 1)) for n, recipient in enumerate(to)]
    names = Names(settings.namespace)
    async with (
        AgentRuntime(support.AGENTS["exchange"], settings),
        AgentRuntime(support.AGENTS["settlement"], settings),
        AgentRuntime(support.AGENTS["issuer"], settings) as issuer,
    ):
        async with issuer.pool.acquire() as connection, connection.transaction():
            await outbox.store(connection, sealed)
        assert await issuer.relay.publish_pending() == len(sealed)
        pending = await support.rows(issuer, "SELECT count(*) AS n FROM outbox WHERE published_at IS NULL")
        assert pending == [{"n": 0}]
        connection = await aio_pika.connect(settings.amqp_url)
        async with connection:
            channel = await connection.channel()
            found: dict[str, list[aio_pika.IncomingMessage]] = {}
            for agent in ("exchange", "settlement"):
                queue = await channel.get_queue(names.inbox(agent))
                found[agent] = []
                while (message := await queue.get(no_ack=True, fail=False)) is not None:
                    found[agent].append(message)
    return sealed, found


async def test_the_relay_sends_a_windows_rows_for_one_agent_queue_as_one_bundle_in_order(
    settings: Settings, keys: Any
) -> None:
    sealed, found = await relayed(settings, keys)
    assert [len(found["exchange"]), len(found["settlement"])] == [1, 1]
    for agent, indexes in (("exchange", (0, 2, 3)), ("settlement", (1, 4))):
        (bundle,) = found[agent]
        assert bundle.type == BUNDLE_TYPE and bundle.content_type == CONTENT_TYPE
        assert unpack(bundle.body) == [item(sealed[i]) for i in indexes]


async def test_with_bundles_turned_off_every_row_travels_alone(settings: Settings, keys: Any) -> None:
    sealed, found = await relayed(dataclasses.replace(settings, outbox_bundle=1), keys)
    assert [m.body for m in found["exchange"]] == [sealed[i].body for i in (0, 2, 3)]
    assert [m.body for m in found["settlement"]] == [sealed[i].body for i in (1, 4)]
    assert {m.type for m in found["exchange"]} == {"certificate.issuance.request"}


async def test_a_bundle_the_broker_dead_lettered_whole_is_listed_and_replayed_item_by_item(
    settings: Settings, keys: Any
) -> None:
    """Past the delivery limit the broker dead-letters the delivery it had, a whole bundle: each of
    its items is listed with its own id and verified sender, and replayed alone by that id."""
    alice = keys.load_identity("alice")
    sealed = [support.sealed_request(alice, shares=n) for n in (100, 200, 300)]
    ids = [str(s.envelope.message_id) for s in sealed]
    async with AgentRuntime(support.AGENTS["issuer"], settings) as issuer:
        await support.open_offering(issuer)
        await support.dead_lettered_whole(settings, pack([item(s) for s in sealed]))
        listed = await ops.dead_letters(settings, "issuer")
        page = await ops.dead_letter_page(settings, "issuer", issuer.trust)
        assert await ops.replay(settings, "issuer", ids[1])
        async with running(issuer):
            replayed = await issuer.outcomes.wait_for(ids[1])
        left = await ops.dead_letters(settings, "issuer")
        registered = await support.rows(issuer, "SELECT shares FROM register")
    assert [(letter.message_id, letter.reason) for letter in listed] == [(i, "broker:delivery_limit") for i in ids]
    assert [letter.body for letter in listed] == [s.body for s in sealed]
    assert [(p.sender, p.verified) for _, p in page.letters] == [("alice", True)] * 3 and page.total == 3
    assert replayed.outcome is Outcome.PROCESSED
    assert [(letter.message_id, letter.reason) for letter in left] == [
        (ids[0], "broker:delivery_limit"),
        (ids[2], "broker:delivery_limit"),
    ]
    assert registered == [{"shares": 200}]
