"""Sealed bundles (issue 8, stop 27; broker/bundle.py): the relay signs a bundle's bytes with the
key that signed its items, and a receiver that verifies that seal once checks no item signed with
the same key again. An item signed with another key, a bundle with no seal, or a seal that does not
verify (another key's, bytes it does not cover, a CA Kabuto does not trust, not base64) leaves every
item checked alone, as before seals: a forged item among them is dead-lettered alone as
``signature_invalid`` (docs/bad-input.md, B84) and the rest is processed."""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from broker import ops, outbox
from broker.bundle import Item, pack, sealed_bytes, unpack
from broker.consumer import Outcome, Settled
from broker.envelope import Sealed, sign_headers, verified_signer
from broker.errors import Reason
from broker.outbox import seal_headers
from broker.pki import Identity
from broker.runtime import AgentRuntime, running
from broker.settings import Settings
from broker.signed_here import SIGNED_HERE
from broker.topology import Names
from schemas.envelope import SIGNATURE_HEADER, SIGNATURE_HEADERS, SIGNER_HEADER
from tests import support
from tests.integration.test_bundles import item
from tests.integration.test_rejections import foreign_identity

Seal = Callable[[bytes], dict[str, str]]


def badly_signed(sealed: Sealed, other: Sealed) -> Item:
    """``sealed`` with the signature of ``other``: well-formed base64 that does not verify."""
    headers = {**sealed.headers, SIGNATURE_HEADER: other.headers[SIGNATURE_HEADER]}
    return dataclasses.replace(item(sealed), headers=headers)


async def publish(settings: Settings, body: bytes, headers: dict[str, str]) -> None:
    await support.publish_bundle(settings, body, headers)


Outcomes = list[tuple[Outcome, Reason | None]]
BAD_ONE_REFUSED = [
    (Outcome.PROCESSED, None),
    (Outcome.DEAD_LETTERED, Reason.SIGNATURE_INVALID),
    (Outcome.PROCESSED, None),
]


async def outcomes_of(settings: Settings, items: list[Item], seal: Seal | None) -> tuple[Outcomes, list[int]]:
    """What the issuer made of each item of a bundle of ``items`` sealed by ``seal``, and the
    shares it registered."""
    body = pack(items)
    async with AgentRuntime(support.AGENTS["issuer"], settings) as issuer:
        await support.open_offering(issuer)
        await publish(settings, body, seal(body) if seal else {})
        async with running(issuer):
            settled = [await issuer.outcomes.wait_for(i.message_id) for i in items]
        registered = await support.rows(issuer, "SELECT shares FROM register ORDER BY shares")
    return [(s.outcome, s.reason) for s in settled], [r["shares"] for r in registered]


def three(alice: Identity) -> list[Item]:
    """Alice's requests for 100, 200 and 300 shares, the second carrying another's signature."""
    sealed = [support.sealed_request(alice, shares=n) for n in (100, 200, 300)]
    return [item(sealed[0]), badly_signed(sealed[1], sealed[0]), item(sealed[2])]


async def test_an_item_signed_by_the_key_that_sealed_its_bundle_is_not_verified_again(
    settings: Settings, keys: Any
) -> None:
    # The seal is alice's signature over the bundle's exact bytes, the bad one's included: only
    # alice's key could have sent them, so the consumer checks no item signature of hers again.
    # That the second item is processed is how the test sees the check skipped.
    alice = keys.load_identity("alice")
    items = three(alice)
    settled, registered = await outcomes_of(settings, items, lambda body: seal_headers(alice, body))
    assert settled == [(Outcome.PROCESSED, None)] * 3
    assert registered == [100, 200, 300]


async def test_without_a_seal_every_item_is_verified_alone(settings: Settings, keys: Any) -> None:
    items = three(keys.load_identity("alice"))
    settled, registered = await outcomes_of(settings, items, None)
    assert settled == BAD_ONE_REFUSED
    assert registered == [100, 300]


def _another_key(keys: Any, tmp: Path) -> Seal:
    bob = keys.load_identity("bob")
    return lambda body: seal_headers(bob, body)


def _other_bytes(keys: Any, tmp: Path) -> Seal:
    alice = keys.load_identity("alice")
    return lambda body: sign_headers(alice, body + b"!")


def _no_context(keys: Any, tmp: Path) -> Seal:
    """Alice's signature over the bundle's bytes alone, without the seal's context: a signature
    made for anything but a seal is never taken for one."""
    alice = keys.load_identity("alice")
    return lambda body: sign_headers(alice, body)


def _untrusted_ca(keys: Any, tmp: Path) -> Seal:
    impostor = foreign_identity(tmp, "alice")
    return lambda body: seal_headers(impostor, body)


def _not_base64(keys: Any, tmp: Path) -> Seal:
    alice = keys.load_identity("alice")
    return lambda body: {**seal_headers(alice, body), SIGNATURE_HEADER: "not base64 ~~"}


def _unknown_signer(keys: Any, tmp: Path) -> Seal:
    alice = keys.load_identity("alice")
    return lambda body: {SIGNATURE_HEADER: base64.b64encode(alice.sign(body)).decode(), SIGNER_HEADER: "ab" * 32}


@pytest.mark.parametrize("seal", [_another_key, _other_bytes, _no_context, _untrusted_ca, _not_base64, _unknown_signer])
async def test_a_seal_that_does_not_vouch_for_alices_items_leaves_each_checked_alone(
    settings: Settings, keys: Any, tmp_path: Path, seal: Callable[[Any, Path], Seal]
) -> None:
    items = three(keys.load_identity("alice"))
    settled, registered = await outcomes_of(settings, items, seal(keys, tmp_path))
    assert settled == BAD_ONE_REFUSED
    assert registered == [100, 300]


async def test_the_relay_seals_a_bundle_with_the_key_that_signed_most_of_its_items(
    settings: Settings, keys: Any
) -> None:
    names = Names(settings.namespace)
    alice = keys.load_identity("alice")
    async with (
        AgentRuntime(support.AGENTS["exchange"], settings),
        AgentRuntime(support.AGENTS["settlement"], settings),
        AgentRuntime(support.AGENTS["issuer"], settings) as issuer,
    ):
        (own,) = issuer.identities.values()
        # to the exchange: the issuer's, alice's, the issuer's; to settlement: alice's only
        signers = [(own, "exchange"), (alice, "exchange"), (alice, "settlement"), (own, "exchange")]
        signers += [(alice, "settlement")]
        sealed = [support.sealed_request(who, to=to, shares=100 * (n + 1)) for n, (who, to) in enumerate(signers)]
        async with issuer.pool.acquire() as connection, connection.transaction():
            await outbox.store(connection, sealed)
        assert await issuer.relay.publish_pending() == len(sealed)
        found: dict[str, list[aio_pika.IncomingMessage]] = {}
        connection = await aio_pika.connect(settings.amqp_url)
        async with connection:
            channel = await connection.channel()
            for agent in ("exchange", "settlement"):
                queue = await channel.get_queue(names.inbox(agent))
                found[agent] = []
                while (message := await queue.get(no_ack=True, fail=False)) is not None:
                    found[agent].append(message)
        now = datetime.now(UTC)
        (to_exchange,) = found["exchange"]
        (to_settlement,) = found["settlement"]
        assert unpack(to_exchange.body) == [item(sealed[i]) for i in (0, 1, 3)]
        sealer = verified_signer(sealed_bytes(to_exchange.body), to_exchange.headers, issuer.trust, now)
        assert sealer.fingerprint == own.fingerprint
        # rows signed by a key the issuer does not hold travel in an unsealed bundle
        assert unpack(to_settlement.body) == [item(sealed[i]) for i in (2, 4)]
        assert not set(SIGNATURE_HEADERS) & set(to_settlement.headers)


async def test_what_is_left_of_a_sealed_bundle_after_a_replay_is_kept_unsealed(settings: Settings, keys: Any) -> None:
    # The seal covered the whole bundle; kept with it, what is left would carry a seal that no
    # longer verifies over it. Its items keep their own signatures and are checked alone.
    alice = keys.load_identity("alice")
    sealed = [support.sealed_request(alice, shares=n) for n in (100, 200, 300)]
    ids = [str(s.envelope.message_id) for s in sealed]
    body = pack([item(s) for s in sealed])
    async with AgentRuntime(support.AGENTS["issuer"], settings) as issuer:
        await support.open_offering(issuer)
        await support.dead_lettered_whole(settings, body, seal_headers(alice, body))
        assert await ops.replay(settings, "issuer", ids[1])
        async with running(issuer):
            replayed = await issuer.outcomes.wait_for(ids[1])
        kept = await support.dead_letter(settings, "issuer")
    assert replayed.outcome is Outcome.PROCESSED
    assert unpack(kept.body) == [item(sealed[i]) for i in (0, 2)]
    assert not set(SIGNATURE_HEADERS) & set(kept.headers)


async def relayed_to_the_issuer(
    investor: AgentRuntime, issuer: AgentRuntime, good: Sealed, bad: Sealed
) -> tuple[Settled, Settled, list[int]]:
    """The investor agent's relay publishes its two rows, ``good``'s and ``bad``'s; the issuer, run,
    settles them: each one's outcome, and the shares registered."""
    assert await investor.relay.publish_pending() == 2
    async with running(issuer):
        first = await issuer.outcomes.wait_for(good.envelope.message_id)
        second = await issuer.outcomes.wait_for(bad.envelope.message_id)
    registered = await support.rows(issuer, "SELECT shares FROM register ORDER BY shares")
    return first, second, [r["shares"] for r in registered]


async def test_an_outbox_row_changed_after_signing_is_not_sealed_and_its_receiver_refuses_it(
    settings: Settings, keys: Any
) -> None:
    """The relay seals only what this process signed as it stands (broker.signed_here): a row whose
    body was changed after signing — by anyone who can write the outbox table — keeps its key out
    of the seal, and its receiver checks it on its own signature (found by review)."""
    async with (
        AgentRuntime(support.AGENTS["issuer"], settings) as issuer,
        AgentRuntime(support.AGENTS["investor"], settings) as investor,
    ):
        alice = investor.identities["alice"]
        good = support.sealed_request(alice, shares=100)
        signed = support.sealed_request(alice, shares=200)
        assert signed.headers  # signed here, then changed
        tampered = dataclasses.replace(signed, body=signed.body.replace(b'"shares":200', b'"shares":900', 1))
        assert tampered.body != signed.body
        await support.open_offering(issuer)
        async with investor.pool.acquire() as connection, connection.transaction():
            await outbox.store(connection, [good, tampered])
        first, second, registered = await relayed_to_the_issuer(investor, issuer, good, tampered)
    assert first.outcome is Outcome.PROCESSED
    assert (second.outcome, second.reason) == (Outcome.DEAD_LETTERED, Reason.SIGNATURE_INVALID)
    assert registered == [100]


async def test_rows_signed_in_another_process_travel_in_an_unsealed_bundle(settings: Settings, keys: Any) -> None:
    """A row this process has no note of (signed before a restart, or by a command elsewhere) is
    not vouched for: the bundle goes unsealed, and each item is checked on its own signature."""
    names = Names(settings.namespace)
    async with (
        AgentRuntime(support.AGENTS["exchange"], settings),
        AgentRuntime(support.AGENTS["issuer"], settings) as issuer,
    ):
        (own,) = issuer.identities.values()
        sealed = [support.sealed_request(own, to="exchange", shares=n) for n in (100, 200)]
        assert all(s.headers for s in sealed)  # signed here
        SIGNED_HERE.take(str(sealed[1].envelope.message_id), b"", {})  # its note gone, as after a restart
        async with issuer.pool.acquire() as connection, connection.transaction():
            await outbox.store(connection, sealed)
        assert await issuer.relay.publish_pending() == 2
        connection = await aio_pika.connect(settings.amqp_url)
        async with connection:
            channel = await connection.channel()
            queue = await channel.get_queue(names.inbox("exchange"))
            bundle = await queue.get(no_ack=True, timeout=5)
    assert unpack(bundle.body) == [item(s) for s in sealed]
    assert not set(SIGNATURE_HEADERS) & set(bundle.headers)
