"""Deliveries opened as they arrive (issue 8): a delivery's signature is verified and its
envelope and payload checked while the consumer still waits on the batch before it, and its
batch settles what it opened to; an error other than a refusal is met again in its batch."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

from agents.issuer.app import on_issuance_request
from broker import outbox, revocation
from broker.bundle import BUNDLE_TYPE, Item, pack
from broker.consumer import Outcome
from broker.context import Context
from broker.errors import InputRejected, Reason
from broker.group_commit import Deliveries
from broker.pki import KeyStore, default_participant
from broker.pruning import prune_inbox
from broker.runtime import AgentDefinition, AgentRuntime, running
from broker.settings import Settings
from schemas.identity import Role
from schemas.issuance import CertificateIssuanceRequest
from tests import support


class _Arrived:
    """What aio-pika hands the consumer's callback; only its body, type and headers are read on arrival."""

    def __init__(self, name: str, body: bytes = b"", type_: str | None = None) -> None:
        self.body, self.type, self.message_id = body, type_, name
        self.headers: dict[str, Any] = {}


async def test_each_delivery_and_each_item_of_a_bundle_is_opened_as_it_arrives_and_handed_over_once() -> None:
    opened: list[str | None] = []

    def opener(delivery: Any) -> Any:
        opened.append(delivery.message_id)
        if delivery.message_id == "refused":
            return InputRejected(Reason.MALFORMED_JSON, "not JSON")
        return None if delivery.message_id == "raised" else f"opened {delivery.message_id}"

    deliveries = Deliveries(object(), opener=opener)  # type: ignore[arg-type]
    (buffer,) = deliveries._buffers
    await deliveries._arrived(buffer, _Arrived("one"))  # type: ignore[arg-type]
    assert opened == ["one"]  # before any batch was asked for
    bundle = pack([Item(name, "t", {}, b"") for name in ("refused", "raised", "two")])
    await deliveries._arrived(buffer, _Arrived("bundle", bundle, BUNDLE_TYPE))  # type: ignore[arg-type]
    assert opened == ["one", "refused", "raised", "two"]
    batch = await deliveries.next_batch(32)
    assert batch is not None and [d.message_id for d in batch] == ["one", "refused", "raised", "two"]
    handed = deliveries.opened(batch)
    assert handed[0] == "opened one" and handed[3] == "opened two" and handed[2] is None
    assert isinstance(handed[1], InputRejected) and handed[1].reason is Reason.MALFORMED_JSON
    assert deliveries.opened(batch) == [None] * 4  # handed over once: nothing is kept for the batch


def issuer_waiting(first_handled: asyncio.Event, go_on: asyncio.Event) -> AgentDefinition:
    """The real issuance handler; the first request's waits, in its transaction, for ``go_on``."""

    async def handler(request: CertificateIssuanceRequest, ctx: Context) -> None:
        if not first_handled.is_set():
            first_handled.set()
            await go_on.wait()
        await on_issuance_request(request, ctx)

    return AgentDefinition("issuer", Role.ISSUER, {CertificateIssuanceRequest: handler})


class CountingClock:
    """The consumer's clock, counting its calls: opening a delivery reads it once."""

    def __init__(self, fail_first: bool = False) -> None:
        self.calls, self.failed, self._fail = 0, 0, fail_first

    def __call__(self) -> datetime:
        self.calls += 1
        if self._fail:
            self._fail, self.failed = False, self.failed + 1
            raise RuntimeError("the clock failed once")
        return datetime.now(UTC)


async def test_a_delivery_is_opened_while_the_batch_before_it_is_still_in_its_transaction(
    settings: Settings, keys: Any
) -> None:
    alice = keys.load_identity("alice")
    first_handled, go_on = asyncio.Event(), asyncio.Event()
    async with AgentRuntime(issuer_waiting(first_handled, go_on), settings) as issuer:
        clock = issuer.consumer.clock = CountingClock()
        await support.open_offering(issuer)
        first, second = (support.sealed_request(alice, shares=n) for n in (100, 200))
        async with running(issuer):
            await support.publish_sealed(settings, first)
            async with asyncio.timeout(10):
                await first_handled.wait()
            before = clock.calls
            await support.publish_sealed(settings, second)
            await support.eventually(_more_than(clock, before))  # opened while the first still waits
            go_on.set()
            done = [await issuer.outcomes.wait_for(s.envelope.message_id) for s in (first, second)]
        assert [s.outcome for s in done] == [Outcome.PROCESSED, Outcome.PROCESSED]
        registered = await support.rows(issuer, "SELECT shares FROM register ORDER BY shares")
    assert [r["shares"] for r in registered] == [100, 200]


def _more_than(clock: CountingClock, calls: int) -> Callable[[], bool]:
    return lambda: clock.calls > calls


async def test_an_error_met_while_opening_on_arrival_is_met_again_in_the_batch(settings: Settings, keys: Any) -> None:
    """Opening on arrival is only ahead of time: what fails there for a reason that is not a
    refusal (here the clock) is opened again when its batch takes it, and settled as then."""
    async with AgentRuntime(support.AGENTS["issuer"], settings) as issuer:
        clock = issuer.consumer.clock = CountingClock(fail_first=True)
        await support.open_offering(issuer)
        sealed = support.sealed_request(keys.load_identity("alice"))
        async with running(issuer):
            await support.publish_sealed(settings, sealed)
            settled = await issuer.outcomes.wait_for(sealed.envelope.message_id)
    assert clock.failed == 1 and settled.outcome is Outcome.PROCESSED


class ShiftedClock(CountingClock):
    """The consumer's clock, moved on at will: as much time passes as the test says."""

    def __init__(self) -> None:
        super().__init__()
        self.shift = timedelta(0)

    def __call__(self) -> datetime:
        return super().__call__() + self.shift


@dataclass
class Held:
    """An issuer whose consumer is held on a batch until ``go_on`` is set."""

    issuer: AgentRuntime
    clock: ShiftedClock
    handled: list[int]
    go_on: asyncio.Event

    async def arrived(self, settings: Settings, sealed: Any, body: bytes | None = None) -> None:
        """Publish ``sealed`` (with another ``body``, if given) and wait until it was opened on
        arrival, while the batch is held."""
        calls = self.clock.calls
        routing_key = outbox.routing_key(sealed.envelope)
        await support.publish(
            settings, body or sealed.body, sealed.headers, routing_key, str(sealed.envelope.message_id)
        )
        await support.eventually(_more_than(self.clock, calls))


@asynccontextmanager
async def held_issuer(settings: Settings, keys: Any, before: list[Any]) -> AsyncIterator[Held]:
    """An issuer that handles ``before`` one by one, then is held on a batch of its own."""
    handled: list[int] = []
    blocked, go_on = asyncio.Event(), asyncio.Event()

    async def handler(request: CertificateIssuanceRequest, ctx: Context) -> None:
        handled.append(request.shares)
        if request.shares == 700:
            blocked.set()
            await go_on.wait()  # the consumer is held on this batch (a slow one, an outage)
        await on_issuance_request(request, ctx)

    definition = AgentDefinition("issuer", Role.ISSUER, {CertificateIssuanceRequest: handler})
    async with AgentRuntime(definition, settings) as issuer:
        clock = issuer.consumer.clock = ShiftedClock()
        await support.open_offering(issuer)
        async with running(issuer):
            for sealed in before:
                await support.publish_sealed(settings, sealed)
                await issuer.outcomes.wait_for(sealed.envelope.message_id)
            await support.publish_sealed(settings, support.sealed_request(keys.load_identity("alice"), shares=700))
            async with asyncio.timeout(10):
                await blocked.wait()
            yield Held(issuer, clock, handled, go_on)


async def test_a_replay_fresh_when_it_arrived_is_judged_stale_when_its_batch_is_taken(
    settings: Settings, keys: Any
) -> None:
    """Found by review. The inbox keeps a message's row only as long as the message is fresh
    (broker.pruning), so freshness must be judged when the delivery is claimed. A replay that
    arrives fresh while the consumer is held on an earlier batch, and is claimed after the
    original's row was pruned, must be refused as stale, not handled again."""
    quick = settings.with_(max_message_age=timedelta(seconds=3), max_clock_skew=timedelta(milliseconds=200))
    original = support.sealed_request(keys.load_identity("alice"), shares=100)
    async with held_issuer(quick, keys, [original]) as held:
        await held.arrived(quick, original)  # the replay: the same bytes, fresh, opened and passed
        held.clock.shift = timedelta(seconds=4)  # stale now, and the original past the horizon
        assert await prune_inbox(held.issuer.pool, timedelta(0)) >= 1  # the pruner's run after the horizon
        held.go_on.set()
        replay = await held.issuer.outcomes.wait(
            lambda s: s.message_id == str(original.envelope.message_id) and s.outcome is not Outcome.PROCESSED
        )
    assert replay.reason is Reason.STALE_MESSAGE and held.handled.count(100) == 1


async def test_a_delivery_whose_signer_is_revoked_while_it_waits_is_refused_when_its_batch_is_taken(
    settings: Settings, keys: KeyStore
) -> None:
    newcomer, _ = keys.enrol(default_participant(f"ahead-{uuid4().hex[:10]}", Role.INVESTOR))
    waiting = support.sealed_request(newcomer, shares=200)
    async with held_issuer(settings, keys, []) as held:
        await held.arrived(settings, waiting)  # opened on arrival, the certificate good then
        revocation.revoke(keys, newcomer.user_id, [newcomer.certificate.serial_number])
        held.go_on.set()
        refused = await held.issuer.outcomes.wait_for(waiting.envelope.message_id)
    assert (refused.outcome, refused.reason) == (Outcome.DEAD_LETTERED, Reason.CERTIFICATE_REVOKED)
    assert 200 not in held.handled


async def test_a_delivery_refused_on_arrival_for_what_no_moment_changes_is_not_opened_again(
    settings: Settings, keys: Any
) -> None:
    """A forged signature fails whenever it is checked: the refusal made on arrival stands, and
    the delivery is not verified a second time when its batch takes it (found by review: a
    flood of bad signatures cost two checks each)."""
    sealed = support.sealed_request(keys.load_identity("alice"), shares=300)
    forged = sealed.body.replace(b'"shares":', b'"shares": ', 1)
    async with held_issuer(settings, keys, []) as held:
        await held.arrived(settings, sealed, body=forged)
        opened = held.clock.calls
        held.go_on.set()
        refused = await held.issuer.outcomes.wait_for(sealed.envelope.message_id)
    assert (refused.outcome, refused.reason) == (Outcome.DEAD_LETTERED, Reason.SIGNATURE_INVALID)
    assert held.clock.calls == opened  # opened once, on arrival
    assert 300 not in held.handled
