"""``--no-wait`` and ``--timeout`` for every ``kabuto`` command that sends a message, and how the
answer is printed: one place, so each sending command adds two parameters (issue 10).

By default the command waits (``broker.awaiting.outcome``) and prints ``accepted: …``,
``refused: …`` or ``timed out: …`` with what to check, exiting 0, 1 or 3. With ``--no-wait`` it
prints that the message is queued and exits 0, for scripts that look at the outcome later.
"""

from __future__ import annotations

from typing import Annotated, Protocol

import typer

from broker.awaiting import Answer, Sent

DEFAULT_TIMEOUT = 30.0

NoWait = Annotated[bool, typer.Option("--no-wait", help="print that it is queued and exit at once")]
Timeout = Annotated[float, typer.Option(help="seconds to wait for the answer")]


class Answering(Protocol):
    async def answer(self, sent: Sent, timeout: float = DEFAULT_TIMEOUT) -> Answer: ...


async def report(client: Answering, sent: Sent, queued: str, *, no_wait: bool, timeout: float) -> int:
    """Print the answer to ``sent`` (or ``queued`` with --no-wait); return the exit code."""
    if no_wait:
        print(queued)
        return 0
    answer = await client.answer(sent, timeout)
    print(answer)
    return answer.verdict.exit_code
