"""The inbox claimed after the handlers, with the outbox rows (issue 8, R-001-26: a message's
effects happen once).

A transaction claims its deliveries in the statement that stores what their handlers emitted
(``inbox.claim_storing``), one round trip fewer than a claim of its own before them. A delivery
the inbox holds already makes that statement roll the whole transaction back, and the delivery
is decided again with its claim first: nothing a handler did for a redelivery is kept, a
replayed id is refused, and a claim another transaction holds is waited for.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any
from uuid import UUID

import asyncpg

from agents.issuer.app import on_issuance_request
from broker import group_commit
from broker.bundle import Item, pack
from broker.consumer import Outcome
from broker.context import Context
from broker.db import Writes
from broker.envelope import Sealed, body_digest
from broker.errors import Reason
from broker.runtime import AgentDefinition, AgentRuntime, running
from broker.settings import Settings
from schemas.identity import Role
from schemas.issuance import CertificateIssuanceRequest
from tests import support


@dataclasses.dataclass
class Recording:
    """The real issuance handler, noting the transaction each call ran in and every statement
    its connection ran after the last call.

    Only that connection's: a logger stays on each connection a handler ran on, and the pool
    lends those to the relay too, whose statements would otherwise land among the batch's
    (seen once in `make test`: the relay's read between the claim and its commit)."""

    transactions: list[int] = dataclasses.field(default_factory=list)
    statements: list[str] = dataclasses.field(default_factory=list)
    idle: set[UUID] = dataclasses.field(default_factory=set)  # ids whose handler does nothing
    # What each handler has written with the batch's claim, if it can (by the request's shares).
    rider: Callable[[int], Writes] | None = None
    # Each connection a handler ran on, with its logger; the one the last call ran on.
    _loggers: list[tuple[Any, Callable[[Any], None]]] = dataclasses.field(default_factory=list)
    _current: Any = None

    def definition(self) -> AgentDefinition:
        async def handler(request: CertificateIssuanceRequest, ctx: Context) -> None:
            self.transactions.append(await ctx.connection.fetchval("SELECT txid_current()"))
            if ctx.envelope.message_id not in self.idle:
                await on_issuance_request(request, ctx)
            if self.rider is not None and not group_commit.ride(rider := self.rider(request.shares)):
                await rider.execute(ctx.connection)
            self.statements.clear()  # what follows the handler in its transaction
            self._current = ctx.connection
            ctx.connection.add_query_logger(self._logger(ctx.connection))

        return AgentDefinition("issuer", Role.ISSUER, {CertificateIssuanceRequest: handler})

    def _logger(self, connection: Any) -> Callable[[Any], None]:
        """The connection's one logger (asyncpg keeps them in a set), noting only while it is the
        last call's connection. The connections are kept, so that none's id is another's."""
        for known, logger in self._loggers:
            if known is connection:
                return logger

        def ran(record: Any) -> None:
            if self._current is connection:
                self.statements.append(" ".join(record.query.split()))

        self._loggers.append((connection, ran))
        return ran


def one_at_a_time(settings: Settings) -> Settings:
    return dataclasses.replace(settings, batch_size=1)


async def state(issuer: AgentRuntime) -> tuple[int, int, int]:
    """Register rows, outbox rows, inbox rows."""
    (row,) = await support.rows(
        issuer,
        """SELECT (SELECT count(*) FROM register) AS register, (SELECT count(*) FROM outbox) AS outbox,
                  (SELECT count(*) FROM inbox) AS inbox""",
    )
    return row["register"], row["outbox"], row["inbox"]


def outcome_of(sealed: Sealed, outcome: Outcome) -> Callable[[Any], bool]:
    return lambda s: s.message_id == str(sealed.envelope.message_id) and s.outcome is outcome


async def processed(settings: Settings, issuer: AgentRuntime, sealed: Sealed) -> None:
    await support.publish_sealed(settings, sealed)
    await issuer.outcomes.wait(outcome_of(sealed, Outcome.PROCESSED))


async def test_a_delivery_alone_claims_its_inbox_row_in_the_statement_that_stores_its_messages(
    settings: Settings, keys: Any
) -> None:
    recording = Recording()
    async with AgentRuntime(recording.definition(), one_at_a_time(settings)) as issuer, running(issuer):
        await support.open_offering(issuer)
        sealed = support.sealed_request(keys.load_identity("alice"))
        await processed(settings, issuer, sealed)
        assert await state(issuer) == (1, 3, 1)
    # After the handler: one statement claims and stores, then the commit; no claim of its own.
    claim = _before_commit(recording.statements)
    assert claim.startswith("WITH claimed AS (INSERT INTO inbox") and "INSERT INTO outbox" in claim
    assert not any(s.startswith("INSERT INTO inbox") for s in recording.statements)


async def test_a_redelivery_alone_is_handled_rolled_back_and_absorbed(settings: Settings, keys: Any) -> None:
    recording = Recording()
    async with AgentRuntime(recording.definition(), one_at_a_time(settings)) as issuer, running(issuer):
        await support.open_offering(issuer)
        sealed = support.sealed_request(keys.load_identity("alice"))
        await processed(settings, issuer, sealed)
        # Its handler finds nothing to refuse the second time (as one that finds its work done
        # would): only the claim can tell it is a redelivery.
        recording.idle.add(sealed.envelope.message_id)
        await support.publish_sealed(settings, sealed)  # as after a crash between the commit and the ack
        await issuer.outcomes.wait(outcome_of(sealed, Outcome.DUPLICATE))
        # The handler ran a second time, before the claim found the id; none of that was kept.
        assert len(recording.transactions) == 2
        assert await state(issuer) == (1, 3, 1)


async def test_a_replayed_id_alone_is_refused_and_what_its_handler_did_is_rolled_back(
    settings: Settings, keys: Any
) -> None:
    recording = Recording()
    alice = keys.load_identity("alice")
    async with AgentRuntime(recording.definition(), one_at_a_time(settings)) as issuer, running(issuer):
        await support.open_offering(issuer)
        first = support.sealed_request(alice, shares=100)
        await processed(settings, issuer, first)
        replay = support.replayed_request(alice, first, shares=900)
        await support.publish_sealed(settings, replay)
        refused = await issuer.outcomes.wait(outcome_of(replay, Outcome.DEAD_LETTERED))
        letter = await support.dead_letter(settings, "issuer")
        registered = await support.rows(issuer, "SELECT shares FROM register")
        assert await state(issuer) == (1, 3, 1)
    assert refused.reason is Reason.REPLAYED_MESSAGE_ID
    assert letter.headers["x-kabuto-reason"] == "replayed_message_id"
    assert len(recording.transactions) == 2  # the replay's handler ran, and was rolled back
    assert [r["shares"] for r in registered] == [100]


async def test_a_claim_another_transaction_holds_is_waited_for(settings: Settings, keys: Any) -> None:
    """The same delivery claimed by a transaction still under way (one that claims first: a batch
    run again, a savepoint): this one waits for it at its claim, then absorbs the delivery if it
    committed, and processes it if it rolled back."""
    recording = Recording()
    alice = keys.load_identity("alice")
    async with AgentRuntime(recording.definition(), one_at_a_time(settings)) as issuer, running(issuer):
        await support.open_offering(issuer)
        for commits, outcome in ((True, Outcome.DUPLICATE), (False, Outcome.PROCESSED)):
            sealed = support.sealed_request(alice, shares=100 if commits else 200)
            async with issuer.pool.acquire() as other:
                holding = other.transaction()
                await holding.start()
                await _claim(other, sealed)
                await support.publish_sealed(settings, sealed)
                # The consumer's session waits on the held claim: no outcome can come before the end.
                await support.eventually(lambda: _waiting_on_a_lock(settings), timeout=10)
                assert not issuer.outcomes.count(outcome)  # still waiting
                await (holding.commit() if commits else holding.rollback())
            await issuer.outcomes.wait(outcome_of(sealed, outcome))
        registered = await support.rows(issuer, "SELECT shares FROM register")
        inbox = await support.rows(issuer, "SELECT count(*) AS n FROM inbox")
    assert [r["shares"] for r in registered] == [200]
    assert inbox[0]["n"] == 2


async def test_a_batch_with_a_redelivery_runs_again_claimed_first_and_keeps_the_rest(
    settings: Settings, keys: Any
) -> None:
    """A bundle's items are one batch. The redelivered one's handler does nothing the second
    time (as a handler that finds its work done would), so the batch reaches its claim, which
    rolls everything back; the batch then runs again with its claim first, without it."""
    recording = Recording()
    alice = keys.load_identity("alice")
    async with AgentRuntime(recording.definition(), settings) as issuer, running(issuer):
        await support.open_offering(issuer)
        seen = support.sealed_request(alice, shares=100)
        await processed(settings, issuer, seen)
        recording.transactions.clear()
        recording.idle.add(seen.envelope.message_id)
        fresh = [support.sealed_request(alice, shares=n) for n in (200, 300)]
        batch = [fresh[0], seen, fresh[1]]
        await support.publish_bundle(settings, pack([_item(each) for each in batch]))
        expected = [Outcome.PROCESSED, Outcome.DUPLICATE, Outcome.PROCESSED]
        for each, outcome in zip(batch, expected, strict=True):
            await issuer.outcomes.wait(outcome_of(each, outcome))
        registered = await support.rows(issuer, "SELECT shares FROM register ORDER BY shares")
        register, _, inbox = await state(issuer)  # the batch's messages travel packed: fewer outbox rows
    assert (register, inbox) == (3, 3)
    # First all three in one transaction, rolled back by the claim; then the two new ones, claimed first.
    first, again = dict.fromkeys(recording.transactions)
    assert recording.transactions == [first] * 3 + [again] * 2
    assert [r["shares"] for r in registered] == [100, 200, 300]
    # Claimed first, the batch's last statement before its commit stores its messages alone.
    assert _before_commit(recording.statements).startswith("INSERT INTO outbox")


# A rider that writes nothing and checks what it read: $1 seen back as the check says. The
# riders of one batch name their CTEs apart (group_commit.ride).
def _rider(seen_back: int) -> Callable[[int], Writes]:
    def rider(shares: int) -> Writes:
        name = f"echoed_{shares}"
        return Writes(f"{name} AS (SELECT $1::int AS n)", (7,), check=f"(SELECT n FROM {name}) = {seen_back}")

    return rider


async def test_a_batchs_riders_are_written_and_checked_by_the_statement_that_claims_it(
    settings: Settings, keys: Any
) -> None:
    """Issue 8 (group_commit.ride): what a batch's handlers leave to write last goes in the claim's
    statement, one round trip fewer; where the batch is claimed first it is written on its own;
    and a rider whose check fails fails its batch, which then runs a delivery at a time."""
    recording = Recording(rider=_rider(7))
    alice = keys.load_identity("alice")
    async with AgentRuntime(recording.definition(), settings) as issuer, running(issuer):
        await support.open_offering(issuer)
        batch = [support.sealed_request(alice, shares=n) for n in (100, 200)]
        await support.publish_bundle(settings, pack([_item(each) for each in batch]))
        for each in batch:
            await issuer.outcomes.wait(outcome_of(each, Outcome.PROCESSED))
        claim = _before_commit(recording.statements)
        assert claim.startswith("WITH claimed AS (INSERT INTO inbox")
        assert "echoed_100 AS (SELECT $" in claim and "echoed_200 AS (SELECT $" in claim
        assert not any(s.startswith("WITH echoed") for s in recording.statements)

        recording.statements.clear()
        seen = batch[0]
        recording.idle.add(seen.envelope.message_id)
        again = [support.sealed_request(alice, shares=300), seen]
        await support.publish_bundle(settings, pack([_item(each) for each in again]))
        await issuer.outcomes.wait(outcome_of(again[0], Outcome.PROCESSED))
        # claimed first (a redelivery): the store, then the rider on its own, then the commit
        assert _before_commit(recording.statements).startswith("WITH echoed_300 AS (SELECT $1::int AS n) SELECT")

        recording.rider = _rider(8)  # a check that fails
        failing = support.sealed_request(alice, shares=400)
        await support.publish_bundle(settings, pack([_item(failing), _item(support.sealed_request(alice))]))
        await issuer.outcomes.wait(outcome_of(failing, Outcome.RETRY_SCHEDULED))
        registered = await support.rows(issuer, "SELECT shares FROM register ORDER BY shares")
    assert [r["shares"] for r in registered] == [100, 200, 300]  # nothing of the failing batch kept


def _before_commit(statements: list[str]) -> str:
    return statements[statements.index("COMMIT;") - 1]


def _item(sealed: Sealed) -> Item:
    return Item(str(sealed.envelope.message_id), sealed.envelope.type, sealed.headers, sealed.body)


async def _claim(connection: asyncpg.Connection, sealed: Sealed) -> None:
    """The inbox row the consumer would write for ``sealed`` (its digest as the consumer takes it)."""
    env = sealed.envelope
    await connection.execute(
        "INSERT INTO inbox (message_id, digest, message_type, sender) VALUES ($1, $2, $3, $4)",
        env.message_id,
        body_digest(sealed.body),
        env.type,
        env.sender,
    )


async def _waiting_on_a_lock(settings: Settings) -> bool:
    admin = await asyncpg.connect(settings.database_url)
    try:
        waiting = await admin.fetchval(
            """SELECT count(*) FROM pg_stat_activity
               WHERE datname = current_database() AND application_name = 'kabuto-issuer'
                 AND wait_event_type = 'Lock'"""
        )
    finally:
        await admin.close()
    return bool(waiting)
