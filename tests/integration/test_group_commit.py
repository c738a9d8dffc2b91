"""Group commit (issue 8): deliveries waiting together commit together, and a poisoned one
among them is rolled back alone — dead-lettered or retried with its reason — while the rest
of its batch commits once; a redelivered batch changes nothing twice (R-001-26)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from agents.issuer.app import on_issuance_request
from broker.consumer import Outcome
from broker.context import Context
from broker.errors import InputRejected, Reason, Transient
from broker.group_commit import SAVEPOINTS_AT_MOST
from broker.runtime import AgentDefinition, AgentRuntime, running
from broker.settings import Settings
from broker.topology import Names
from schemas.identity import Role
from schemas.issuance import CertificateIssuanceRequest
from tests import support

POISON, REFUSED = 13, 7


def issuer_recording(transactions: list[int]) -> AgentDefinition:
    """The real issuance handler, noting each transaction it ran in; shares 13 fail, shares 7 are refused."""

    async def handler(request: CertificateIssuanceRequest, ctx: Context) -> None:
        transactions.append(await ctx.connection.fetchval("SELECT txid_current()"))
        await on_issuance_request(request, ctx)  # its writes are rolled back by a failure below
        if request.shares == POISON:
            raise Transient("this delivery always fails")
        if request.shares == REFUSED:
            raise InputRejected(Reason.SCHEMA_VIOLATION, "refused by the handler")

    return AgentDefinition("issuer", Role.ISSUER, {CertificateIssuanceRequest: handler})


async def publish_requests(settings: Settings, keys: Any, shares: list[int]) -> list[str]:
    ids = []
    for count in shares:
        sealed = support.sealed_request(keys.load_identity("alice"), shares=count)
        await support.publish_sealed(settings, sealed)
        ids.append(str(sealed.envelope.message_id))
    return ids


async def test_waiting_deliveries_commit_in_one_transaction_and_a_poisoned_one_alone_fails(
    settings: Settings, keys: Any
) -> None:
    transactions: list[int] = []
    async with AgentRuntime(issuer_recording(transactions), settings) as issuer:
        await support.open_offering(issuer)
        shares = [100, 200, POISON, 300, REFUSED, 400]
        ids = await publish_requests(settings, keys, shares)  # all queued before the consumer starts
        async with running(issuer):
            done = await issuer.outcomes.wait_count(lambda s: s.outcome is Outcome.PROCESSED, 4, timeout=20)
            refused = await issuer.outcomes.wait_for(ids[4])
            poisoned = await issuer.outcomes.wait(
                lambda s: s.message_id == ids[2] and s.outcome is Outcome.DEAD_LETTERED, timeout=20
            )
            letters = [await support.dead_letter(settings, "issuer") for _ in range(2)]
        registered = await support.rows(issuer, "SELECT shares FROM register ORDER BY shares")
        inbox = await support.rows(issuer, "SELECT message_id::text AS id FROM inbox")
    assert sorted(s.message_id for s in done) == sorted(ids[i] for i in (0, 1, 3, 5))
    # The first pass shared transactions (as many as the broker's pushes made batches), never one each.
    assert len(set(transactions[:6])) < 6
    assert [r["shares"] for r in registered] == [100, 200, 300, 400]
    assert {r["id"] for r in inbox} == {ids[i] for i in (0, 1, 3, 5)}
    assert refused.outcome is Outcome.DEAD_LETTERED and refused.reason is Reason.SCHEMA_VIOLATION
    assert poisoned.reason is Reason.RETRIES_EXHAUSTED
    assert issuer.outcomes.count(Outcome.RETRY_SCHEDULED) == len(settings.retry_delays_ms)
    reasons = sorted(str(letter.headers["x-kabuto-reason"]) for letter in letters)
    assert reasons == ["retries_exhausted", "schema_violation"]


async def test_a_batch_delivered_again_is_absorbed_by_the_inbox(settings: Settings, keys: Any) -> None:
    transactions: list[int] = []
    async with AgentRuntime(issuer_recording(transactions), settings) as issuer:
        await support.open_offering(issuer)
        sealed = [support.sealed_request(keys.load_identity("alice"), shares=n) for n in (100, 200, 300)]
        for each in (*sealed, *sealed):  # the same three, twice, as after a crash before the acks
            await support.publish_sealed(settings, each)
        async with running(issuer):
            outcomes = await issuer.outcomes.wait_count(lambda s: True, 6, timeout=20)
        registered = await support.rows(issuer, "SELECT shares FROM register ORDER BY shares")
    assert sorted(s.outcome.value for s in outcomes) == ["duplicate"] * 3 + ["processed"] * 3
    assert [r["shares"] for r in registered] == [100, 200, 300]


async def test_a_message_id_reused_for_other_content_inside_one_batch_is_refused_alone(
    settings: Settings, keys: Any
) -> None:
    """The batch's one-statement inbox claim sees a replay inside the batch itself: the first
    occurrence is processed, the other content under its id is dead-lettered as a replay, and
    the rest of the batch commits (the batch ran again, a savepoint each)."""
    transactions: list[int] = []
    alice = keys.load_identity("alice")
    async with AgentRuntime(issuer_recording(transactions), settings) as issuer:
        await support.open_offering(issuer)
        first = support.sealed_request(alice, shares=100)
        replay = support.replayed_request(alice, first, shares=900)
        after = support.sealed_request(alice, shares=300)
        for each in (first, replay, after):  # queued before the consumer starts: one batch
            await support.publish_sealed(settings, each)
        async with running(issuer):
            outcomes = await issuer.outcomes.wait_count(lambda s: True, 3, timeout=20)
            letter = await support.dead_letter(settings, "issuer")
        registered = await support.rows(issuer, "SELECT shares FROM register ORDER BY shares")
    assert sorted((s.outcome.value, s.reason) for s in outcomes) == [
        ("dead_lettered", Reason.REPLAYED_MESSAGE_ID),
        ("processed", None),
        ("processed", None),
    ]
    assert letter.body == replay.body and letter.headers["x-kabuto-reason"] == "replayed_message_id"
    assert [r["shares"] for r in registered] == [100, 300]
    # Not asserted: that the three shared a batch. The broker may push the first alone (seen here
    # about one run in four); the replay is then refused by the same claim against the committed row.


async def test_a_batch_whose_scope_fails_before_the_commit_runs_again_a_delivery_at_a_time(
    settings: Settings, keys: Any
) -> None:
    """An agent's batch scope (the exchange's warm books) may refuse the batch at its end: nothing
    of that pass commits, and every delivery is then applied once, each in its own savepoint."""
    transactions: list[int] = []
    refused: list[int] = []  # the transactions of the pass the scope refused

    @asynccontextmanager
    async def refusing_the_first(_: object, __: object) -> AsyncIterator[None]:
        start = len(transactions)
        yield
        if not refused:
            refused.extend(transactions[start:])
            raise RuntimeError("the batch's own check failed")

    recording = issuer_recording(transactions)
    definition = AgentDefinition("issuer", Role.ISSUER, recording.handlers, batch_scope=refusing_the_first)
    async with AgentRuntime(definition, settings) as issuer:
        await support.open_offering(issuer)
        shares = [100, 200, 300, 400, 500, 600]
        ids = await publish_requests(settings, keys, shares)  # queued before the consumer starts
        async with running(issuer):
            done = await issuer.outcomes.wait_count(lambda s: s.outcome is Outcome.PROCESSED, 6, timeout=20)
        registered = await support.rows(issuer, "SELECT shares FROM register ORDER BY shares")
    assert sorted(s.message_id for s in done) == sorted(ids)
    assert [r["shares"] for r in registered] == shares
    assert len(refused) > 1 and len(set(refused)) == 1  # the refused pass ran its batch in one transaction
    assert len(transactions) == len(shares) + len(refused)  # and each delivery of it ran once more, then committed
    start = transactions.index(refused[0]) + len(refused)
    again = transactions[start : start + len(refused)]
    assert len(set(again)) == 1 and again[0] != refused[0]  # again in one new transaction: a savepoint each


async def test_a_large_batch_run_again_a_savepoint_each_commits_at_most_64_savepoints_a_transaction(
    settings: Settings, keys: Any
) -> None:
    """A batch larger than the 64 subtransactions PostgreSQL keeps in shared memory, its last
    delivery refused: the batch runs again a savepoint each in transactions of at most
    ``SAVEPOINTS_AT_MOST`` deliveries, and every other delivery is processed once.

    A first request holds the consumer in its handler while the batch is published and pushed,
    so the next batch takes all of it: queued before the consumer started, the requests could
    arrive while the first batch was taken, and the refused one fall in a small batch (CI saw 14)."""
    calls: list[tuple[int, int]] = []  # (transaction, shares) of each handler call
    held, released = asyncio.Event(), asyncio.Event()

    async def handler(request: CertificateIssuanceRequest, ctx: Context) -> None:
        if not held.is_set():  # the first request, alone in its batch
            held.set()
            await released.wait()
        calls.append((await ctx.connection.fetchval("SELECT txid_current()"), request.shares))
        await on_issuance_request(request, ctx)
        if request.shares == REFUSED:
            raise InputRejected(Reason.SCHEMA_VIOLATION, "refused by the handler")

    definition = AgentDefinition("issuer", Role.ISSUER, {CertificateIssuanceRequest: handler})
    settings = dataclasses.replace(settings, batch_size=200, prefetch=300)
    async with AgentRuntime(definition, settings) as issuer:
        await support.open_offering(issuer)
        async with running(issuer):
            first = await publish_requests(settings, keys, [100])
            await support.eventually(held.is_set, timeout=20)
            ids = await publish_requests(settings, keys, [100 + n for n in range(149)] + [REFUSED])
            inbox = Names(settings.namespace).inbox("issuer")
            await support.eventually(lambda: support.pushed_to_its_consumer(settings, inbox), timeout=20)
            released.set()
            done = await issuer.outcomes.wait_count(lambda s: s.outcome is Outcome.PROCESSED, 150, timeout=60)
            refused = await issuer.outcomes.wait_for(ids[-1])
        claimed = {r["id"] for r in await support.rows(issuer, "SELECT message_id::text AS id FROM inbox")}
    ids = first + ids
    assert {s.message_id for s in done} == claimed == set(ids[:-1])
    assert refused.outcome is Outcome.DEAD_LETTERED and refused.reason is Reason.SCHEMA_VIOLATION
    once, again = [i for i, (_, shares) in enumerate(calls) if shares == REFUSED]
    batch = sum(1 for transaction, _ in calls if transaction == calls[once][0])
    per_transaction = Counter(transaction for transaction, _ in calls[once + 1 : again + 1])
    assert batch > SAVEPOINTS_AT_MOST, f"the refused delivery's batch held {batch}: not a large batch"
    assert sum(per_transaction.values()) == batch
    assert max(per_transaction.values()) <= SAVEPOINTS_AT_MOST, per_transaction
