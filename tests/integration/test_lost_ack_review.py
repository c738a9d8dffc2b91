"""An independent review (stop 46): a batch whose acks are lost (the broker session closes while the batch is in its
transaction). The batch commits, the acks cannot be sent, the broker delivers the batch again to
the consumer's next session: the inbox must absorb every delivery, and a refusal whose dead
letter could not be published must still end up dead-lettered once."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from agents.issuer.app import on_issuance_request
from broker.consumer import Outcome
from broker.context import Context
from broker.errors import InputRejected, Reason
from broker.runtime import AgentDefinition, AgentRuntime, running
from broker.settings import Settings
from broker.topology import Names
from schemas.identity import Role
from schemas.issuance import CertificateIssuanceRequest
from tests import support

GATE, REFUSED, HOLD = 100_000, 700, 400


async def test_a_batch_committed_whose_acks_are_lost_is_absorbed_when_delivered_again(
    settings: Settings, keys: Any
) -> None:
    gate_held, gate_go = asyncio.Event(), asyncio.Event()
    hold_held, hold_go = asyncio.Event(), asyncio.Event()
    calls: Counter[int] = Counter()

    async def handler(request: CertificateIssuanceRequest, ctx: Context) -> None:
        if request.shares == GATE and not gate_held.is_set():
            gate_held.set()
            await gate_go.wait()
        calls[request.shares] += 1
        await on_issuance_request(request, ctx)
        if request.shares == HOLD and not hold_held.is_set():
            hold_held.set()
            await hold_go.wait()  # the broker session is closed meanwhile
        if request.shares == REFUSED:
            raise InputRejected(Reason.SCHEMA_VIOLATION, "refused by the handler")

    definition = AgentDefinition("issuer", Role.ISSUER, {CertificateIssuanceRequest: handler})
    alice = keys.load_identity("alice")
    batch = [support.sealed_request(alice, shares=n) for n in (200, 300, HOLD, REFUSED, 500)]
    inbox_queue = Names(settings.namespace).inbox("issuer")
    async with AgentRuntime(definition, settings) as issuer:
        await support.open_offering(issuer)
        async with running(issuer):
            await support.publish_sealed(settings, support.sealed_request(alice, shares=GATE))
            await support.eventually(gate_held.is_set, timeout=20)
            for sealed in batch:
                await support.publish_sealed(settings, sealed)

            await support.eventually(lambda: support.pushed_to_its_consumer(settings, inbox_queue), timeout=20)
            gate_go.set()
            await support.eventually(hold_held.is_set, timeout=20)
            session = await issuer.link.current()
            await session.channel.close()  # the acks of this batch can no longer be sent
            hold_go.set()
            ids = [str(s.envelope.message_id) for s in batch]
            # every good delivery is processed once and then absorbed once as delivered again
            for i in (0, 1, 2, 4):
                await issuer.outcomes.wait(
                    lambda s, m=ids[i]: s.message_id == m and s.outcome in (Outcome.PROCESSED, Outcome.DUPLICATE),
                    timeout=60,
                )
            refused = await issuer.outcomes.wait(
                lambda s: s.message_id == ids[3] and s.outcome is Outcome.DEAD_LETTERED, timeout=60
            )
            letter = await support.dead_letter(settings, "issuer", timeout=30)
            await support.eventually(lambda: support.pushed_to_its_consumer(settings, inbox_queue), timeout=20)
            registered = await support.rows(
                issuer, "SELECT shares FROM register WHERE shares <> $1 ORDER BY certificate_number", GATE
            )
            dead_depth = await support.queue_depth(settings, Names(settings.namespace).dead_letters("issuer"))
    assert [r["shares"] for r in registered] == [200, 300, HOLD, 500]
    assert refused.reason is Reason.SCHEMA_VIOLATION
    assert letter.headers["x-kabuto-reason"] == "schema_violation"
    assert dead_depth == 0, "the refusal was dead-lettered more than once"
