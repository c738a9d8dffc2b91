"""A kill -9 of the custody process in the middle of the securities leg (docs/dvp.md steps 5
and 7; issue 11 §3): after the restart every reservation is whole or absent, a commit moves
the shares exactly once, and the shares are conserved."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from agents.custody import books, repo
from agents.custody.domain import Balances
from broker import ops
from broker.context import Context
from broker.runtime import run_as
from broker.settings import Settings
from broker.topology import Names
from schemas.dvp import BookEntryLeg, SecuritiesCommit, SecuritiesRelease, SecuritiesReserve
from tests import support
from tests.custody_support import send_as
from tests.e2e.test_processes import kabuto_run


async def setup_books(ctx: Context) -> None:
    for account, client in (("alice-sk", "alice"), ("bob-sk", "bob")):
        await repo.open_account(ctx.connection, account, client, "custody")
    alice = await repo.account(ctx.connection, "alice-sk")
    assert alice is not None
    await books.apply(ctx, alice, "KBT", Balances(available=500), "deposit", "crash-test")


async def positions(settings: Settings) -> dict[str, tuple[int, int, int, int]]:
    async def read(ctx: Context) -> dict[str, tuple[int, int, int, int]]:
        rows = await ctx.connection.fetch("SELECT * FROM positions ORDER BY account_id")
        return {
            r["account_id"]: (r["available"], r["locked"], r["pending_delivery"], r["pending_receipt"]) for r in rows
        }

    return await run_as(settings, "custody", "custody", read)


_ANSWERS: dict[str, support.QueueReader] = {}


async def reply(settings: Settings) -> dict[str, Any]:
    """settlement's next answer from custody (its answers queue): {"type": …, "message_id": …, **payload}."""
    queue = Names(settings.namespace).answers("settlement")
    message = await _ANSWERS.setdefault(queue, support.QueueReader(settings, queue)).next(timeout=30)
    envelope = json.loads(message.body)
    return {"type": envelope["type"], "message_id": envelope["message_id"], **envelope["payload"]}


async def distinct_replies(settings: Settings, count: int, before: set[str]) -> list[dict[str, Any]]:
    """The next ``count`` answers not in ``before`` (message ids), each message once: an answer
    published before a kill -9 whose outbox row was not yet marked published is published again
    after the restart with the same message id (at least once to the broker; the receiver's inbox
    absorbs the copy). Since stop 30 a row is marked with the relay's next read, so that may be
    an answer the test read before the kill."""
    seen: dict[str, dict[str, Any]] = {}
    while len(seen) < count:
        answer = await reply(settings)
        if answer["message_id"] not in before:
            seen.setdefault(answer["message_id"], answer)
    return list(seen.values())


def reserve(instruction: int, attempt: int = 1) -> SecuritiesReserve:
    return SecuritiesReserve(
        instruction=instruction,
        attempt=attempt,
        issue_code="KBT",
        quantity=200,
        deliverer="alice",
        receiver="bob",
        leg=BookEntryLeg(agent="custody", deliverer_account="alice-sk", receiver_account="bob-sk"),
    )


async def test_a_killed_custody_leaves_each_leg_whole_or_absent(settings: Settings) -> None:
    async with support.agents(settings, "settlement"):
        pass  # settlement's queue exists; nothing consumes it, so custody's answers wait there for the test
    await run_as(settings, "custody", "custody", setup_books)
    started = datetime.now(UTC)

    async with kabuto_run(settings, "custody") as process:
        assert await ops.health(settings, "custody") == []  # a consumer with handlers answers
        await send_as(settings, "settlement", reserve(1))
        first = await reply(settings)
        assert first["type"] == "securities.reserved"
        await send_as(settings, "settlement", SecuritiesCommit(instruction=1, attempt=1))
        await send_as(settings, "settlement", reserve(2))
        process.kill()  # SIGKILL, somewhere in the commit of 1 or the reserve of 2
        await process.wait()
    middle = await positions(settings)
    assert sum(p[0] + p[1] + p[2] for p in middle.values()) == 500  # held shares conserved at any point

    async with kabuto_run(settings, "custody"):
        answers = await distinct_replies(settings, 2, {first["message_id"]})
        assert sorted(a["type"] for a in answers) == ["securities.committed", "securities.reserved"]
        assert await positions(settings) == {"alice-sk": (100, 0, 200, 0), "bob-sk": (200, 0, 0, 200)}
        await send_as(settings, "settlement", SecuritiesRelease(instruction=2, attempt=1))
        await send_as(settings, "settlement", SecuritiesCommit(instruction=1, attempt=1))  # again: same answer
        # The answers may come again first: the kill can land before their rows were marked.
        (again,) = await distinct_replies(settings, 1, {first["message_id"], *(a["message_id"] for a in answers)})
        assert again["type"] == "securities.committed" and again["instruction"] == 1

    assert await positions(settings) == {"alice-sk": (300, 0, 0, 0), "bob-sk": (200, 0, 0, 0)}

    async def moves(ctx: Context) -> list[str]:
        rows = await ctx.connection.fetch(
            "SELECT cause FROM position_changes WHERE changed_at >= $1 ORDER BY client, sequence", started
        )
        return [r["cause"] for r in rows]

    causes = await run_as(settings, "custody", "custody", moves)
    assert causes.count("delivered") == 1 and causes.count("received") == 1  # the commit moved once
