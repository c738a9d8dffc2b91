"""``--no-wait`` and ``--timeout`` for every ``kabuto`` command that sends a message, and how the
answer is printed: one place, so each sending command adds two lines (issue 10).

By default the command waits (``broker.awaiting.outcome``) and prints ``accepted: …``,
``refused: …`` or ``timed out: …`` with what to check, exiting 0, 1 or 3. With ``--no-wait`` it
prints that the message is queued and exits 0, for scripts that look at the outcome later.
"""

from __future__ import annotations

import argparse
from typing import Protocol

from broker.awaiting import Answer, Sent

DEFAULT_TIMEOUT = 30.0


class Answering(Protocol):
    async def answer(self, sent: Sent, timeout: float = DEFAULT_TIMEOUT) -> Answer: ...


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-wait", action="store_true", help="print that it is queued and exit at once")
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds to wait for the answer (default 30)"
    )


async def report(args: argparse.Namespace, client: Answering, sent: Sent, queued: str) -> int:
    """Print the answer to ``sent`` (or ``queued`` with --no-wait); return the exit code."""
    if args.no_wait:
        print(queued)
        return 0
    answer = await client.answer(sent, args.timeout)
    print(answer)
    return answer.verdict.exit_code
