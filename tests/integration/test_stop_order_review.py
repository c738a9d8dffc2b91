"""An independent review (stop 46): ordering per key across a stop of the consumer.

When the consumer stops, the deliveries the broker had pushed ahead (prefetch) but no batch had
taken are handed back (nack, requeue: ``Deliveries.__aexit__``). Deliveries still waiting in the
queue behind them must not overtake them: the next consumer must apply every request of one
holder and one offering in the order it was sent."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from agents.issuer.app import on_issuance_request
from broker.context import Context
from broker.runtime import AgentDefinition, AgentRuntime, running
from broker.settings import Settings
from broker.topology import Names
from schemas.identity import Role
from schemas.issuance import CertificateIssuanceRequest
from tests import support

GATE = 5_000


async def test_deliveries_handed_back_at_a_stop_are_not_overtaken_by_those_behind_them(
    settings: Settings, keys: Any
) -> None:
    held, released = asyncio.Event(), asyncio.Event()
    order: list[int] = []

    async def handler(request: CertificateIssuanceRequest, ctx: Context) -> None:
        if request.shares == GATE and not held.is_set():
            held.set()
            await released.wait()
        order.append(request.shares)
        await on_issuance_request(request, ctx)

    definition = AgentDefinition("issuer", Role.ISSUER, {CertificateIssuanceRequest: handler})
    small = dataclasses.replace(settings, prefetch=4, batch_size=4)
    alice = keys.load_identity("alice")
    shares = [100 * k for k in range(1, 13)]
    inbox = Names(small.namespace).inbox("issuer")
    async with AgentRuntime(definition, small) as issuer:
        await support.open_offering(issuer)
        task = asyncio.create_task(issuer.run())
        await issuer.ready.wait()
        await support.publish_sealed(small, support.sealed_request(alice, shares=GATE))
        await support.eventually(held.is_set, timeout=20)
        for n in shares:
            await support.publish_sealed(small, support.sealed_request(alice, shares=n))

        async def rest_waiting() -> bool:  # three pushed ahead (prefetch 4 with the gate), nine in the queue
            return await support.queue_depth(small, inbox) == len(shares) - 3

        await support.eventually(rest_waiting, timeout=20)
        task.cancel()  # the stop: the gate's batch is let finish, the three pushed ahead handed back
        released.set()
        await asyncio.wait({task})

    async def all_back() -> bool:
        # The broker applies a hand-back after the stop returns: a consumer started before that
        # (80 ms later, in one suite run) was given the first delivery behind them (400) first. A
        # restart is a process start, seconds, not this test's milliseconds: it restarts once the
        # twelve are ready again, and proves they were handed back in their order.
        return await support.queue_figures(small, inbox) == (len(shares), 0)

    await support.eventually(all_back, timeout=20)
    async with AgentRuntime(definition, small) as again, running(again):
        # ``order`` grows as each handler starts; its batch's rows are committed after the last one.
        numbered: list[Any] = []

        async def all_numbered() -> bool:
            numbered[:] = await support.rows(
                again, "SELECT shares FROM register WHERE shares <> $1 ORDER BY certificate_number", GATE
            )
            return len(numbered) >= len(shares)  # more would be a defect the asserts below show

        await support.eventually(all_numbered, timeout=30)
    assert order[1:] == shares, order
    assert [r["shares"] for r in numbered] == shares
