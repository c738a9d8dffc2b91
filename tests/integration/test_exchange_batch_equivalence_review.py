"""An independent review (stop 46): the exchange's batch (warm books, acceptance views read ahead, held rows) with a
poisoned or redelivered delivery inside it must decide, write and send what the same deliveries
decide one at a time.

The random order sequences of test_batch_equivalence_random.py are queued while the exchange is
stopped; then, in one environment, settled one delivery at a time and, in another, as one batch.
Into both the same trouble is put:

* ``refused``: the exchange's own order handler runs for one order in the middle, then the
  delivery is refused (InputRejected) — its writes, its book changes and its answers must vanish,
  the batch runs again a savepoint each;
* ``failing``: likewise with a Transient failure (retried later; here the retry is not consumed);
* ``redelivered``: one delivery of the sequence is handed to the batch twice (as after a lost ack
  a broker may): the second copy must change nothing;
* ``redelivered_late``: an earlier batch committed the first half; the whole sequence then comes
  as one batch (its first half redelivered): the optimistic claim meets the redeliveries after the
  handlers ran, rolls back and runs again claimed first."""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import aio_pika
import pytest

from agents.registry import AGENTS
from broker import group_commit
from broker.consumer import Outcome as Done
from broker.context import Context
from broker.errors import InputRejected, Reason, Transient
from broker.pki import KeyStore
from broker.runtime import AgentDefinition, AgentRuntime, running
from broker.settings import Settings
from broker.topology import Names
from kabuto_client import Participant
from schemas.trading import SubmitOrder
from tests import support
from tests.conftest import ReadyDatabases
from tests.integration.test_batch_equivalence_random import (
    COVER,
    NAMES,
    Step,
    another_environment,
    differences,
    message,
    sequence,
    written,
)
from tests.integration.test_read_ahead import covered


def exchange_with(poison: str | None, kind: str) -> AgentDefinition:
    """The exchange, its SubmitOrder handler refusing or failing ``poison``'s order after it ran."""
    definition = AGENTS["exchange"]
    real = definition.handlers[SubmitOrder]

    async def handler(request: SubmitOrder, ctx: Context) -> None:
        await real(request, ctx)
        if request.client_order_id == poison:
            if kind == "refused":
                raise InputRejected(Reason.SCHEMA_VIOLATION, "refused after the handler ran")
            raise Transient("failed after the handler ran")

    if poison is None:
        return definition
    handlers = {**definition.handlers, SubmitOrder: handler}
    return dataclasses.replace(definition, handlers=handlers)


async def take(settings: Settings, count: int) -> tuple[aio_pika.abc.AbstractConnection, list[Any]]:
    connection = await aio_pika.connect(settings.amqp_url)
    channel = await connection.channel()
    queue = await channel.declare_queue(Names(settings.namespace).inbox("exchange"), passive=True)
    return connection, [await queue.get(no_ack=False, timeout=5) for _ in range(count)]


async def play(
    settings: Settings, traders: dict[str, Participant], steps: list[Step], mode: str, one_batch: bool, pick: int
) -> dict[str, Any]:
    settings = dataclasses.replace(settings, batch_size=1)
    poison = steps[pick].coid if mode in ("refused", "failing") else None
    definition = exchange_with(poison, mode)
    outcomes: list[Done] = []
    async with AgentRuntime(definition, settings) as exchange, support.agents(settings, "settlement") as rt:
        async with running(exchange):
            await covered(exchange, rt["settlement"], traders, {n: COVER for n in NAMES}, funded=NAMES)
        for step in steps:
            await traders[step.who].send(message(traders[step.who], step), to="exchange")
        last = (await support.rows(exchange, "SELECT coalesce(max(seq), 0) AS seq FROM outbox"))[0]["seq"]
        connection, deliveries = await take(settings, len(steps))
        try:
            batches: list[Sequence[Any]]
            if mode == "redelivered":
                twice = [*deliveries[: pick + 1], deliveries[pick], *deliveries[pick + 1 :]]
                batches = [twice] if one_batch else [[d] for d in twice]
            elif mode == "redelivered_late":
                half = len(deliveries) // 2
                if one_batch:
                    batches = [deliveries[:half], deliveries]
                else:
                    batches = [[d] for d in deliveries[:half]] + [[d] for d in deliveries]
            else:
                batches = [deliveries] if one_batch else [[d] for d in deliveries]
            for batch in batches:
                settled = await group_commit.settle_batch(exchange.consumer, batch)
                outcomes.extend(s.outcome for s in settled)
            await group_commit.ack(deliveries)
        finally:
            await connection.close()
        orders, matches, to = await written(exchange, last)
        inbox = await support.rows(exchange, "SELECT count(*) AS n FROM inbox")
    return {
        "to_normal": {queue: [(kind, _decimals(body)) for kind, body in told] for queue, told in to.items()},
        "orders": [
            (o["client_order_id"], o["status"], o["quantity"], o["remaining"], o["cancel_reason"]) for o in orders
        ],
        "matches": [(m["buy"], m["sell"], m["shares"], m["price"], m["status"], m["requested"]) for m in matches],
        "to": to,
        "outcomes": sorted(o.value for o in outcomes),
        "inbox": inbox[0]["n"],
    }


def _decimals(value: Any) -> Any:
    """Prices and amounts as numbers, not as the text they were sent in ('985' and '985.0000' alike)."""
    if isinstance(value, dict):
        return {k: _decimals(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decimals(v) for v in value]
    if isinstance(value, str):
        try:
            return Decimal(value).normalize()
        except ArithmeticError:
            return value
    return value


def pick_of(steps: list[Step]) -> int:
    """An order in the middle of the sequence (not a cancel)."""
    middle = len(steps) // 2
    for place in [*range(middle, len(steps)), *range(middle - 1, -1, -1)]:
        if steps[place].side is not None:
            return place
    raise AssertionError("no order in the sequence")


@pytest.mark.parametrize("mode", ["refused", "failing", "redelivered", "redelivered_late"])
@pytest.mark.parametrize("seed", [0, 7, 13])
async def test_a_batch_with_trouble_inside_decides_what_one_at_a_time_decides(
    seed: int,
    mode: str,
    settings: Settings,
    traders: dict[str, Participant],
    keys: KeyStore,
    ready_databases: ReadyDatabases,
    log_lines: io.StringIO,
) -> None:
    steps = sequence(seed)
    pick = pick_of(steps)
    alone = await play(settings, traders, steps, mode, one_batch=False, pick=pick)
    async with another_environment(settings, keys, ready_databases) as (other, others):
        batch = await play(other, others, steps, mode, one_batch=True, pick=pick)
    script = "\n".join(f"{'>> ' if i == pick else '   '}{s}" for i, s in enumerate(steps))
    assert batch["orders"] == alone["orders"], script
    assert batch["matches"] == alone["matches"], script
    assert batch["to_normal"] == alone["to_normal"], f"{script}\n{differences(alone['to'], batch['to'])}"
    assert batch["outcomes"] == alone["outcomes"], script
    assert batch["inbox"] == alone["inbox"], script
    if mode in ("refused", "failing"):
        assert steps[pick].coid not in {o[0] for o in alone["orders"]}


@pytest.mark.parametrize("seed", [7, 13])
async def test_an_execution_is_sent_in_the_same_words_after_a_redelivery_in_its_batch(
    seed: int,
    settings: Settings,
    traders: dict[str, Participant],
    keys: KeyStore,
    ready_databases: ReadyDatabases,
    log_lines: io.StringIO,
) -> None:
    """The batch holding redelivered orders runs its handlers, meets the redeliveries at its claim,
    rolls back and runs again: the warm book it sealed is then stale and is rebuilt from rows. The
    resting orders' prices rebuilt from ``numeric`` columns carried four decimal places, so the
    executions against them were announced as '985.0000' where one at a time (warm book) said '985':
    the same signed fact in other bytes, depending only on whether a cache survived (mended: the
    book writes every price plainly, ``schemas.money.plain``)."""
    steps = sequence(seed)
    pick = pick_of(steps)
    alone = await play(settings, traders, steps, "redelivered_late", one_batch=False, pick=pick)
    async with another_environment(settings, keys, ready_databases) as (other, others):
        batch = await play(other, others, steps, "redelivered_late", one_batch=True, pick=pick)
    assert batch["to"] == alone["to"], differences(alone["to"], batch["to"])
