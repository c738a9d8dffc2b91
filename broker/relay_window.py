"""The relay's publish path: a window of outbox rows published together, confirmed together.

Row by row, the relay paid a broker round trip (the confirm) and a database round trip (the
mark) per message. Here a window of pending rows is published in sequence order without
waiting between them — the channel's lock and write queue keep that order on the wire, so
each queue still receives an agent's messages in outbox order — then every confirm is awaited
at once, and every confirmed row is marked published in one statement.

Nor does a publication wait for its frames to be written before the next is queued (aiormq's
``basic_publish(wait=False)``; aio-pika's ``Exchange.publish`` always waits): a window reaches
the broker back to back, which reads it together and confirms it with few acks, instead of a
publication a turn of the event loop. The broker's confirm, not the write, is what a row's fate
waits for, so nothing is marked published sooner (docs/performance.md, stop 37).

What each row's confirm said decides its fate, as row by row: confirmed → marked published;
returned unroutable → parked as failed with the reason; nacked by the broker → left pending
and published again on the next pass (receivers absorb a repeat through their inbox). A
nacked row may thus arrive after rows behind it in its window; a nack is the broker's own
failure (it lost the message), which the row-by-row relay met by stopping the window instead.

Rows for the same queue of one of Kabuto's agents travel together as one bundle
(``broker.bundle``), sealed by the key that signed them; a bundle's confirm, return or nack is each of its rows' fate.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence

import aiormq
import asyncpg

from broker import event_loop, logs, metrics
from broker.bundle import BUNDLE_TYPE, BundleMalformed, Bundling, Item, unpack
from broker.outbox import amqp_message, bundle_message, sealer_of
from broker.pki import Identity
from broker.signed_here import SIGNED_HERE
from broker.topology import Exchanges, Names

log = logs.get("kabuto.outbox")
# The mark commits without waiting for its WAL flush (synchronous_commit off for this one
# statement's transaction). A mark lost to a PostgreSQL crash is the case the relay already
# handles, a row confirmed but not marked: it is published again and the receiver's inbox
# absorbs the identical bytes. The agent's own transactions keep synchronous commit: the
# relay never waits on an fsync of its own, one per window, between two windows.
MARK_PUBLISHED = """WITH asynchronous AS (SELECT set_config('synchronous_commit', 'off', true))
    UPDATE outbox SET published_at = now() FROM asynchronous WHERE seq = ANY($1::bigint[])"""
# The relay's read of its next window, with the mark of the window it holds confirmed (none: a
# read alone), in one round trip (OutboxRelay.run). The read's snapshot is from before the mark,
# so the rows marked are left out by their numbers.
MARK_AND_READ = """WITH asynchronous AS (SELECT set_config('synchronous_commit', 'off', true)),
         marked AS (UPDATE outbox SET published_at = now() FROM asynchronous WHERE seq = ANY($1::bigint[]))
    SELECT seq, message_id, message_type, exchange, routing_key, body, headers
    FROM outbox WHERE published_at IS NULL AND failed_at IS NULL AND NOT (seq = ANY($1::bigint[]))
    ORDER BY seq LIMIT $2"""


async def publish_window(
    agent: str,
    pool: asyncpg.Pool,
    exchanges: Exchanges,
    rows: Sequence[asyncpg.Record],
    bundling: Bundling,
    sealers: Mapping[str, Identity],
    marks: list[int] | None = None,
) -> int:
    """Publish ``rows`` (pending outbox rows in sequence order) and record what became of each;
    returns how many were parked for one of Kabuto's agents that has not declared its queues yet.
    ``sealers``: the agent's identities by fingerprint, which seal its bundles (broker.bundle).
    ``marks``: the rows confirmed are added to it, for the caller to mark (``MARK_AND_READ``),
    rather than marked here — unless a row of the window was not confirmed (parked, nacked, or
    the channel failed): then they are marked here, before the rest of the window is handled."""
    groups = bundling.groups(rows)
    channel = await _confirming_channel(exchanges)
    sends = [asyncio.ensure_future(_send(channel, exchanges, [rows[i] for i in group], sealers)) for group in groups]
    sent = await _outcomes(channel, sends)
    results: list[BaseException | None] = [None] * len(rows)
    for group, result in zip(groups, sent, strict=True):
        for index in group:
            results[index] = result
    published = [row["seq"] for row, result in zip(rows, results, strict=True) if result is None]
    failed = any(isinstance(result, BaseException) for result in results)
    if published:
        if marks is None or failed:
            await pool.execute(MARK_PUBLISHED, [*(marks or ()), *published])
            if marks:
                marks.clear()
        else:
            marks.extend(published)
        for row, result in zip(rows, results, strict=True):
            if result is None:
                for message_type in _types(row):
                    metrics.published(agent, message_type)
    nacked: BaseException | None = None
    parked = 0
    for row, result in zip(rows, results, strict=True):
        if isinstance(result, aiormq.exceptions.PublishError):
            parked += await _park(pool, row, f"unroutable: no queue for routing key {row['routing_key']!r}")
        elif isinstance(result, aiormq.exceptions.DeliveryError):
            log.warning("outbox_nacked", message_id=str(row["message_id"]), error=str(result))
            nacked = nacked or result
        elif isinstance(result, BaseException):
            raise result  # the broker or the channel went away: the rest stays pending
    if nacked is not None:
        raise nacked
    return parked


async def _confirming_channel(exchanges: Exchanges) -> aiormq.Channel:
    """The aiormq channel under the exchanges', which confirms what is published on it: a row's
    fate is its confirm, so a channel without confirms would mark rows the broker never took."""
    if exchanges.channel.is_closed:  # as aio-pika's publish: a closed channel fails the window here
        raise aiormq.exceptions.ChannelInvalidStateError(f"{exchanges.channel!r} closed")
    channel = await exchanges.channel.get_underlay_channel()
    assert isinstance(channel, aiormq.Channel)  # its publish takes ``wait``; the abstract one does not say so
    assert channel.publisher_confirms, "the relay publishes on a confirming channel only"
    return channel


async def _outcomes(channel: aiormq.Channel, sends: Sequence[asyncio.Future[None]]) -> list[BaseException | None]:
    """What became of each send: None (confirmed) or its failure.

    A publication queued without waiting for its write waits in aiormq's write queue (ten
    frames) when that is full, and once the connection's writer is gone nothing wakes it: no
    confirmation covers that wait, and the window would never end (found by review, stop 37).
    So the window also watches the channel close; sends still under way then are cancelled
    (aiormq takes back a publication cancelled before it was queued) and fail as the channel's
    loss, while those confirmed before keep their fate."""
    gathered = asyncio.gather(*sends, return_exceptions=True)
    closing = channel.closing  # an observer of its own: cancelling it leaves the channel be
    try:
        await asyncio.wait([gathered, closing], return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        # The relay stopping: its sends stop with it, as an awaited gather's would (the unretrieved
        # CancelledError was seen in `make bench`).
        event_loop.abandon(gathered)
        raise
    finally:
        closing.cancel()
    if gathered.done():
        return list(gathered.result())
    for send in sends:
        send.cancel()
    await asyncio.wait([gathered])
    lost = aiormq.exceptions.ChannelInvalidStateError("the channel closed while the window was published")
    return [lost if send.cancelled() else send.exception() for send in sends]


async def _send(
    channel: aiormq.Channel, exchanges: Exchanges, rows: Sequence[asyncpg.Record], sealers: Mapping[str, Identity]
) -> None:
    """One row as itself, or several for one queue as one sealed bundle."""
    first = rows[0]
    exchange = exchanges.events if first["exchange"] == "events" else exchanges.messages
    items = [Item(str(r["message_id"]), r["message_type"], json.loads(r["headers"]), r["body"]) for r in rows]
    # Each row's note is taken as it is published (broker.signed_here): a bundle is sealed only
    # by a key whose every item in it is exactly as this process signed it.
    signed_here = [SIGNED_HERE.take(item.message_id, item.body, item.headers) for item in items]
    if len(rows) == 1:
        (item,) = items
        message = amqp_message(item.message_id, item.type, item.body, item.headers)
    else:
        message = bundle_message(items, {}, sealer_of(items, signed_here, sealers))
    await channel.basic_publish(
        message.body,
        exchange=exchange.name,
        routing_key=first["routing_key"],
        properties=message.properties,  # aio-pika's message: the same properties on the wire as before
        mandatory=True,
        wait=False,
    )


def _types(row: asyncpg.Record) -> list[str]:
    """The type of each message a row holds: a packed bundle's items' (broker.bundle), or its own."""
    if row["message_type"] != BUNDLE_TYPE:
        return [row["message_type"]]
    try:
        return [item.type for item in unpack(row["body"])]
    except BundleMalformed:  # not one this agent wrote: counted as it is named
        return [row["message_type"]]


async def _park(pool: asyncpg.Pool, row: asyncpg.Record, error: str) -> bool:
    """Park ``row``; True if it waits for one of Kabuto's agents rather than for a participant."""
    await pool.execute("UPDATE outbox SET failed_at = now(), error = $2 WHERE seq = $1", row["seq"], error)
    fields = {"message_id": str(row["message_id"]), "type": row["message_type"], "routing_key": row["routing_key"]}
    if Names.agent_of_key(row["routing_key"]) is None:
        log.error("outbox_unroutable", **fields)
        return False
    # One of Kabuto's agents has not declared its queues yet: on a first start the agents come
    # up in any order. Parked rows are tried again soon (broker.parked.SOON), not an error.
    log.warning("outbox_recipient_not_declared_yet", **fields)
    return True
