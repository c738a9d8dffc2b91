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

A bundle is *sealed*: the relay signs ``SEAL_CONTEXT`` and the bundle's bytes with the key that
signed its items (the most of them, where an agent hosting several participants bundles rows of
several; only a key whose every item in the bundle this process signed as it stands,
``broker.signed_here``) and attaches the seal as a single message's signature headers are
attached. A receiver checks the seal once, as it would check one message's signature — the
signer's certificate chained to the CA, valid now and not revoked, the signature over these
exact bytes — and then checks no item signed with that same key again: the seal covers each
item's body and headers byte for byte, so only that key's holder could have sent them.
Everything else about an item is still checked alone (its signer's certificate, its sender, its
freshness, its type and roles), and each item of a relay's bundle keeps its own signature: a
dead-lettered item travels, and is replayed, alone and verifiable. The relay bundles only rows
that carry a signature, and its seal never stands for an item without one. An item signed with
another key, a bundle with
no seal (a relay of an earlier release) or one whose seal does not verify has each item's
signature checked, as before the seal (the refused seal is logged, ``bundle_seal_refused``).
Verifying a signature was a quarter of the investor agent's and the issuer's samples in a burst
(docs/performance.md, stop 27).

A bundle may also be *packed* by the agent that wrote its items: what one batch of an agent's
consumer sends to one of Kabuto's queues under one key is stored as one outbox row, a bundle
whose items carry no signature of their own (no headers), sealed once (``broker.outbox.store``).
The seal is then each item's only signature, made over these bytes in the process that wrote
them, over ``PACKED_SEAL_CONTEXT`` (a bundle holding any item without a signature is checked
under that context only, so a relay's seal can never be taken for one): a packed item is read
with the seal's headers, so it is accepted only where the packed seal verified, and is refused
where it did not. One signature, one outbox row and one
mark stand for the batch's messages to that queue rather than one each (docs/performance.md,
stop 32). An item that cannot be signed alone cannot travel alone either: its retry copy and its
dead letter are the whole bundle, sealed as it was, narrowed to that item by ``ITEMS_HEADER``
(the ids of the items the bundle carries for this delivery; the others are absorbed, or left
dead, as they were). A packed bundle no seal vouches for is dead-lettered once, whole, for all
of its items (``dead_letter_of``).

Only the consumers of Kabuto's agents read bundles. The relay bundles only for the routing
keys of an agent's inbox or answers queue and of the investors the investor agent hosts
(``KABUTO_INVESTORS``, bound to the investor agent's queues). A participant's own reply
queue, the events exchange and every external contract see single messages, as before.

The format, read before any signature is checked, is binary framing and nothing else: ``KBB1``,
the item count (u32, big-endian), then per item its message id and type (each a byte of length
and 1 to 255 bytes of UTF-8, as AMQP allows), its headers (a byte of count; per header a byte
of length and the name, a u32 length and the value, UTF-8, 16 KiB in all) and its body (a u32
length and the bytes). Anything else — a wrong tag, a length past the end, trailing bytes, no
item or too many, text that is not UTF-8, an ``ITEMS_HEADER`` naming an item the bundle does
not hold — makes the whole bundle ``bundle_malformed``, dead-lettered as it came.
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
from schemas.envelope import SIGNATURE_HEADER

BUNDLE_TYPE = "kabuto.bundle"
# What a seal signs is this, then the bundle's bytes: a signature made for a bundle can never be
# taken for one over a message body, a stock certificate or an endorsement made with the same key.
SEAL_CONTEXT = b"kabuto bundle seal v1\n"
# A packed bundle's seal (an agent's batch sealed it as it packed it, broker.outbox) signs this
# instead: only such a seal stands for items that carry no signature of their own. A relay's seal
# is made over rows it found in the outbox table, so it never vouches for an unsigned one
# (found by review: a row written there with no headers travelled under the relay's seal).
PACKED_SEAL_CONTEXT = b"kabuto packed bundle seal v1\n"
CONTENT_TYPE = "application/vnd.kabuto.bundle"
# The items of a bundle a delivery carries, by id and comma-separated, where it carries only some:
# the retry copy or the dead letter of one packed item, or what is left dead of a packed bundle
# some of whose items were replayed. Not signed: it can only narrow what a sealed bundle says.
ITEMS_HEADER = "x-kabuto-items"
TAG = b"KBB1"
_LENGTH = struct.Struct(">I")
# An item's headers are its signature, its signer's fingerprint and its certificate: about a
# kilobyte. More than the envelope check allows (broker.envelope.MAX_HEADER_BYTES) is refused
# before it is decoded, since nothing of an item is verified when its properties are read.
MAX_HEADER_BYTES = 16_384
MAX_HEADERS = 8


class BundleMalformed(ValueError):
    """The bytes are not a bundle this module wrote."""


@dataclass(frozen=True, slots=True)
class Item:
    """One message inside a bundle: what it would have been as an AMQP message (a packed item
    without the signature headers its bundle's seal stands for)."""

    message_id: str
    type: str
    headers: Mapping[str, str]
    body: bytes

    @property
    def signed_alone(self) -> bool:
        """Whether the item carries a signature of its own; a packed item does not."""
        return SIGNATURE_HEADER in self.headers


def pack(items: Sequence[Item]) -> bytes:
    """The bundle of ``items``; ``ValueError`` if one could not be unpacked (``fits`` says)."""
    if not 1 <= len(items) <= MAX_BUNDLE_ITEMS:
        raise ValueError(f"a bundle holds 1 to {MAX_BUNDLE_ITEMS} items, not {len(items)}")
    parts = [TAG, _LENGTH.pack(len(items))]
    for item in items:
        if not fits(item.headers):
            raise ValueError(f"the headers of {item.message_id} cannot travel in a bundle")
        parts += [_short(item.message_id), _short(item.type), bytes([len(item.headers)])]
        for name, value in item.headers.items():
            parts += [_short(name), _chunk(value.encode())]
        parts.append(_chunk(item.body))
    return b"".join(parts)


def fits(headers: Mapping[str, object]) -> bool:
    """Whether a message's headers may travel in a bundle: what ``unpack`` accepts."""
    if len(headers) > MAX_HEADERS or not all(isinstance(v, str) for v in headers.values()):
        return False
    names = [name.encode() for name in headers]
    size = sum(len(n) for n in names) + sum(len(str(v).encode()) for v in headers.values())
    return all(1 <= len(n) <= 255 for n in names) and size <= MAX_HEADER_BYTES


def _short(text: str) -> bytes:
    data = text.encode()
    if not 1 <= len(data) <= 255:
        raise ValueError(f"{text[:40]!r}: 1 to 255 bytes of UTF-8 allowed")
    return bytes([len(data)]) + data


def _chunk(data: bytes) -> bytes:
    return _LENGTH.pack(len(data)) + data


def unpack(body: bytes, *, max_items: int = MAX_BUNDLE_ITEMS) -> list[Item]:
    """The items of a bundle, in order; raises ``BundleMalformed``."""
    if body[: len(TAG)] != TAG:
        raise BundleMalformed("does not start with the bundle tag")
    reader = _Reader(body, len(TAG))
    count = reader.length()
    if not 1 <= count <= max_items:
        raise BundleMalformed(f"{count} items (1 to {max_items} allowed)")
    items = [reader.item() for _ in range(count)]
    if reader.offset != len(body):
        raise BundleMalformed(f"{len(body) - reader.offset} bytes after the last item")
    return items


@dataclass(slots=True)
class _Reader:
    data: bytes
    offset: int

    def item(self) -> Item:
        message_id, type_ = self.short(), self.short()
        count = self.take(1)[0]
        if count > MAX_HEADERS:
            raise BundleMalformed(f"an item has {count} headers, limit {MAX_HEADERS}")
        headers, size = {}, 0
        for _ in range(count):
            name, value = self.short(), self.chunk()
            size += len(name) + len(value)
            if size > MAX_HEADER_BYTES:
                raise BundleMalformed(f"an item's headers pass {MAX_HEADER_BYTES} bytes")
            headers[name] = _text(value)
        return Item(message_id, type_, headers, self.chunk())

    def take(self, size: int) -> bytes:
        if self.offset + size > len(self.data):
            raise BundleMalformed(f"{size} bytes run past the end")
        self.offset += size
        return self.data[self.offset - size : self.offset]

    def length(self) -> int:
        (value,) = _LENGTH.unpack(self.take(_LENGTH.size))
        return int(value)

    def short(self) -> str:
        size = self.take(1)[0]
        if size == 0:
            raise BundleMalformed("an empty message id, type or header name")
        return _text(self.take(size))

    def chunk(self) -> bytes:
        return self.take(self.length())


def _text(data: bytes) -> str:
    try:
        return data.decode()
    except UnicodeDecodeError as exc:
        raise BundleMalformed(f"text that is not UTF-8: {exc}") from exc


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


# Who sealed a bundle (its bytes, its headers, whether it is packed), if the seal verifies.
SealCheck = Callable[[bytes, Mapping[str, Any], bool], "str | None"]


@dataclass(slots=True)
class _Carrier:
    """The AMQP delivery that brought a bundle; settled once, for all its items, and its seal
    checked once for all of them."""

    delivery: Delivery
    # Some item of the bundle carries no signature of its own: only a packed seal stands for it.
    packed: bool = False
    settled: bool = False
    seal_checked: bool = False
    sealed_by: str | None = None
    # Dead-lettered whole already: a packed bundle no seal vouched for (``dead_letter_of``).
    dead: bool = False

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
        """Its own signature headers, or, for a packed item (signed by the seal alone), the
        bundle's: its seal's signature, and what the bundle's delivery says (its attempt)."""
        return self.item.headers if self.signed_alone else self.carrier.headers

    @property
    def vouched(self) -> bool:
        """Whether a seal over its bundle verified (whoever's key it was)."""
        return self._carrier.sealed_by is not None

    @property
    def signed_alone(self) -> bool:
        return self.item.signed_alone

    @property
    def message_id(self) -> str:
        return self.item.message_id

    @property
    def type(self) -> str:
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

    def sealed_by(self, check: SealCheck) -> str | None:
        """The fingerprint of the signer whose signature over the whole bundle verified, as
        ``check`` says of the bundle's bytes and headers (asked once per bundle), or None."""
        carrier = self._carrier
        if not carrier.seal_checked:
            delivery = carrier.delivery
            carrier.sealed_by, carrier.seal_checked = check(delivery.body, delivery.headers, carrier.packed), True
        return carrier.sealed_by

    async def ack(self, multiple: bool = False) -> None:
        await self._carrier.settle(lambda: self.carrier.ack(multiple=multiple))

    async def nack(self, multiple: bool = False, requeue: bool = True) -> None:
        await self._carrier.settle(lambda: self.carrier.nack(multiple=multiple, requeue=requeue))


def sealed_bytes(body: bytes, *, packed: bool = False) -> bytes:
    """What a bundle's seal signs: ``SEAL_CONTEXT`` (a packed bundle's: ``PACKED_SEAL_CONTEXT``)
    and the bundle's bytes."""
    return (PACKED_SEAL_CONTEXT if packed else SEAL_CONTEXT) + body


def is_bundle(delivery: Delivery) -> bool:
    return delivery.type == BUNDLE_TYPE


def unbundled(delivery: Delivery) -> list[Delivery]:
    """What a consumer takes from a delivery: the items of a bundle, each a delivery of its own,
    or else the delivery itself — a bundle that is not one too, refused whole (``malformed``).
    Never raises: in aio-pika's consume callback an error is only logged, and the next ack of the
    channel would ack a delivery no one settled (found by review)."""
    if not is_bundle(delivery):
        return [delivery]
    try:
        every = unpack(delivery.body)
        items = _narrowed(every, delivery.headers)
    except Exception:  # noqa: BLE001 — refused whole when its batch takes it
        return [delivery]
    carrier = _Carrier(delivery, packed=is_packed(every))
    return [BundledDelivery(item, carrier) for item in items]


def is_packed(items: Sequence[Item]) -> bool:
    """Whether a bundle holds an item with no signature of its own (a packed bundle's): then only
    a packed seal (``PACKED_SEAL_CONTEXT``) over the bundle may vouch for its items."""
    return not all(item.signed_alone for item in items)


def carried(body: bytes, headers: Mapping[str, Any]) -> list[Item]:
    """The items of a bundle that a delivery with these headers carries: all of them, or those
    ``ITEMS_HEADER`` names, in the bundle's order. Raises ``BundleMalformed``."""
    return _narrowed(unpack(body), headers)


def _narrowed(items: list[Item], headers: Mapping[str, Any]) -> list[Item]:
    named = headers.get(ITEMS_HEADER)
    if named is None:
        return items
    if isinstance(named, bytes | bytearray):
        named = bytes(named).decode("ascii", errors="replace")
    wanted = set(str(named).split(","))
    held = [item for item in items if item.message_id in wanted]
    if len(held) != len(wanted):
        raise BundleMalformed(f"{ITEMS_HEADER} names items the bundle does not hold")
    return held


def malformed(delivery: Delivery) -> str | None:
    """Why a delivery that says it is a bundle is not one; None for a well-formed bundle, an
    item of one, or any other delivery."""
    if isinstance(delivery, BundledDelivery) or not is_bundle(delivery):
        return None
    try:
        carried(delivery.body, delivery.headers)
    except Exception as exc:  # noqa: BLE001 — whatever the framing raised, the bundle is refused
        return str(exc) if isinstance(exc, BundleMalformed) else f"{type(exc).__name__}: {exc}"[:1000]
    return None


def dead_letter_of(delivery: Delivery) -> tuple[str | None, str | None, bytes, dict[str, Any]] | None:
    """What is dead-lettered for ``delivery``: what it sends alone (``sent_alone``) — but an item
    of a packed bundle no seal vouched for, whose items all fall with it, has the bundle
    dead-lettered once, whole, and None for the others: a copy of the whole bundle for each of
    its items would let any client on the network turn one message into 256 (found by an
    independent suite). What is listed, and replayed, of it is still each item."""
    if not isinstance(delivery, BundledDelivery) or delivery.signed_alone or delivery.vouched:
        return sent_alone(delivery)
    carrier = delivery._carrier
    if carrier.dead:
        return None
    carrier.dead = True
    return carrier.delivery.message_id, BUNDLE_TYPE, carrier.delivery.body, dict(carrier.delivery.headers)


def sent_alone(delivery: Delivery) -> tuple[str | None, str | None, bytes, dict[str, Any]]:
    """What travels for ``delivery`` alone (its retry copy, its dead letter): its id, its type,
    its body and its headers. A packed item has no signature of its own: the whole bundle goes,
    sealed as it came, narrowed to it."""
    if isinstance(delivery, BundledDelivery) and not delivery.signed_alone:
        carrier = delivery.carrier
        return delivery.message_id, BUNDLE_TYPE, carrier.body, narrowed_to(carrier.headers, [delivery.item])
    return delivery.message_id, delivery.type, delivery.body, dict(delivery.headers)


def narrowed_to(headers: Mapping[str, Any], items: Sequence[Item]) -> dict[str, Any]:
    """A bundle's headers, its seal among them, saying that it carries only ``items``."""
    return {**headers, ITEMS_HEADER: ",".join(item.message_id for item in items)}


Queue = tuple[str, bool]  # the agent, and whether it is its answers queue


def _travels(row: Mapping[str, Any]) -> bool:
    """An outbox row whose id, type and headers a bundle can carry (every row Kabuto signs,
    but for a packed bundle, which travels as it was stored)."""
    if row["message_type"] == BUNDLE_TYPE:
        return False
    try:
        headers = json.loads(row["headers"])
    except (TypeError, ValueError):
        return False
    texts = (str(row["message_id"]).encode(), str(row["message_type"] or "").encode())
    signed = isinstance(headers, dict) and SIGNATURE_HEADER in headers  # a row with none travels alone, refused
    return signed and fits(headers) and all(1 <= len(t) <= 255 for t in texts)


@dataclass(frozen=True, slots=True)
class Bundling:
    """Which outbox rows the relay may bundle, and how many together.

    ``max_items`` 1 turns bundling off. ``max_bytes`` keeps a bundle well inside the broker's
    ``max_message_size``; a row larger than it travels alone. ``hosted`` are the investors the
    investor agent hosts (``KABUTO_INVESTORS``), whose messages go to its queues.
    """

    max_items: int = 32
    max_bytes: int = 524_288
    hosted: Collection[str] = frozenset()

    def __post_init__(self) -> None:
        if not 1 <= self.max_items <= MAX_BUNDLE_ITEMS:
            raise ValueError(f"a bundle holds 1 to {MAX_BUNDLE_ITEMS} items, not {self.max_items}")

    def queue_of(self, exchange: str, routing_key: str) -> Queue | None:
        """The agent's queue a message goes to, if it is one the relay bundles for: an agent's
        inbox or answers queue (its own participants' keys), or the investor agent's for a
        hosted investor. None for events and for a participant's own reply queue."""
        if exchange != "messages" or self.max_items < 2:
            return None
        agent = Names.agent_of_key(routing_key)
        if agent is None and routing_key.removesuffix(ANSWERS_SUFFIX) in self.hosted:
            agent = "investor"
        return None if agent is None else (agent, Names.is_answers_key(routing_key))

    def groups(self, rows: Sequence[Mapping[str, Any]]) -> list[list[int]]:
        """The relay's rows (outbox rows in sequence order, by index) cut into what is published
        together (``cut``): a packed bundle, or a row a bundle cannot carry, goes alone."""
        return self.cut(
            [
                Place(
                    self.queue_of(row["exchange"], row["routing_key"]),
                    len(row["body"]) + len(row["headers"]),  # the headers travel in the bundle too
                    alone=not _travels(row),
                )
                for row in rows
            ]
        )

    def cut(self, places: Sequence[Place]) -> list[list[int]]:
        """Messages (by index, in order) cut into what travels together.

        Messages for one agent's queue go together in order, up to ``max_items`` and
        ``max_bytes``, where they share the key; every other message goes alone. Groups are
        listed in the order of their first message, and a message that does not join its
        queue's open group closes it, so each queue still receives an agent's messages in order,
        whichever of its keys they name.
        """
        groups: list[list[int]] = []
        open_groups: dict[Queue, tuple[list[int], int, object]] = {}
        for index, place in enumerate(places):
            queue = place.queue
            if queue is None or place.alone or place.size > self.max_bytes:
                if queue is not None:
                    open_groups.pop(queue, None)
                groups.append([index])
                continue
            group, used, key = open_groups.get(queue, ([], 0, place.key))
            if not group or len(group) >= self.max_items or used + place.size > self.max_bytes or key != place.key:
                group, used = [], 0
                groups.append(group)
            group.append(index)
            open_groups[queue] = (group, used + place.size, place.key)
        return groups


@dataclass(frozen=True, slots=True)
class Place:
    """Where a message goes, as ``Bundling.cut`` groups it: the agent's queue (None for any
    other destination), its size, and what each member of a group shares (``key``: the key a
    packed bundle is sealed with); ``alone``: it travels alone whatever its queue."""

    queue: Queue | None
    size: int
    key: object = None
    alone: bool = False
