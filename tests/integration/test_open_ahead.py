"""Deliveries opened as they arrive (issue 8): a delivery's signature is verified and its
envelope and payload checked while the consumer still waits on the batch before it, and its
batch settles what it opened to; an error other than a refusal is met again in its batch."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from agents.issuer.app import on_issuance_request
from broker.bundle import BUNDLE_TYPE, Item, pack
from broker.consumer import Outcome
from broker.context import Context
from broker.errors import InputRejected, Reason
from broker.group_commit import Deliveries
from broker.runtime import AgentDefinition, AgentRuntime, running
from broker.settings import Settings
from schemas.identity import Role
from schemas.issuance import CertificateIssuanceRequest
from tests import support


class _Arrived:
    """What aio-pika hands the consumer's callback; only its body and type are read on arrival."""

    def __init__(self, name: str, body: bytes = b"", type_: str | None = None) -> None:
        self.body, self.type, self.message_id = body, type_, name


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
