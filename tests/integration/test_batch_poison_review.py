"""An independent review (stop 46): group commit attacked with poisoned, redelivered and replayed deliveries that share
one batch, and with a batch whose transaction is cut at the database (issue 8's promises).

Every batch here is made certain: a first request holds the consumer in its handler while the
batch is published and pushed into its prefetch buffer; released, the consumer takes them all at
once. The agent is the issuer with its real issuance handler, wrapped to note each call."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from agents.issuer.app import on_issuance_request
from broker.consumer import Outcome, Settled
from broker.context import Context
from broker.envelope import Sealed
from broker.errors import InputRejected, Reason, Transient
from broker.runtime import AgentDefinition, AgentRuntime, running
from broker.settings import Settings
from broker.topology import Names
from schemas.identity import Role
from schemas.issuance import CertificateIssuanceRequest
from tests import support

GATE = 100_000  # shares of the request that holds the consumer while the batch is pushed
REFUSED = 700  # refused by the wrapped handler, after the real handler wrote its rows
FAILING = 1300  # fails (Transient) by the wrapped handler, after the real handler wrote its rows


@dataclass
class Recorder:
    calls: list[tuple[int, int]] = field(default_factory=list)  # (txid, shares) per handler call
    held: asyncio.Event = field(default_factory=asyncio.Event)
    released: asyncio.Event = field(default_factory=asyncio.Event)
    # shares -> how many of the first calls fail (Transient); others always fail / refuse by marker
    fail_first: dict[int, int] = field(default_factory=dict)
    before: Callable[[CertificateIssuanceRequest, Context, int], Awaitable[None]] | None = None

    def definition(self) -> AgentDefinition:
        seen: Counter[int] = Counter()

        async def handler(request: CertificateIssuanceRequest, ctx: Context) -> None:
            if request.shares == GATE and not self.held.is_set():
                self.held.set()
                await self.released.wait()
            seen[request.shares] += 1
            self.calls.append((await ctx.connection.fetchval("SELECT txid_current()"), request.shares))
            if self.before is not None:
                await self.before(request, ctx, seen[request.shares])
            await on_issuance_request(request, ctx)
            if request.shares == REFUSED:
                raise InputRejected(Reason.SCHEMA_VIOLATION, "refused by the handler")
            if request.shares == FAILING:
                raise Transient("this delivery always fails")
            if seen[request.shares] <= self.fail_first.get(request.shares, 0):
                raise Transient(f"fails the first {self.fail_first[request.shares]} times")

        return AgentDefinition("issuer", Role.ISSUER, {CertificateIssuanceRequest: handler})


async def _queue_empty(settings: Settings) -> bool:
    return await support.pushed_to_its_consumer(settings, Names(settings.namespace).inbox("issuer"))


@asynccontextmanager
async def one_batch(
    settings: Settings, keys: Any, recorder: Recorder, **offer: Any
) -> AsyncIterator[tuple[AgentRuntime, Callable[[list[Sealed]], Awaitable[None]]]]:
    """The issuer running; ``send(sealed)`` publishes them all while the consumer is held, then
    releases it, so they are settled as one batch."""
    async with AgentRuntime(recorder.definition(), settings) as issuer:
        await support.open_offering(issuer, support.offering(**offer))
        async with running(issuer):
            gate = support.sealed_request(settings_keys(keys), shares=GATE)
            await support.publish_sealed(settings, gate)
            await support.eventually(recorder.held.is_set, timeout=20)

            async def send(batch: list[Sealed]) -> None:
                for sealed in batch:
                    await support.publish_sealed(settings, sealed)
                await support.eventually(lambda: _queue_empty(settings), timeout=20)
                recorder.released.set()

            yield issuer, send


def settings_keys(keys: Any) -> Any:
    return keys.load_identity("alice")


def request(keys: Any, shares: int, **changes: Any) -> Sealed:
    return support.sealed_request(keys.load_identity("alice"), shares=shares, **changes)


def by_id(outcomes: list[Settled]) -> dict[str, list[tuple[str, Any]]]:
    found: dict[str, list[tuple[str, Any]]] = {}
    for s in outcomes:
        found.setdefault(str(s.message_id), []).append((s.outcome.value, s.reason))
    return found


async def issued_in_order(issuer: AgentRuntime) -> list[int]:
    """The shares of each certificate, in the order of the certificate numbers drawn."""
    got = await support.rows(issuer, "SELECT shares FROM register WHERE shares <> $1 ORDER BY certificate_number", GATE)
    return [r["shares"] for r in got]


def batch_txids(recorder: Recorder, shares: set[int]) -> list[int]:
    return [tx for tx, s in recorder.calls if s in shares]


async def test_redeliveries_of_a_message_inside_its_own_batch_with_a_refused_one_apply_once_in_order(
    settings: Settings, keys: Any
) -> None:
    """[A, A again, refused, B, A again, C] in one batch: the ids are not distinct, so the batch is
    claimed first; the refusal runs it again a savepoint each. A, B and C are issued once each, in
    their order; the two copies of A are duplicates; the refused one is dead-lettered once."""
    recorder = Recorder()
    a, b, c, r = (request(keys, n) for n in (200, 300, 400, REFUSED))
    async with one_batch(settings, keys, recorder) as (issuer, send):
        await send([a, a, r, b, a, c])
        outcomes = await issuer.outcomes.wait_count(lambda s: True, 7, timeout=30)
        letter = await support.dead_letter(settings, "issuer")
        issued = await issued_in_order(issuer)
        inbox = {x["id"] for x in await support.rows(issuer, "SELECT message_id::text AS id FROM inbox")}
        sent = await support.rows(
            issuer, "SELECT message_type, count(*) AS n FROM outbox_messages GROUP BY message_type ORDER BY 1"
        )
    seen = by_id(outcomes[1:])  # the gate's outcome first
    # what the refused handler emitted before it was refused is gone with it: three certificates sent
    assert {r["message_type"]: r["n"] for r in sent}.get("certificate.issued") == 3, sent
    assert seen[str(a.envelope.message_id)] == [("processed", None), ("duplicate", None), ("duplicate", None)], seen
    assert seen[str(r.envelope.message_id)] == [("dead_lettered", Reason.SCHEMA_VIOLATION)]
    assert seen[str(b.envelope.message_id)] == [("processed", None)]
    assert seen[str(c.envelope.message_id)] == [("processed", None)]
    assert issued == [200, 300, 400]
    assert letter.headers["x-kabuto-reason"] == "schema_violation" and letter.body == r.body
    assert {str(x.envelope.message_id) for x in (a, b, c)} <= inbox
    assert str(r.envelope.message_id) not in inbox
    # the batch was one: its first pass stopped at the refusal, then all four ran again in one transaction
    calls = [(tx, s) for tx, s in recorder.calls if s != GATE]
    assert [s for _, s in calls] == [200, REFUSED, 200, REFUSED, 300, 400], calls
    assert calls[0][0] == calls[1][0] and len({tx for tx, _ in calls[2:]}) == 1, calls


async def test_a_replayed_id_and_a_redelivery_with_a_refusal_in_one_batch(settings: Settings, keys: Any) -> None:
    """[A, A' (A's id, other bytes), refused, A again, B]: A issued once, A' dead-lettered as a
    replay, the copy of A a duplicate, the refusal dead-lettered, B issued after A."""
    recorder = Recorder()
    alice = keys.load_identity("alice")
    a, b, r = (request(keys, n) for n in (200, 300, REFUSED))
    replay = support.replayed_request(alice, a, shares=900)
    async with one_batch(settings, keys, recorder) as (issuer, send):
        await send([a, replay, r, a, b])
        outcomes = await issuer.outcomes.wait_count(lambda s: True, 6, timeout=30)
        letters = [await support.dead_letter(settings, "issuer") for _ in range(2)]
        issued = await issued_in_order(issuer)
    seen = by_id(outcomes[1:])
    assert seen[str(a.envelope.message_id)] == [
        ("processed", None),
        ("dead_lettered", Reason.REPLAYED_MESSAGE_ID),
        ("duplicate", None),
    ], seen
    assert seen[str(r.envelope.message_id)] == [("dead_lettered", Reason.SCHEMA_VIOLATION)]
    assert seen[str(b.envelope.message_id)] == [("processed", None)]
    assert issued == [200, 300]
    assert sorted(str(x.headers["x-kabuto-reason"]) for x in letters) == ["replayed_message_id", "schema_violation"]
    replayed = next(x for x in letters if x.headers["x-kabuto-reason"] == "replayed_message_id")
    assert replayed.body == replay.body


async def test_a_bad_signature_an_unparsable_body_and_an_oversized_one_do_not_take_the_batch_down(
    settings: Settings, keys: Any
) -> None:
    """Three deliveries refused on opening, between good ones of the same holder and offering: each
    is dead-lettered with its own reason, the good ones issued once, in order."""
    recorder = Recorder()
    a, b, c, tampered_src = (request(keys, n) for n in (200, 300, 400, 500))
    body = bytearray(tampered_src.body)
    body[body.index(b'"shares"') + 10] ^= 0x01  # a digit of the shares changed: the signature no longer holds
    tampered = Sealed(tampered_src.envelope, bytes(body), tampered_src.headers)
    garbage_headers = dict(a.headers)
    names = Names(settings.namespace)
    async with one_batch(settings, keys, recorder) as (issuer, send):
        routing = "issuer"

        async def send_all() -> None:
            await support.publish_sealed(settings, a)
            await support.publish_sealed(settings, tampered)
            await support.publish(settings, b"{not json", garbage_headers, routing, "garbage-1")
            await support.publish(settings, b"x" * (settings.max_message_bytes + 10), garbage_headers, routing, "big-1")
            await support.publish_sealed(settings, b)
            await support.publish_sealed(settings, c)
            await support.eventually(lambda: _queue_empty(settings), timeout=20)
            recorder.released.set()

        del send
        await send_all()
        outcomes = await issuer.outcomes.wait_count(lambda s: True, 7, timeout=30)
        letters = [await support.dead_letter(settings, "issuer") for _ in range(3)]
        issued = await issued_in_order(issuer)
        assert await support.queue_depth(settings, names.dead_letters("issuer")) == 0
    assert issued == [200, 300, 400]
    kinds = Counter(s.outcome for s in outcomes[1:])
    assert kinds == {Outcome.PROCESSED: 3, Outcome.DEAD_LETTERED: 3}, outcomes
    reasons = sorted(str(x.headers["x-kabuto-reason"]) for x in letters)
    # the signature is checked before anything is parsed: unparsable bytes are refused for their signature
    assert reasons == ["message_too_large", "signature_invalid", "signature_invalid"], reasons
    assert len(letters[[str(x.headers["x-kabuto-reason"]) for x in letters].index("message_too_large")].body) <= 4096


async def test_order_survives_a_refusal_when_the_offering_runs_short(settings: Settings, keys: Any) -> None:
    """An offering of 600 shares: [300, refused, 400, 300]. One at a time, 300 is issued, 400 is
    refused for want of shares, the last 300 is issued. The savepoint pass must decide the same."""
    recorder = Recorder()
    first, r, too_many, last = (request(keys, n) for n in (300, REFUSED, 400, 300))
    async with one_batch(settings, keys, recorder, shares_offered=600) as (
        issuer,
        send,
    ):
        await send([first, r, too_many, last])
        await issuer.outcomes.wait_count(lambda s: True, 5, timeout=30)
        issued = await issued_in_order(issuer)
        decided = await support.rows(
            issuer,
            "SELECT request_id::text AS id, outcome, reason FROM issuance_requests WHERE shares <> $1",
            GATE,
        )
    outcome = {d["id"]: (d["outcome"], d["reason"]) for d in decided}
    assert issued == [300, 300]
    assert outcome[str(first.envelope.message_id)][0] == "issued"
    assert outcome[str(last.envelope.message_id)][0] == "issued"
    assert outcome[str(too_many.envelope.message_id)][0] == "refused"
    assert str(r.envelope.message_id) not in outcome


async def test_a_transient_failure_with_its_own_copy_in_the_batch_is_applied_once_after_retries(
    settings: Settings, keys: Any
) -> None:
    """[F, F again, A]: F fails twice then passes. Both copies of F fail in the batch and each goes
    to the delay queue; once F passes it is applied once, the other copy absorbed."""
    recorder = Recorder(fail_first={500: 2})
    f, a = request(keys, 500), request(keys, 200)
    async with one_batch(settings, keys, recorder) as (issuer, send):
        await send([f, f, a])
        await issuer.outcomes.wait(
            lambda s: s.message_id == str(f.envelope.message_id) and s.outcome is Outcome.PROCESSED, timeout=30
        )
        await issuer.outcomes.wait_for(a.envelope.message_id, timeout=30)
        # every copy of f comes to an end: processed or absorbed, none dead-lettered
        await support.eventually(lambda: _settled_copies(issuer, str(f.envelope.message_id)) >= 2, timeout=30)
        issued = await issued_in_order(issuer)
    assert sorted(issued) == [200, 500]
    assert issuer.outcomes.count(Outcome.DEAD_LETTERED) == 0


def _settled_copies(issuer: AgentRuntime, message_id: str) -> int:
    return sum(
        1
        for s in list(issuer.outcomes._recent)
        if s.message_id == message_id and s.outcome in (Outcome.PROCESSED, Outcome.DUPLICATE)
    )


async def test_the_batch_connection_terminated_by_a_handler_loses_and_doubles_nothing(
    settings: Settings, keys: Any
) -> None:
    """The third delivery's first run terminates the batch's backend (as an outage would, mid-batch):
    the batch falls back one at a time; every delivery is issued once, none retried nor dead-lettered."""

    async def terminate_once(request: CertificateIssuanceRequest, ctx: Context, call: int) -> None:
        if request.shares == 400 and call == 1:
            admin = await asyncpg.connect(settings.database_url)
            try:
                pid = await ctx.connection.fetchval("SELECT pg_backend_pid()")
                await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
            finally:
                await admin.close()

    recorder = Recorder(before=terminate_once)
    batch = [request(keys, n) for n in (200, 300, 400, 500, 600)]
    async with one_batch(settings, keys, recorder) as (issuer, send):
        await send(batch)
        outcomes = await issuer.outcomes.wait_count(lambda s: True, 6, timeout=60)
        issued = await issued_in_order(issuer)
    assert [s.outcome for s in outcomes[1:]] == [Outcome.PROCESSED] * 5, outcomes
    assert issued == [200, 300, 400, 500, 600]
    assert issuer.outcomes.count(Outcome.RETRY_SCHEDULED) == 0


async def _install_commit_trap(settings: Settings, body: str) -> None:
    """A deferred trigger on the issuer's inbox, run at COMMIT: ``body`` (plpgsql) decides."""
    admin = await asyncpg.connect(settings.database_url)
    try:
        await admin.execute(
            f"""
            CREATE SEQUENCE public.commit_trap_commits;
            CREATE FUNCTION public.commit_trap() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$
            BEGIN
              {body}
              RETURN NULL;
            END $$;
            CREATE CONSTRAINT TRIGGER commit_trap AFTER INSERT ON issuer.inbox
              DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION public.commit_trap();
            GRANT USAGE, SELECT ON SEQUENCE public.commit_trap_commits TO PUBLIC;
            GRANT EXECUTE ON FUNCTION public.commit_trap() TO PUBLIC;
            """
        )
    finally:
        await admin.close()


async def test_a_batch_whose_commit_is_cut_by_the_connection_loses_and_doubles_nothing(
    settings: Settings, keys: Any
) -> None:
    """The first commit after the gate's (the batch's) has its backend terminated at COMMIT, in a
    deferred trigger: nothing of the batch committed, nothing was acked; every delivery is then
    issued exactly once."""
    recorder = Recorder()
    batch = [request(keys, n) for n in (200, 300, 400, 500, 600)]
    async with one_batch(settings, keys, recorder) as (issuer, send):
        # armed now: the gate is held in its handler, not committed yet; its commit is the first
        # (its inbox row), the batch's the second run of the trap.
        await _install_commit_trap(
            settings,
            "IF (SELECT count(*) FROM issuer.inbox) > 3 AND nextval('public.commit_trap_commits') = 1 THEN "
            "PERFORM pg_terminate_backend(pg_backend_pid()); END IF;",
        )
        await send(batch)
        outcomes = await issuer.outcomes.wait_count(lambda s: True, 6, timeout=60)
        issued = await issued_in_order(issuer)
        fired = await support.rows(issuer, "SELECT last_value, is_called FROM public.commit_trap_commits")
    assert fired[0]["is_called"], "the trap never fired"
    assert [s.outcome for s in outcomes[1:]] == [Outcome.PROCESSED] * 5, outcomes
    assert issued == [200, 300, 400, 500, 600]


async def test_a_batch_whose_commit_fails_with_a_serialization_failure_is_applied_once(
    settings: Settings, keys: Any
) -> None:
    """COMMIT of the batch fails (40001, raised by a deferred trigger) the first two times: the
    batch falls back one at a time and the first delivery alone meets it again, is retried
    (not dead-lettered) and issued once; the rest are issued once."""
    recorder = Recorder()
    batch = [request(keys, n) for n in (200, 300, 400, 500)]
    async with one_batch(settings, keys, recorder) as (issuer, send):
        await _install_commit_trap(
            settings,
            "IF (SELECT count(*) FROM issuer.inbox) > 1 AND nextval('public.commit_trap_commits') <= 2 THEN "
            "RAISE EXCEPTION 'commit trap' USING ERRCODE = '40001'; END IF;",
        )
        await send(batch)
        for each in batch:
            await issuer.outcomes.wait(
                lambda s, i=str(each.envelope.message_id): (
                    s.message_id == i and s.outcome in (Outcome.PROCESSED, Outcome.DEAD_LETTERED)
                ),
                timeout=60,
            )
        issued = await issued_in_order(issuer)
    assert issuer.outcomes.count(Outcome.DEAD_LETTERED) == 0
    assert sorted(issued) == [200, 300, 400, 500]


async def test_a_handler_failing_like_an_outage_every_time_takes_nothing_else_down(
    settings: Settings, keys: Any
) -> None:
    """One delivery's handler always raises an OSError (as a lost connection would, but it is this
    message's doing): the batch falls back a delivery at a time; the others are issued once each, in
    order, and the poisoned one is retried and finally dead-lettered, never applied."""

    async def oserror(request: CertificateIssuanceRequest, ctx: Context, call: int) -> None:
        if request.shares == 900:
            raise FileNotFoundError("a file this message names does not exist")

    recorder = Recorder(before=oserror)
    batch = [request(keys, n) for n in (200, 300, 900, 400, 500)]
    async with one_batch(settings, keys, recorder) as (issuer, send):
        await send(batch)
        poisoned = await issuer.outcomes.wait(
            lambda s: s.message_id == str(batch[2].envelope.message_id) and s.outcome is Outcome.DEAD_LETTERED,
            timeout=60,
        )
        for each in (batch[0], batch[1], batch[3], batch[4]):
            done = await issuer.outcomes.wait_for(each.envelope.message_id, timeout=30)
            assert done.outcome is Outcome.PROCESSED
        issued = await issued_in_order(issuer)
    assert poisoned.reason is Reason.RETRIES_EXHAUSTED
    assert issued == [200, 300, 400, 500]


async def _large_batch_cut(settings: Settings, keys: Any) -> tuple[list[str], list[str], Counter[Outcome], int]:
    """150 requests of one holder and offering in one batch; the 11th is refused, so the batch runs
    again a savepoint each in transactions of 64; the 101st (in the second of them) has its backend
    terminated on its first run. The first 64 committed; the batch then falls back a delivery at a
    time. Every request but the refused one is issued exactly once, the certificates numbered in
    the order the requests were sent; the refused one is dead-lettered once."""

    async def terminate_once(request: CertificateIssuanceRequest, ctx: Context, call: int) -> None:
        if request.shares == 400 and call == 1:
            admin = await asyncpg.connect(settings.database_url)
            try:
                pid = await ctx.connection.fetchval("SELECT pg_backend_pid()")
                await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
            finally:
                await admin.close()

    big = dataclasses.replace(settings, batch_size=200, prefetch=300)
    recorder = Recorder(before=terminate_once)
    shares = [100] * 150
    shares[10], shares[100] = REFUSED, 400
    batch = [request(keys, n) for n in shares]
    async with one_batch(big, keys, recorder) as (issuer, send):
        await send(batch)
        outcomes = await issuer.outcomes.wait_count(lambda s: True, 151, timeout=120)
        order = await support.rows(
            issuer,
            """SELECT q.request_id::text AS id FROM issuance_requests q JOIN register r USING (cert_id)
               WHERE q.outcome = 'issued' AND r.shares <> $1 ORDER BY r.certificate_number""",
            GATE,
        )
        dead_depth = await support.queue_depth(big, Names(big.namespace).dead_letters("issuer"))
    expected = [str(s.envelope.message_id) for i, s in enumerate(batch) if i != 10]
    return [r["id"] for r in order], expected, Counter(s.outcome for s in outcomes[1:]), dead_depth


async def test_a_large_batch_cut_by_an_outage_in_its_second_savepoint_transaction_applies_each_once_in_order(
    settings: Settings, keys: Any
) -> None:
    issued, expected, labels, dead_depth = await _large_batch_cut(settings, keys)
    assert issued == expected
    assert labels[Outcome.DEAD_LETTERED] == 1 and dead_depth == 1, labels
    assert labels[Outcome.PROCESSED] + labels[Outcome.DUPLICATE] == 149, labels


async def test_a_large_batch_cut_in_its_second_savepoint_transaction_reports_what_it_processed_as_processed(
    settings: Settings, keys: Any
) -> None:
    """The same batch: the 63 requests its first savepoint transaction committed were processed by
    this batch, never delivered before; the fallback a delivery at a time finds them in the inbox and
    reports (logs ``duplicate_absorbed``, counts ``outcome="duplicate"``) them as redeliveries."""
    issued, expected, labels, _ = await _large_batch_cut(settings, keys)
    assert issued == expected
    assert labels[Outcome.PROCESSED] == 149, labels
