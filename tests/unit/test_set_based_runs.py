"""``broker.set_based.runs`` (docs/netting.md, step 1): how a group-committed batch is cut into the
runs its set-based handlers take in one call — in order, one handler per run (of one type or of
the several it takes), never two messages sharing a key, every other handler's delivery a run of
its own."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from uuid import UUID

import pytest

from broker.context import Context
from broker.set_based import SetBased, around, runs
from schemas.catalogue import Message
from schemas.dvp import (
    CertificateDelivery,
    DvpReason,
    SecuritiesCommitted,
    SecuritiesReservationRefused,
    SecuritiesReserved,
)

Item = tuple[str, Message]


async def _nothing(_: Sequence[tuple[Message, Context]]) -> None:
    return None


async def _one(_: Message, __: Context) -> None:
    return None


RESERVED = SetBased(_nothing, keys=lambda m: (m.instruction,))
COMMITTED = SetBased(_nothing, keys=lambda m: (m.instruction,))
HANDLERS: dict[type[Message], object] = {
    SecuritiesReserved: RESERVED,
    SecuritiesCommitted: COMMITTED,
    SecuritiesReservationRefused: _one,  # an ordinary handler
}


def reserved(label: str, instruction: int, attempt: int = 1) -> Item:
    return label, SecuritiesReserved(instruction=instruction, attempt=attempt, quantity=100)


def committed(label: str, instruction: int, attempt: int = 1) -> Item:
    delivery = CertificateDelivery(name_transfer_number=1, new_cert_id=UUID(int=instruction), register_version=1)
    return label, SecuritiesCommitted(instruction=instruction, attempt=attempt, quantity=100, delivery=delivery)


def refused(label: str, instruction: int) -> Item:
    message = SecuritiesReservationRefused(
        instruction=instruction, attempt=1, reason=DvpReason.LACK_OF_SECURITIES, retryable=True, detail="none"
    )
    return label, message


def cut(items: Sequence[Item], handlers: dict[type[Message], object] = HANDLERS) -> list[list[str]]:
    return [[label for label, _ in run] for run in runs(items, lambda item: item[1], handlers.__getitem__)]


def test_nothing_makes_no_run() -> None:
    assert cut([]) == []


def test_one_set_based_delivery_is_a_run_of_one() -> None:
    assert cut([reserved("a", 1)]) == [["a"]]


def test_consecutive_deliveries_of_one_set_based_type_on_distinct_keys_are_one_run_in_order() -> None:
    items = [reserved("a", 5), reserved("b", 2), reserved("c", 9), reserved("d", 1)]
    assert cut(items) == [["a", "b", "c", "d"]]


def test_a_change_of_type_cuts_the_run_even_between_two_set_based_handlers() -> None:
    items = [reserved("a", 1), reserved("b", 2), committed("c", 3), committed("d", 4), reserved("e", 5)]
    assert cut(items) == [["a", "b"], ["c", "d"], ["e"]]


def test_types_sharing_one_set_based_handler_make_one_run() -> None:
    """The cut is by the handler, not by the message's type (stop 27): a handler registered for
    several types is given consecutive deliveries of any of them, keys still apart."""
    handlers = {**HANDLERS, SecuritiesCommitted: RESERVED}
    items = [reserved("a", 1), committed("b", 2), reserved("c", 3), committed("d", 1), refused("e", 4)]
    assert cut(items, handlers) == [["a", "b", "c"], ["d"], ["e"]]


def test_a_key_seen_in_the_run_cuts_it_before_the_message_that_shares_it() -> None:
    items = [reserved("a", 1), reserved("b", 2), reserved("c", 1, attempt=2), reserved("d", 3), reserved("e", 2)]
    # c shares instruction 1 with a: a new run starts at c; e shares 2 with b, which is in the
    # run before c's, not in c's: e joins c's run.
    assert cut(items) == [["a", "b"], ["c", "d", "e"]]


def test_a_repeated_key_right_after_itself_makes_runs_of_one() -> None:
    items = [reserved("a", 7), reserved("b", 7), reserved("c", 7)]
    assert cut(items) == [["a"], ["b"], ["c"]]


def test_any_of_a_messages_keys_shared_cuts_the_run() -> None:
    """A message working on several rows (a buyer's and a seller's account, say) is kept apart
    from every message that works on any one of them."""
    pairs = SetBased(_nothing, keys=lambda m: (("instruction", m.instruction), ("attempt", m.attempt)))
    handlers = {**HANDLERS, SecuritiesReserved: pairs}
    items = [reserved("a", 1, attempt=10), reserved("b", 2, attempt=20), reserved("c", 3, attempt=10)]
    assert cut(items, handlers) == [["a", "b"], ["c"]]
    # the second key alone, the first differing, is enough
    items = [reserved("a", 1, attempt=10), reserved("b", 2, attempt=11), reserved("c", 2, attempt=12)]
    assert cut(items, handlers) == [["a", "b"], ["c"]]


def test_keys_are_compared_after_cutting_only_with_the_new_run() -> None:
    """After a cut the new run starts with only its first message's keys seen."""
    items = [reserved("a", 1), reserved("b", 1), reserved("c", 2), reserved("d", 1)]
    assert cut(items) == [["a"], ["b", "c"], ["d"]]


def test_an_ordinary_handlers_delivery_is_a_run_of_its_own_and_cuts_the_set_around_it() -> None:
    items = [
        reserved("a", 1),
        reserved("b", 2),
        refused("r1", 3),
        refused("r2", 4),
        reserved("c", 5),
        reserved("d", 1),  # instruction 1 was in the run before the ordinary handler's delivery
    ]
    assert cut(items) == [["a", "b"], ["r1"], ["r2"], ["c", "d"]]


def test_a_type_with_no_set_based_handler_is_never_grouped() -> None:
    handlers = {SecuritiesReserved: _one, SecuritiesCommitted: _one}
    items = [reserved("a", 1), reserved("b", 2), committed("c", 3)]
    assert cut(items, handlers) == [["a"], ["b"], ["c"]]


def test_every_item_comes_out_once_in_its_order_whatever_the_mix() -> None:
    items = [
        reserved("a", 1),
        committed("b", 1),
        committed("c", 2),
        refused("d", 2),
        reserved("e", 2),
        reserved("f", 3),
        reserved("g", 2),
        committed("h", 9),
    ]
    result = cut(items)
    assert [label for run in result for label in run] == [label for label, _ in items]
    assert result == [["a"], ["b", "c"], ["d"], ["e", "f"], ["g"], ["h"]]


def test_runs_take_any_item_shape_and_hand_back_the_items_themselves() -> None:
    """The consumer's items are its own records (``group_commit._Item``): runs hands back the
    very objects it was given."""

    class Record:
        def __init__(self, message: Message) -> None:
            self.message = message

    records = [Record(reserved("a", 1)[1]), Record(reserved("b", 2)[1])]
    (only,) = list(runs(records, lambda r: r.message, HANDLERS.__getitem__))
    assert only[0] is records[0] and only[1] is records[1]


@pytest.mark.parametrize("size", [2, 5, 40])
def test_a_long_run_of_distinct_keys_is_never_cut(size: int) -> None:
    items = [reserved(str(n), n) for n in range(1, size + 1)]
    assert cut(items) == [[str(n) for n in range(1, size + 1)]]


async def test_a_set_based_handler_called_alone_handles_a_set_of_one() -> None:
    seen: list[list[tuple[Message, object]]] = []

    async def record(items: Sequence[tuple[Message, Context]]) -> None:
        seen.append(list(items))

    handler = SetBased(record, keys=lambda m: (m.instruction,))
    message = SecuritiesReserved(instruction=4, attempt=1, quantity=1)
    ctx = object()
    await handler(message, ctx)  # type: ignore[arg-type]
    assert seen == [[(message, ctx)]]


# A handler applying reserved (step 0) before committed (step 1) may take both for one key in one
# set, in that order (stop 28: the investor agent's acceptance, executions, completions).
STEPPED = SetBased(
    _nothing, keys=lambda m: (m.instruction,), phase=lambda m: 1 if isinstance(m, SecuritiesCommitted) else 0
)
STEPS: dict[type[Message], object] = {SecuritiesReserved: STEPPED, SecuritiesCommitted: STEPPED}


def test_a_key_at_a_later_step_stays_in_the_run() -> None:
    items = [reserved("a", 1), reserved("b", 2), committed("c", 1), committed("d", 2)]
    assert cut(items, STEPS) == [["a", "b", "c", "d"]]


def test_a_key_at_the_same_step_again_cuts_the_run() -> None:
    items = [reserved("a", 1), committed("b", 1), committed("c", 1, attempt=2)]
    assert cut(items, STEPS) == [["a", "b"], ["c"]]


def test_a_key_at_an_earlier_step_than_it_was_held_at_cuts_the_run() -> None:
    """Applied step by step, a reserve after a commit of its key would be applied before it."""
    items = [committed("a", 1), reserved("b", 2), reserved("c", 1)]
    assert cut(items, STEPS) == [["a", "b"], ["c"]]


def test_the_latest_step_of_a_key_is_what_a_later_message_is_compared_with() -> None:
    items = [reserved("a", 1), committed("b", 1), reserved("c", 3), reserved("d", 1)]
    assert cut(items, STEPS) == [["a", "b", "c"], ["d"]]


def test_a_set_handler_wrapped_keeps_its_steps() -> None:
    async def wrap(call: Callable[[], Awaitable[None]], _: Sequence[Message], __: Context) -> None:
        await call()

    wrapped = around(STEPPED, wrap)
    assert isinstance(wrapped, SetBased) and wrapped.phase is STEPPED.phase
    items = [reserved("a", 1), committed("b", 1)]
    assert cut(items, dict.fromkeys(STEPS, wrapped)) == [["a", "b"]]
