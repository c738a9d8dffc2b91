"""Waiting for what became of a message a command sent: accepted, refused with a reason, or timed out
with what to check — written once, for every command that sends (issue 10).

A command writes its message to its agent's outbox and returns the message id; the running
agent's relay publishes it, the recipient answers, and the sending agent's handler records the
answer in its own tables. ``outcome`` follows that path from the sending side alone:

1. it reads a ``Probe`` — a query of the sending agent's own tables that says what the answer
   was, or None while there is none — until it answers or the deadline passes;
2. the outbox row says whether the message left: a row parked as unroutable is refused at once;
3. at the deadline, looked at once more, a message still in the outbox means no relay runs (the
   agent is not running); a published one is looked for in the recipient's dead letters, which
   refuse it with the reason the recipient gave; otherwise the recipient did not answer in time.

Polling the agent's tables (every ``poll`` seconds) is the only way to see another process's
commit without subscribing to the broker; the deadline bounds it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from uuid import UUID

import aio_pika
import aiormq
import asyncpg

from broker import ops
from broker.settings import Settings
from broker.topology import TopologyError


class Verdict(StrEnum):
    ACCEPTED = "accepted"
    REFUSED = "refused"
    TIMED_OUT = "timed out"

    @property
    def exit_code(self) -> int:
        """What the command exits with: 0 accepted, 1 refused, 3 timed out (2 is a usage error)."""
        return {Verdict.ACCEPTED: 0, Verdict.REFUSED: 1, Verdict.TIMED_OUT: 3}[self]


@dataclass(frozen=True, slots=True)
class Answer:
    verdict: Verdict
    summary: str

    def __str__(self) -> str:
        return f"{self.verdict.value}: {self.summary}"


Probe = Callable[[asyncpg.Connection], Awaitable[Answer | None]]

# Seconds the look at the deadline may take; past them the last poll's stands (a database that
# does not answer then is no reason to keep the command waiting).
LAST_LOOK = 1.0


@dataclass(frozen=True, slots=True)
class Sent:
    """A message a command wrote to ``agent``'s outbox for ``recipient``, and how its answer shows."""

    agent: str
    message_id: UUID
    recipient: str
    probe: Probe


@dataclass(frozen=True, slots=True)
class _Left:
    published: bool
    parked: str | None


async def outcome(settings: Settings, pool: asyncpg.Pool, sent: Sent, timeout: float, poll: float = 0.2) -> Answer:
    """What became of ``sent`` within ``timeout`` seconds, looked at every ``poll`` seconds and
    once more at the deadline (for at most ``LAST_LOOK`` seconds)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    answer, left = None, _Left(False, None)
    while (remaining := deadline - loop.time()) > 0:
        seen = await _look_within(remaining, pool, sent)
        if seen is None:
            break
        answer, left = seen
        if (known := _known(answer, left)) is not None:
            return known
        await asyncio.sleep(min(poll, max(deadline - loop.time(), 0)))  # see the module docstring
    # Once more as of the deadline: the last look may be a poll older, and the relay marks a row
    # published only after the broker confirmed it (a message the recipient had dead-lettered could
    # be said to be still in the outbox).
    if (seen := await _look_within(LAST_LOOK, pool, sent)) is not None:
        answer, left = seen
    if (known := _known(answer, left)) is not None:
        return known
    return await _timed_out(settings, sent, left, timeout)


async def _look_within(seconds: float, pool: asyncpg.Pool, sent: Sent) -> tuple[Answer | None, _Left] | None:
    """``_look``, or None if ``seconds`` pass first; a TimeoutError of the look's own is raised."""
    window = asyncio.timeout(seconds)
    try:
        async with window:
            return await _look(pool, sent)
    except TimeoutError:
        if window.expired():
            return None
        raise


def _known(answer: Answer | None, left: _Left) -> Answer | None:
    """The answer, or a refusal for a row the broker could not route; None while neither is known."""
    if answer is None and left.parked:
        return Answer(Verdict.REFUSED, f"the broker could not route it: {left.parked}")
    return answer


async def _look(pool: asyncpg.Pool, sent: Sent) -> tuple[Answer | None, _Left]:
    """The answer recorded so far, if any, and what became of the outbox row."""
    async with pool.acquire() as connection:
        return await sent.probe(connection), await _left(connection, sent.message_id)


async def _left(connection: asyncpg.Connection, message_id: UUID) -> _Left:
    row = await connection.fetchrow("SELECT published_at, error FROM outbox WHERE message_id = $1", message_id)
    if row is None:
        return _Left(False, None)
    return _Left(row["published_at"] is not None, row["error"])


async def _timed_out(settings: Settings, sent: Sent, left: _Left, timeout: float) -> Answer:
    if not left.published:
        return Answer(
            Verdict.TIMED_OUT,
            f"message {sent.message_id} is still in the {sent.agent} outbox after {timeout:g}s — is the "
            f"{sent.agent} agent running (`kabuto run {sent.agent}` or `kabuto run all`)? `kabuto status` shows "
            "its outbox; it will be sent when the agent starts",
        )
    dead = await _dead_letter(settings, sent)
    if dead is not None:
        return dead
    return Answer(
        Verdict.TIMED_OUT,
        f"message {sent.message_id} was published but {sent.recipient} has not answered in {timeout:g}s — "
        f"check `kabuto status` (does something consume {sent.recipient}'s inbox?) and "
        f"`kabuto dead-letters {sent.recipient}`; the answer is recorded when it comes",
    )


async def _dead_letter(settings: Settings, sent: Sent) -> Answer | None:
    try:
        letters = await ops.dead_letters(settings, sent.recipient)
    except (TopologyError, aiormq.exceptions.AMQPError, aio_pika.exceptions.AMQPError, OSError):
        return None  # the recipient's queues do not exist or the broker is away: say it timed out
    for letter in letters:
        if letter.message_id == str(sent.message_id):
            return Answer(Verdict.REFUSED, f"{sent.recipient} dead-lettered it: {letter.reason}: {letter.detail}")
    return None
