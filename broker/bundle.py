"""Bundles: several signed messages for one of Kabuto's queues carried by one AMQP message.

Each signed message costs the broker about the same whatever its size: a quorum queue's log
entry, a confirm, a delivery, an ack (150 µs of RabbitMQ's CPU apiece here, 20 µs when ten
travel together: docs/performance.md, stop 22). So when the relay has several outbox rows for
the same queue of Kabuto's own agents in one window, it packs them into one *bundle*.

A bundle adds nothing a receiver trusts. Each item is the message exactly as it would have
travelled alone: its message id, its type, its signature headers and its body byte for byte.
The receiving consumer unpacks the bundle into its items and settles each as it settles a
delivery: verified before parsing, claimed in the inbox by its own id, dead-lettered alone
with its own reason, retried alone. The bundle is acked once every item is settled, so a
crash redelivers the whole bundle and the inbox absorbs what had committed.

Only the consumers of Kabuto's agents read bundles. The relay bundles only for the routing
keys of an agent's inbox or answers queue and of the investors the investor agent hosts
(``KABUTO_INVESTORS``, bound to the investor agent's queues). A participant's own reply
queue, the events exchange and every external contract see single messages, as before.

The format, read before any signature is checked, is framing only and carries no JSON
body: ``KBB1``, the item count (u32, big-endian), then per item a u32 length and a small
JSON object ``{"message_id", "type", "headers"}`` (the AMQP properties the message would
have had), then a u32 length and the body. Anything else — a wrong tag, a length past the
end, trailing bytes, too many items, headers that are not text — makes the whole bundle
``bundle_malformed``, dead-lettered as it came.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiormq.abc

from broker.settings import MAX_BUNDLE_ITEMS
from broker.topology import ANSWERS_SUFFIX, Names

BUNDLE_TYPE = "kabuto.bundle"
CONTENT_TYPE = "application/vnd.kabuto.bundle"
TAG = b"KBB1"
_LENGTH = struct.Struct(">I")
# An item's properties are its ids and signature headers: a few kilobytes. A bigger one is not
# decoded at all, since nothing of an item is verified yet when its properties are read.
MAX_PROPERTIES_BYTES = 32_768


class BundleMalformed(ValueError):
    """The bytes are not a bundle this module wrote."""


@dataclass(frozen=True, slots=True)
class Item:
    """One signed message inside a bundle: what it would have been as an AMQP message."""

    message_id: str | None
    type: str | None
    headers: Mapping[str, str]
    body: bytes


def pack(items: Sequence[Item]) -> bytes:
    parts = [TAG, _LENGTH.pack(len(items))]
    for item in items:
        meta = json.dumps({"message_id": item.message_id, "type": item.type, "headers": dict(item.headers)}).encode()
        parts += [_LENGTH.pack(len(meta)), meta, _LENGTH.pack(len(item.body)), item.body]
    return b"".join(parts)


def unpack(body: bytes, *, max_items: int = MAX_BUNDLE_ITEMS) -> list[Item]:
    """The items of a bundle, in order; raises ``BundleMalformed``."""
    if body[: len(TAG)] != TAG:
        raise BundleMalformed("does not start with the bundle tag")
    reader = _Reader(body, len(TAG))
    count = reader.length()
    if not 1 <= count <= max_items:
        raise BundleMalformed(f"{count} items (1 to {max_items} allowed)")
    items = [_item(reader.chunk(), reader.chunk()) for _ in range(count)]
    if reader.offset != len(body):
        raise BundleMalformed(f"{len(body) - reader.offset} bytes after the last item")
    return items


@dataclass(slots=True)
class _Reader:
    data: bytes
    offset: int

    def length(self) -> int:
        if self.offset + _LENGTH.size > len(self.data):
            raise BundleMalformed("cut short inside a length")
        (value,) = _LENGTH.unpack_from(self.data, self.offset)
        self.offset += _LENGTH.size
        return int(value)

    def chunk(self) -> bytes:
        size = self.length()
        if self.offset + size > len(self.data):
            raise BundleMalformed(f"an item of {size} bytes runs past the end")
        self.offset += size
        return self.data[self.offset - size : self.offset]


def _item(meta_bytes: bytes, body: bytes) -> Item:
    if len(meta_bytes) > MAX_PROPERTIES_BYTES:
        raise BundleMalformed(f"an item's properties take {len(meta_bytes)} bytes, limit {MAX_PROPERTIES_BYTES}")
    try:
        meta = json.loads(meta_bytes)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleMalformed(f"an item's properties are not JSON: {exc}") from exc
    if not isinstance(meta, dict) or set(meta) != {"message_id", "type", "headers"}:
        raise BundleMalformed("an item's properties are not {message_id, type, headers}")
    message_id, type_, headers = meta["message_id"], meta["type"], meta["headers"]
    if not all(isinstance(v, str | None) for v in (message_id, type_)):
        raise BundleMalformed("an item's message id or type is not text")
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        raise BundleMalformed("an item's headers are not text")
    return Item(message_id, type_, headers, body)


class Delivery(Protocol):
    """What the consumer reads of a delivery: an AMQP delivery, or one item of a bundle."""

    @property
    def body(self) -> bytes: ...
    @property
    def headers(self) -> Mapping[str, Any]: ...
    @property
    def message_id(self) -> str | None: ...
    @property
    def type(self) -> str | None: ...
    @property
    def routing_key(self) -> str | None: ...
    @property
    def channel(self) -> aiormq.abc.AbstractChannel: ...

    def ack(self, multiple: bool = False) -> Awaitable[None]: ...
    def nack(self, multiple: bool = False, requeue: bool = True) -> Awaitable[None]: ...


@dataclass(slots=True)
class _Carrier:
    """The AMQP delivery that brought a bundle; settled once, for all its items."""

    delivery: Delivery
    settled: bool = False

    async def settle(self, action: Callable[[], Awaitable[None]]) -> None:
        if not self.settled:
            self.settled = True
            await action()


@dataclass(slots=True)
class BundledDelivery:
    """One item of a bundle, read by the consumer as a delivery of its own.

    Acking or nacking an item acks or nacks the bundle that carried it, once: the consumer
    takes a bundle's items together (``group_commit.Deliveries``) and acks a batch after
    every item of it was settled.
    """

    item: Item
    _carrier: _Carrier = field(repr=False)

    @property
    def body(self) -> bytes:
        return self.item.body

    @property
    def headers(self) -> Mapping[str, Any]:
        return self.item.headers

    @property
    def message_id(self) -> str | None:
        return self.item.message_id

    @property
    def type(self) -> str | None:
        return self.item.type

    @property
    def routing_key(self) -> str | None:
        return self.carrier.routing_key

    @property
    def channel(self) -> aiormq.abc.AbstractChannel:
        return self.carrier.channel

    @property
    def carrier(self) -> Delivery:
        return self._carrier.delivery

    async def ack(self, multiple: bool = False) -> None:
        await self._carrier.settle(lambda: self.carrier.ack(multiple=multiple))

    async def nack(self, multiple: bool = False, requeue: bool = True) -> None:
        await self._carrier.settle(lambda: self.carrier.nack(multiple=multiple, requeue=requeue))


@dataclass(frozen=True, slots=True)
class MalformedBundle:
    """A delivery that says it is a bundle and is not one: dead-lettered whole, as it came."""

    delivery: Delivery
    detail: str

    @property
    def body(self) -> bytes:
        return self.delivery.body

    @property
    def headers(self) -> Mapping[str, Any]:
        return self.delivery.headers

    @property
    def message_id(self) -> str | None:
        return self.delivery.message_id

    @property
    def type(self) -> str | None:
        return self.delivery.type

    @property
    def routing_key(self) -> str | None:
        return self.delivery.routing_key

    @property
    def channel(self) -> aiormq.abc.AbstractChannel:
        return self.delivery.channel

    def ack(self, multiple: bool = False) -> Awaitable[None]:
        return self.delivery.ack(multiple=multiple)

    def nack(self, multiple: bool = False, requeue: bool = True) -> Awaitable[None]:
        return self.delivery.nack(multiple=multiple, requeue=requeue)


def is_bundle(delivery: Delivery) -> bool:
    return delivery.type == BUNDLE_TYPE


def unbundled(delivery: Delivery) -> list[BundledDelivery]:
    """The items of a bundle as deliveries; raises ``BundleMalformed``."""
    carrier = _Carrier(delivery)
    return [BundledDelivery(item, carrier) for item in unpack(delivery.body)]


@dataclass(frozen=True, slots=True)
class Bundling:
    """Which outbox rows the relay may bundle, and how many together.

    ``max_items`` 1 turns bundling off. ``max_bytes`` keeps a bundle well inside the broker's
    ``max_message_size``; a row larger than it travels alone.
    """

    max_items: int = 32
    max_bytes: int = 524_288
    hosted: Collection[str] = frozenset()

    def carries(self, exchange: str, routing_key: str) -> bool:
        """True for a message to an agent's inbox or answers queue, or to a hosted investor."""
        if exchange != "messages" or self.max_items < 2:
            return False
        return Names.agent_of_key(routing_key) is not None or routing_key.removesuffix(ANSWERS_SUFFIX) in self.hosted

    def groups(self, rows: Sequence[Mapping[str, Any]]) -> list[list[int]]:
        """The rows (outbox rows in sequence order, by index) cut into what is published together.

        Rows for one bundled key go together in sequence order, up to ``max_items`` and
        ``max_bytes``; every other row goes alone. Groups are listed in the order of their
        first row, so each queue still receives an agent's messages in outbox order.
        """
        groups: list[list[int]] = []
        open_by_key: dict[str, tuple[list[int], int]] = {}
        for index, row in enumerate(rows):
            size = len(row["body"]) + len(row["headers"])  # the properties travel in the bundle too
            if not self.carries(row["exchange"], row["routing_key"]) or size > self.max_bytes:
                groups.append([index])
                continue
            key = row["routing_key"]
            group, used = open_by_key.get(key, ([], 0))
            if not group or len(group) >= self.max_items or used + size > self.max_bytes:
                group, used = [], 0
                groups.append(group)
            group.append(index)
            open_by_key[key] = (group, used + size)
        return groups
