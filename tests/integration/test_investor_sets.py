"""The investor agent keeps what settlement says in sets (stop 27; broker/set_based.py): one
``SetBased`` handler takes every type settlement tells an investor of — instruction statuses,
refused cancels, verified trade notices, mandates, notices of a cash leg — so a batch's run of them
is one call, whatever their types, and one statement per table.

Two investors are sent the same messages: alice's settled as one group-committed batch, bob's one
delivery at a time. Both leave the same rows, in the same order; a notice repeated for one trade
keeps the first, as one at a time. Against the real RabbitMQ and PostgreSQL, the agent opened but
not run (tests/integration/set_kit.py)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from agents.investor import app as investor_app
from agents.investor import instructions
from broker.envelope import Sealed, seal
from broker.pki import Identity
from broker.runtime import AgentDefinition, AgentRuntime
from broker.settings import Settings
from schemas.catalogue import Message
from schemas.dvp import (
    CancelRefused,
    DvpReason,
    InstructionStatus,
    MandateRecorded,
    MatchingStatus,
    ProcessingStatus,
    SettlementStatus,
    StatusFields,
    TradeNoticeVerified,
)
from schemas.identity import EXCHANGE_ID, SETTLEMENT_ID
from schemas.settlement import SettlementNotice, SettlementNoticeV1
from schemas.trading import OrderStatus, Side
from tests import support
from tests.integration import set_kit
from tests.integration.set_kit import outcomes

INBOX: set_kit.Queue = lambda names: names.inbox("investor")  # noqa: E731 — a queue by the namespace's names
TYPES = (InstructionStatus, CancelRefused, TradeNoticeVerified, MandateRecorded, SettlementNotice, SettlementNoticeV1)


def investor_definition(calls: list[list[str]]) -> AgentDefinition:
    real = investor_app.AGENT
    recorded = set_kit.recording(
        instructions.on_settlement_said, lambda messages: calls.append([type(m).__name__ for m in messages])
    )
    return AgentDefinition(real.id, real.role, {**real.handlers, **dict.fromkeys(TYPES, recorded)})


def status(trade: int, settlement: SettlementStatus, reason: DvpReason | None = None) -> InstructionStatus:
    fields = StatusFields(
        processing=ProcessingStatus.ACCEPTED,
        matching=MatchingStatus.MATCHED,
        settlement=settlement,
        reason=reason,
        quantity=100,
        amount=Decimal(100_000),
        settled_quantity=100 if settlement is SettlementStatus.SETTLED else 0,
        settled_amount=Decimal(100_000) if settlement is SettlementStatus.SETTLED else Decimal(0),
    )
    return InstructionStatus(instruction=trade, status=fields)


def notice(trade: int, amount: int, *, settled: bool = True) -> SettlementNotice:
    return SettlementNotice(
        matching_number=trade,
        side=Side.BUY,
        settled=settled,
        amount=Decimal(amount),
        currency="JPY",
        account="acct-1",
        failure=None,
        detail=None if settled else "short of cash",
    )


def said() -> list[Message]:
    """A mix as settlement sends it to one investor: statuses of two trades, their notices (the
    first trade's twice, the repeat with another amount), a refused cancel, a verified notice and
    a mandate — every type the set handler takes but the retired notice v1."""
    return [
        status(7001, SettlementStatus.PENDING),
        status(7002, SettlementStatus.PENDING),
        CancelRefused(instruction=7002, reason=DvpReason.NOT_CANCELLABLE, detail="reserved"),
        status(7001, SettlementStatus.SETTLED),
        notice(7001, 100_000),
        status(7002, SettlementStatus.FAILED, DvpReason.LACK_OF_CASH),
        notice(7002, 100_000, settled=False),
        notice(7001, 999),  # the same trade again: the first notice stays
        TradeNoticeVerified(matching_number=7001, verified=True),
        MandateRecorded(account="acct-1", agent="brokerage", active=True),
    ]


def sealed_to(settlement: Identity, user: str, messages: Sequence[Message]) -> list[Sealed]:
    return [seal(settlement, m, recipient=user, now=datetime.now(UTC)) for m in messages]


async def kept(rt: AgentRuntime, user: str) -> tuple[list[Any], list[Any]]:
    async with rt.pool.acquire() as connection:
        messages = await connection.fetch(
            "SELECT message_type, matching_number, body FROM settlement_messages WHERE user_id = $1 ORDER BY id", user
        )
        notices = await connection.fetch(
            """SELECT matching_number, settled, amount, currency, failure, detail FROM settlement_notices
               WHERE user_id = $1 ORDER BY matching_number""",
            user,
        )
    return [tuple(r) for r in messages], [tuple(r) for r in notices]


# The investor agent's own statements that keep what settlement said, and its claims: in a batch
# run all at once the kept rows ride in the claim (group_commit.ride, docs/performance.md stop 42).
KEPT_ALONE = (
    "WITH said AS (",
    "WITH noticed AS (",
    "INSERT INTO settlement_messages",
    "INSERT INTO settlement_notices",
)
CLAIMS = "WITH claimed AS ("


def census() -> tuple[float, float]:
    """The investor agent's statements that kept rows on their own, and its claims, so far."""
    return sum(support.census("investor", text) for text in KEPT_ALONE), support.census("investor", CLAIMS)


def since(before: tuple[float, float]) -> tuple[float, float]:
    after = census()
    return after[0] - before[0], after[1] - before[1]


async def test_what_settlement_says_is_one_set_whatever_its_types_and_kept_as_one_at_a_time(
    settings: Settings, keys: Any
) -> None:
    settlement = keys.load_identity(SETTLEMENT_ID)
    calls: list[list[str]] = []
    async with AgentRuntime(investor_definition(calls), settings.with_(statement_census=True)) as rt:
        before = census()
        batch = await set_kit.as_one_batch(settings, rt, sealed_to(settlement, "alice", said()), INBOX)
        in_batch, before = since(before), census()
        set_calls, calls[:] = list(calls), []
        alone = await set_kit.one_at_a_time(settings, rt, sealed_to(settlement, "bob", said()), INBOX)
        one_at_a_time = since(before)
        alice, bob = await kept(rt, "alice"), await kept(rt, "bob")
    assert outcomes(batch) == outcomes(alone) == ["processed"] * len(said())
    # the batch's rows rode in its one claim; one at a time, each delivery kept its row itself
    assert in_batch == (0, 1)
    assert one_at_a_time == (len(said()), len(said()))
    # one call for the whole batch, every type in it, in the batch's order
    assert set_calls == [[type(m).__name__ for m in said()]]
    assert calls == [[type(m).__name__] for m in said()]
    assert alice == bob
    messages, notices = alice
    assert [(t, n) for t, n, _ in messages] == [
        ("settlement.instruction.status", 7001),
        ("settlement.instruction.status", 7002),
        ("settlement.instruction.cancel_refused", 7002),
        ("settlement.instruction.status", 7001),
        ("settlement.instruction.status", 7002),
        ("settlement.trade_notice.verified", 7001),
        ("settlement.mandate.recorded", None),
    ]
    assert notices == [
        (7001, True, Decimal(100_000), "JPY", None, None),
        (7002, False, Decimal(100_000), "JPY", None, "short of cash"),
    ]


async def test_a_run_is_cut_by_a_delivery_of_another_handler(settings: Settings, keys: Any) -> None:
    """An exchange's order status between settlement's messages (another handler, called alone)
    cuts the run: runs stay consecutive, so nothing is handled out of its order."""
    settlement, exchange = keys.load_identity(SETTLEMENT_ID), keys.load_identity(EXCHANGE_ID)
    calls: list[list[str]] = []
    sealed = sealed_to(settlement, "alice", [status(7001, SettlementStatus.PENDING), notice(7001, 5)])
    sealed += sealed_to(exchange, "alice", [OrderStatus(acceptance_number=1, found=False)])
    sealed += sealed_to(settlement, "alice", [status(7002, SettlementStatus.PENDING)])
    async with AgentRuntime(investor_definition(calls), settings.with_(statement_census=True)) as rt:
        before = census()
        settled = await set_kit.as_one_batch(settings, rt, sealed, INBOX)
        statements = since(before)
        messages, notices = await kept(rt, "alice")
    assert outcomes(settled) == ["processed"] * 4
    assert calls == [["InstructionStatus", "SettlementNotice"], ["InstructionStatus"]]
    assert [n for _, n, _ in messages] == [7001, 7002]
    assert [n for n, *_ in notices] == [7001]
    # the two runs' messages joined in one rider (not two riders of the same CTEs, which would
    # fail the claim and run the batch again a delivery at a time): one claim, nothing alone
    assert statements == (0, 1)
