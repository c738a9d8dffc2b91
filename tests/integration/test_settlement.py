"""The settlement agent against real RabbitMQ and PostgreSQL (seed 001 §2.5, Phase 2F).

Only the exchange may ask for a buyer's cover (issue 11; the DvP paths are in test_dvp.py), account
inquiries are answered to their owner only (R-001-43), and the ledger stays a balanced double
entry (R-001-13) — which the database enforces even against code that gets it wrong.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

import aio_pika
import asyncpg
import pytest
from aio_pika.abc import AbstractIncomingMessage

from agents.settlement import app, domain
from broker.consumer import Outcome
from broker.context import Context
from broker.db import agent_pool
from broker.envelope import Freshness, Sealed, open_delivery, seal
from broker.pki import KeyStore
from broker.runtime import AgentRuntime, execute
from broker.settings import Settings
from broker.topology import Names
from broker.trust import TrustStore
from schemas.catalogue import Message
from schemas.dvp import CoverRequest
from schemas.identity import SETTLEMENT_ID, Role
from schemas.sealed import ACCOUNT_INQUIRY_ACCOUNT
from schemas.settlement import AccountInquiry, AccountStatement
from tests import support

T = TypeVar("T")
UNBALANCED = "SELECT entry_id, sum(amount) FROM postings GROUP BY entry_id HAVING sum(amount) <> 0"


def cover(**changes: Any) -> CoverRequest:
    values: dict[str, Any] = dict(
        cover_id=uuid.uuid4(),
        user_id="bob",
        account=support.box("bob-cash"),
        client_order_id="b1",
        quantity=500,
        unit_price=Decimal(1200),
        amount=Decimal(600_000),
    )
    values.update(changes)
    return CoverRequest(**values)


def sealed(keys: KeyStore, sender: str, payload: Message, to: str = SETTLEMENT_ID) -> Sealed:
    return seal(keys.load_identity(sender), payload, recipient=to, now=datetime.now(UTC))


async def send(settings: Settings, runtime: AgentRuntime, message: Sealed) -> None:
    """Publish as its sender would and wait until the settlement agent has processed it."""
    await support.publish_sealed(settings, message)
    settled = await runtime.outcomes.wait_for(message.envelope.message_id)
    assert settled.outcome is Outcome.PROCESSED, settled


async def open_books(runtime: AgentRuntime, alice_deposit: Decimal = Decimal(1_000_000)) -> None:
    """alice-cash (alice) funded by a deposit, bob-cash (bob) empty."""
    await runtime.command(SETTLEMENT_ID, app.open_account("alice-cash", "alice"))
    await runtime.command(SETTLEMENT_ID, app.open_account("bob-cash", "bob"))
    await runtime.command(SETTLEMENT_ID, app.deposit("alice-cash", alice_deposit, "bank-0001"))


async def balances(runtime: AgentRuntime) -> dict[str, Decimal]:
    rows = await support.rows(
        runtime,
        "SELECT a.account_id, coalesce(sum(p.amount), 0) AS balance FROM accounts a "
        "LEFT JOIN postings p USING (account_id) GROUP BY a.account_id",
    )
    return {r["account_id"]: r["balance"] for r in rows}


async def assert_books_balance(runtime: AgentRuntime) -> None:
    assert await support.rows(runtime, UNBALANCED) == []
    total = await support.rows(runtime, "SELECT coalesce(sum(amount), 0) AS total FROM postings")
    assert total == [{"total": 0}]


async def emitted(runtime: AgentRuntime) -> list[tuple[str, str, dict[str, Any]]]:
    """What the agent put in its outbox: (routing key, type, payload), in order."""
    rows = await support.rows(
        runtime, "SELECT routing_key, message_type, body FROM outbox_messages ORDER BY seq, place"
    )
    return [(r["routing_key"], r["message_type"], json.loads(r["body"])["payload"]) for r in rows]


@asynccontextmanager
async def listening(settings: Settings, participant: str) -> AsyncIterator[str]:
    """A test queue receiving what is sent to ``participant``, whose agent is not running."""
    names = Names(settings.namespace)
    queue_name = f"{names.namespace}.test.{participant}"
    connection = await aio_pika.connect(settings.amqp_url)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(queue_name)
        await queue.bind(names.messages, routing_key=participant)
        yield queue_name
        await channel.queue_delete(queue_name)
    finally:
        await connection.close()


def opened_by(keys: KeyStore, delivery: AbstractIncomingMessage, participant: str, role: Role) -> Any:
    """The reply, verified as its recipient would: signature, certificate, sender, schema."""
    return open_delivery(
        delivery.body,
        delivery.headers,
        trust=TrustStore(keys.ca_certificate()),
        hosted={participant: role},
        freshness=Freshness(timedelta(hours=1), timedelta(seconds=30)),
        now=datetime.now(UTC),
    )


async def test_r_001_43_an_account_inquiry_by_its_owner_returns_the_balance_and_postings(
    settings: Settings, keys: KeyStore
) -> None:
    async with support.agents(settings, "settlement") as rt:
        settlement = rt[SETTLEMENT_ID]
        await open_books(settlement)
        await settlement.command(SETTLEMENT_ID, app.withdraw("alice-cash", Decimal(150_000), "payout-0001"))
        await settlement.command(SETTLEMENT_ID, app.withdraw("alice-cash", Decimal(600_000), "payout-0002"))

        async with listening(settings, "alice") as alice:  # only the answer arrives
            inquiry = sealed(keys, "alice", AccountInquiry(account=_sealed_account(keys, "alice-cash"), entries=10))
            await send(settings, settlement, inquiry)
            reply = opened_by(keys, await support.next_message(settings, alice), "alice", Role.INVESTOR)

    statement = reply.message
    assert isinstance(statement, AccountStatement)
    assert reply.envelope.sender == SETTLEMENT_ID and reply.envelope.recipient == "alice"
    assert statement.inquiry_id == inquiry.envelope.message_id
    assert (statement.found, statement.account, statement.currency) == (True, "alice-cash", "JPY")
    assert (statement.balance, statement.deposits, statement.withdrawals) == (
        Decimal(250_000),
        Decimal(1_000_000),
        Decimal(750_000),
    )
    assert [(p.kind, p.reference, p.amount, p.balance_after) for p in statement.postings] == [
        ("deposit", "bank-0001", Decimal(1_000_000), Decimal(1_000_000)),
        ("withdrawal", "payout-0001", Decimal(-150_000), Decimal(850_000)),
        ("withdrawal", "payout-0002", Decimal(-600_000), Decimal(250_000)),
    ]


async def test_r_001_43_an_inquiry_about_another_or_no_account_reveals_nothing(
    settings: Settings, keys: KeyStore
) -> None:
    async with support.agents(settings, "settlement") as rt, listening(settings, "alice") as alice:
        settlement = rt[SETTLEMENT_ID]
        await open_books(settlement)
        await settlement.command(SETTLEMENT_ID, app.deposit("bob-cash", Decimal(5_000), "bank-0002"))
        statements = []
        for account in ("bob-cash", "nobody-cash", "external:deposits"):
            await send(
                settings, settlement, sealed(keys, "alice", AccountInquiry(account=_sealed_account(keys, account)))
            )
            statements.append(opened_by(keys, await support.next_message(settings, alice), "alice", Role.INVESTOR))

    for reply, account in zip(statements, ("bob-cash", "nobody-cash", "external:deposits"), strict=True):
        assert reply.message == AccountStatement(inquiry_id=reply.message.inquiry_id, account=account, found=False)


async def test_r_001_05_a_cover_request_signed_by_an_investor_is_dead_lettered(
    settings: Settings, keys: KeyStore
) -> None:
    async with support.agents(settings, "settlement") as rt:
        settlement = rt[SETTLEMENT_ID]
        await open_books(settlement)
        # Issue 11: only the exchange may ask settlement to hold a buyer's cash.
        forged = sealed(keys, "alice", cover(user_id="alice", account=support.account_box(keys, "alice", "alice-cash")))
        await support.publish_sealed(settings, forged)
        letter = await support.dead_letter(settings, SETTLEMENT_ID)
        settled = await settlement.outcomes.wait_for(forged.envelope.message_id)

        assert settled.outcome is Outcome.DEAD_LETTERED
        assert letter.headers["x-kabuto-reason"] == "sender_not_authorized"
        assert await support.rows(settlement, "SELECT * FROM covers") == []
        assert await support.rows(settlement, "SELECT * FROM holds") == []
        assert await support.rows(settlement, "SELECT * FROM inbox") == []


class Operator:
    """Runs the settlement agent's commands as an operator would: database and keys, no broker."""

    def __init__(self, pool: asyncpg.Pool, keys: KeyStore) -> None:
        self.pool = pool
        self.identity = keys.load_identity(SETTLEMENT_ID)
        self.trust = TrustStore(keys.ca_certificate())

    async def __call__(self, action: Callable[[Context], Awaitable[T]]) -> T:
        return await execute(self.pool, self.identity, self.trust, action, datetime.now(UTC))

    async def ledger(self) -> tuple[Any, ...]:
        """Every row of the books, to show a refused command changed nothing."""
        rows = []
        for table in ("accounts", "entries", "postings", "outbox"):
            rows.append([tuple(r) for r in await self.pool.fetch(f"SELECT * FROM {table} ORDER BY 1, 2")])
        return tuple(rows)


@asynccontextmanager
async def operator(settings: Settings, keys: KeyStore) -> AsyncIterator[Operator]:
    async with agent_pool(settings.database_url, SETTLEMENT_ID) as pool:
        yield Operator(pool, keys)


async def test_r_001_13_deposits_and_withdrawals_post_balanced_entries(settings: Settings, keys: KeyStore) -> None:
    async with operator(settings, keys) as run:
        await run(app.open_account("carol-usd", "carol", "USD"))
        deposited = await run(app.deposit("carol-usd", Decimal("250.50"), "wire-7"))
        withdrawn = await run(app.withdraw("carol-usd", Decimal("50.25"), "payout-7"))
        statement = await run(app.statement("carol-usd"))
        external = await run(app.statement("external:deposits:usd"))
        unbalanced = await run.pool.fetch(UNBALANCED)

    assert (deposited.balance, withdrawn.balance) == (Decimal("250.50"), Decimal("200.25"))
    assert withdrawn.entry_id > deposited.entry_id
    assert (statement.account.balance, statement.deposits, statement.withdrawals) == (
        Decimal("200.25"),
        Decimal("250.50"),
        Decimal("50.25"),
    )
    assert external.account.kind is domain.AccountKind.EXTERNAL
    assert external.account.balance == Decimal("-200.25")
    assert unbalanced == []


@pytest.mark.parametrize(
    ("command", "error", "message"),
    [
        (app.open_account("alice-cash", "alice"), domain.AccountExists, "already open"),
        (app.open_account("external:mine", "alice"), domain.InvalidAccount, "settlement agent's own"),
        (app.deposit("nobody-cash", Decimal(1), "bank-9"), domain.UnknownAccount, "no customer account"),
        (app.deposit("external:deposits", Decimal(1), "bank-9"), domain.UnknownAccount, "no customer"),
        (app.deposit("alice-cash", Decimal(1), "bank-0001"), domain.DuplicateReference, "already posted"),
        (app.deposit("alice-cash", Decimal("0.5"), "bank-9"), domain.InvalidAmount, "whole number of yen"),
        (
            app.withdraw("alice-cash", Decimal(1_000_001), "payout-9"),
            domain.InsufficientFunds,
            "1,000,000 JPY available",
        ),
        (app.statement("nobody-cash"), domain.UnknownAccount, "no account nobody-cash"),
    ],
)
async def test_a_bad_operator_command_raises_a_clear_error_and_changes_nothing(
    settings: Settings,
    keys: KeyStore,
    command: Callable[[Context], Awaitable[object]],
    error: type,
    message: str,
) -> None:
    async with operator(settings, keys) as run:
        await run(app.open_account("alice-cash", "alice"))
        await run(app.deposit("alice-cash", Decimal(1_000_000), "bank-0001"))
        before = await run.ledger()
        with pytest.raises(error, match=message):
            await run(command)
        assert await run.ledger() == before


async def test_concurrent_withdrawals_never_overdraw_an_account(settings: Settings, keys: KeyStore) -> None:
    async with operator(settings, keys) as run:
        await run(app.open_account("alice-cash", "alice"))
        await run(app.deposit("alice-cash", Decimal(1_000_000), "bank-0001"))
        results = await asyncio.gather(
            *(run(app.withdraw("alice-cash", Decimal(600_000), f"payout-{i}")) for i in range(3)),
            return_exceptions=True,
        )
        statement = await run(app.statement("alice-cash"))

    assert sorted(type(r).__name__ for r in results) == ["InsufficientFunds", "InsufficientFunds", "Posted"]
    assert statement.account.balance == Decimal(400_000)


@pytest.mark.parametrize(
    ("postings", "refused"),
    [
        ([("alice-cash", Decimal(100))], "not balanced"),
        ([("alice-cash", Decimal(100)), ("external:deposits", Decimal(-50))], "not balanced"),
        ([], "not balanced"),
        ([("alice-cash", Decimal(-100)), ("external:deposits", Decimal(100))], "overdraws customer account"),
    ],
)
async def test_r_001_13_the_database_refuses_an_unbalanced_entry_even_if_code_tried_to_write_one(
    settings: Settings, keys: KeyStore, postings: list[tuple[str, Decimal]], refused: str
) -> None:
    async with operator(settings, keys) as run:
        await run(app.open_account("alice-cash", "alice"))
        async with run.pool.acquire() as connection:
            with pytest.raises(asyncpg.CheckViolationError, match=refused):
                async with connection.transaction():
                    entry_id = await connection.fetchval(
                        "INSERT INTO entries (kind, reference, description) "
                        "VALUES ('deposit', 'forged', 'by hand') RETURNING entry_id"
                    )
                    for account_id, amount in postings:
                        await connection.execute(
                            "INSERT INTO postings (entry_id, account_id, amount) VALUES ($1, $2, $3)",
                            entry_id,
                            account_id,
                            amount,
                        )
            assert await connection.fetch("SELECT * FROM entries") == []
            assert await connection.fetch("SELECT * FROM postings") == []


async def test_the_agent_can_add_to_the_ledger_but_never_rewrite_it(settings: Settings, keys: KeyStore) -> None:
    async with operator(settings, keys) as run:
        await run(app.open_account("alice-cash", "alice"))
        await run(app.deposit("alice-cash", Decimal(1_000), "bank-0001"))
        for sql in ("UPDATE postings SET amount = amount * 2", "DELETE FROM entries"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await run.pool.execute(sql)


def _sealed_account(keys: KeyStore, account: str) -> str:
    return support.sealed_to(keys, SETTLEMENT_ID, account, ACCOUNT_INQUIRY_ACCOUNT)
