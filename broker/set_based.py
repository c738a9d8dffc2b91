"""Set-based handlers: one handler call for several deliveries (docs/netting.md, step 1).

Under load a group-committed batch (``broker.group_commit``) holds many deliveries of the same
type one after the other — settlement's answers from the issuer, the issuer's reserves. Handled
one at a time, each reads and writes its own rows, a few statements each; handled as a set,
the handler reads every row the set needs in one statement and writes each table once.

A ``SetBased`` handler is registered like any handler, for one type or for several: a run is
what consecutive deliveries the same handler takes, whatever their types (the investor agent
keeps what settlement says — statuses, notices — in one run; stop 27). Called with one message (the
consumer's one-by-one path, and the savepoint each delivery gets when its batch is run again
after a refusal), it handles a set of one: there is one code path, not a fast one beside a
reference one. Its contract:

* each message comes with its own ``Context``, and what a message causes is emitted in its own
  context (its causation, its correlation), as a handler called alone would;
* the rows it leaves and the messages it emits are those the messages would have left and
  emitted handled one at a time, in order. The consumer helps by never giving it two messages
  that share a key (``keys``: the rows a message works on — an instruction, a CertID): a run of
  deliveries is cut before a key it has seen, so what one message wrote is there for the next
  of the same key, as it would be one by one. What a set handler does not do set-wise (a rare
  path) it does in the messages' order, after writing what the messages before it decided;
* it raises for the set as a handler raises for its message: the batch is then run again a
  savepoint each, so the message at fault is refused or retried alone. A set it finds it cannot
  take set-wise (a rare path that reaches into rows of another message of the set) it gives back
  with ``OneByOne``: the same rerun, a savepoint each, and nothing refused.

A handler of several types may take messages that work on the same rows in one set, when it
applies them in a fixed order of steps (``phase``: the investor agent keeps an order's acceptance
before its executions, and those before their completions, stop 28). A run is then cut before a
message whose key an earlier message of the run holds at the same step or a later one; so within
a set, the messages of one key come in the order of their steps, and the handler applies the
set step by step: the order they would have been applied in one at a time.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from broker.context import Context
from schemas.catalogue import Message

M = TypeVar("M", bound=Message)
T = TypeVar("T")
Item = tuple[M, Context]


@dataclass(frozen=True, slots=True)
class SetBased(Generic[M]):
    """A handler of a set of messages of the types it is registered for, each with its own context."""

    handle_set: Callable[[Sequence[tuple[M, Context]]], Awaitable[None]]
    # The rows a message works on: two messages sharing one are never in one set, unless
    # ``phase`` puts the later one at a later step than the earlier.
    keys: Callable[[M], tuple[Hashable, ...]]
    # The step at which the handler applies a message of the set (0 when it has one step).
    phase: Callable[[M], int] | None = None

    async def __call__(self, message: M, ctx: Context) -> None:
        await self.handle_set([(message, ctx)])

    def step_of(self, message: M) -> int:
        return 0 if self.phase is None else self.phase(message)


class OneByOne(Exception):
    """Raised by a set handler for a set it cannot apply set-wise: the batch runs again with a
    savepoint each delivery (broker.group_commit), each message a set of one."""


def runs(
    items: Sequence[T], message_of: Callable[[T], Message], handler_of: Callable[[type[Message]], object]
) -> Iterator[list[T]]:
    """``items`` cut into runs, in order: consecutive items taken by one ``SetBased`` handler —
    of one type, or of the several it is registered for —, no two sharing a key but at
    increasing steps (``SetBased.phase``); every other item is a run of its own."""
    run: list[T] = []
    seen: dict[Hashable, int] = {}  # a key of the run, and the latest step it was held at
    current: SetBased[Any] | None = None
    for item in items:
        message = message_of(item)
        handler = handler_of(type(message))
        if not isinstance(handler, SetBased):
            if run:
                yield run
            run, seen, current = [], {}, None
            yield [item]
            continue
        keys, step = handler.keys(message), handler.step_of(message)
        if run and (handler is not current or any(seen.get(key, -1) >= step for key in keys)):
            yield run
            run, seen = [], {}
        run.append(item)
        seen.update(dict.fromkeys(keys, step))
        current = handler
    if run:
        yield run


# What an agent does around each handler call (the exchange's warm books, its order rows held):
# given the call, the messages it handles (one, or a set's) and the first one's context.
Around = Callable[[Callable[[], Awaitable[None]], Sequence[Message], Context], Awaitable[None]]


def around(
    handler: Callable[[Any, Context], Awaitable[None]], wrap: Around
) -> Callable[[Any, Context], Awaitable[None]]:
    """``handler`` with ``wrap`` around each of its calls; a set-based handler stays set-based,
    ``wrap`` around each set (a wrapper that took one message would make every set a run of one)."""
    if isinstance(handler, SetBased):
        inner: SetBased[Any] = handler

        async def handle_set(items: Sequence[tuple[Any, Context]]) -> None:
            await wrap(lambda: inner.handle_set(items), [message for message, _ in items], items[0][1])

        return SetBased(handle_set, keys=inner.keys, phase=inner.phase)

    async def one(message: Any, ctx: Context) -> None:
        await wrap(lambda: handler(message, ctx), [message], ctx)

    one.__name__ = one.__qualname__ = getattr(handler, "__name__", "handler")
    return one
