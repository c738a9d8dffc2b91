"""Commands that send a message wait for its answer and print it (issue 10): accepted, refused with
the reason, or timed out with what to check; ``--no-wait`` returns at once (tests/e2e/test_cli.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from uuid import UUID, uuid4

import pytest

from agents.investor import answer_repo
from agents.investor.lifecycle import hand_over
from broker.awaiting import Answer, Sent, Verdict, outcome
from broker.consumer import Outcome
from broker.context import Context
from broker.db import agent_pool
from broker.runtime import execute
from broker.settings import Settings
from schemas.dvp import CancelInstruction
from tests import support
from tests.e2e.test_cli import kabuto
from tests.integration.test_lifecycle_refusals import issued

ORDER = ("--account", "bob-cash", "--name", "Bob", "--address", "Tokyo")


async def test_an_order_waits_for_the_exchange_and_prints_accepted_or_refused(settings: Settings) -> None:
    async with support.agents(settings, "investor", "exchange", "brokerage", "settlement") as rt:
        await support.list_issue(rt["exchange"])
        await support.fund(rt["settlement"], "bob", Decimal(1_000_000))  # a buy is covered first (issue 11)
        code, out, err = await kabuto(
            settings, "investor", "order", "--as", "bob", "buy", "KBT", "100", "--limit", "1000", *ORDER, "--id", "b-1"
        )
        assert code == 0, err
        assert out.startswith("accepted: order b-1 accepted as number ") and "0 of 100 filled" in out
        code, out, _ = await kabuto(
            settings, "investor", "order", "--as", "bob", "buy", "NOPE", "100", "--limit", "1000", *ORDER, "--id", "b-2"
        )
        assert code == 1 and out.startswith("refused: order b-2: unknown_issue")
        code, out, _ = await kabuto(settings, "investor", "identify", "--as", "alice", "IM-NOBODY", "--pin", "1234")
        assert code == 1 and out.startswith("refused: unknown_customer: no customer IM-NOBODY")


async def test_with_no_agent_running_the_command_times_out_and_says_what_to_check(settings: Settings) -> None:
    code, out, _ = await kabuto(
        settings, "investor", "order", "--as", "bob", "buy", "KBT", "100", "--limit", "1000", *ORDER, "--timeout", "0.5"
    )
    assert code == 3
    assert out.startswith("timed out: message ") and "still in the investor outbox" in out
    assert "`kabuto run investor`" in out and "`kabuto status`" in out


async def test_a_message_the_recipient_dead_letters_is_refused_with_the_recipients_reason(
    settings: Settings,
) -> None:
    async with support.agents(settings, "investor", "exchange") as rt:
        identity = rt["investor"].identities["alice"]
        async with agent_pool(settings.database_url, "investor", max_size=1) as pool:

            async def misaddressed(ctx: Context) -> UUID:
                return ctx.emit(CancelInstruction(instruction=7), to="exchange").envelope.message_id

            message_id = await execute(pool, identity, rt["investor"].trust, misaddressed, datetime.now(UTC))
            dead = await rt["exchange"].outcomes.wait_for(message_id)  # so the wait below is not a race
            assert dead.outcome is Outcome.DEAD_LETTERED

            async def nothing(_: object) -> None:
                return None

            answer = await outcome(settings, pool, Sent("investor", message_id, "exchange", nothing), timeout=3)
    assert answer.verdict is Verdict.REFUSED
    assert answer.summary.startswith("exchange dead-lettered it: ")


async def test_an_answer_recorded_as_the_deadline_passes_is_the_answer(settings: Settings) -> None:
    """At the deadline the wait looks once more, rather than judge by its last poll, which may be
    a poll older: here the poll is longer than the wait, and the answer shows from the second look."""
    looks: list[int] = []

    async def second_look(_: object) -> Answer | None:
        looks.append(len(looks) + 1)
        return Answer(Verdict.ACCEPTED, "answered at the deadline") if len(looks) > 1 else None

    async with agent_pool(settings.database_url, "investor", max_size=1) as pool:
        sent = Sent("investor", uuid4(), "exchange", second_look)
        answer = await outcome(settings, pool, sent, timeout=0.5, poll=10)
    assert answer == Answer(Verdict.ACCEPTED, "answered at the deadline")
    assert looks == [1, 2]


async def test_a_timeout_of_the_probes_own_is_raised_not_taken_for_the_deadline(settings: Settings) -> None:
    async def stuck(_: object) -> Answer | None:
        raise TimeoutError("the probe's own")

    async with agent_pool(settings.database_url, "investor", max_size=1) as pool:
        with pytest.raises(TimeoutError, match="the probe's own"):
            await outcome(settings, pool, Sent("investor", uuid4(), "exchange", stuck), timeout=5)


async def test_a_hand_over_the_broker_cannot_route_is_refused_at_once(settings: Settings) -> None:
    """A hand-over is waited on by its hand-over id, which is its message's id: the wait finds its
    outbox row, parked as unroutable for a transferee with no queue, and says so at once (before,
    the wait looked for a row under an id no row had, and timed out saying the message was still
    in the outbox)."""
    async with support.agents(settings, "investor", "issuer", "exchange") as rt:
        await support.open_offering(rt["issuer"])
        cert_id = await issued(rt)
        handover_id = await rt["investor"].command("alice", hand_over(cert_id, "nobody-enrolled"))
        async with agent_pool(settings.database_url, "investor", max_size=1) as pool:
            sent = Sent("investor", handover_id, "nobody-enrolled", answer_repo.handover(handover_id))
            answer = await outcome(settings, pool, sent, timeout=20)
    assert answer.verdict is Verdict.REFUSED, answer.summary
    assert answer.summary.startswith("the broker could not route it"), answer.summary
