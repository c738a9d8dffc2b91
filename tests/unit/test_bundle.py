"""Bundles (issue 8, broker/bundle.py): several signed messages for one of Kabuto's queues in one
AMQP message. What goes in comes out byte for byte and in order; anything that is not a bundle
this module wrote is refused whole (docs/bad-input.md, B81); the relay bundles only rows for an
agent's queues or a hosted investor, keeps each queue's order whichever of its keys the rows
name, and never passes its item or byte bounds."""

from __future__ import annotations

import json
import struct
from typing import Any

import pytest

from agents.registry import AGENTS
from broker.bundle import BUNDLE_TYPE, TAG, BundleMalformed, Bundling, Item, pack, unpack
from broker.group_commit import Deliveries
from broker.ops import _sent_to
from broker.settings import MAX_BUNDLE_ITEMS, Settings
from broker.topology import Names
from schemas.identity import Role

ITEMS = [
    Item("m-1", "order.submit", {"kabuto-signature": "c2ln", "kabuto-signer": "ab12"}, b'{"a":1}'),
    Item("m-2", "order.cancel", {}, b""),
    Item("ü" * 100, "t", {"x": "y" * 5000}, bytes(range(256))),
]


def test_a_bundle_gives_back_each_item_byte_for_byte_in_order() -> None:
    assert unpack(pack(ITEMS)) == ITEMS


def _framed(count: int, *parts: bytes) -> bytes:
    return TAG + struct.pack(">I", count) + b"".join(parts)


def _short(data: bytes) -> bytes:
    return bytes([len(data)]) + data


def _chunk(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


ONE = _short(b"m-1") + _short(b"order.submit") + b"\x00" + _chunk(b"{}")


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"", "tag"),
        (b'{"message_id": "x"}', "tag"),
        (TAG, "past the end"),
        (_framed(0), "0 items"),
        (_framed(MAX_BUNDLE_ITEMS + 1, ONE), f"{MAX_BUNDLE_ITEMS + 1} items"),
        (_framed(2, ONE), "past the end"),
        (_framed(1, ONE)[:-1], "past the end"),
        (_framed(1, ONE) + b"!", "after the last item"),
        (_framed(1, _short(b"") + ONE[4:]), "empty message id"),
        (_framed(1, _short(b"\xff\xfe") + ONE[4:]), "not UTF-8"),
        (_framed(1, _short(b"m") + _short(b"t") + b"\x09"), "9 headers"),
        (_framed(1, _short(b"m") + _short(b"t") + b"\x01" + _short(b"h") + _chunk(b"\xff") + _chunk(b"")), "UTF-8"),
        (_framed(1, _short(b"m") + _short(b"t") + b"\x01" + _short(b"h") + _chunk(b"v" * 20_000)), "16384 bytes"),
        (_framed(1, _short(b"m") + _short(b"t") + b"\x00" + struct.pack(">I", 2**31)), "past the end"),
    ],
)
def test_anything_but_a_well_formed_bundle_is_refused_with_what_is_wrong(body: bytes, why: str) -> None:
    with pytest.raises(BundleMalformed, match=why):
        unpack(body)


def test_nothing_is_packed_that_could_not_be_unpacked() -> None:
    with pytest.raises(ValueError, match="255 bytes"):
        pack([Item("x" * 256, "t", {}, b"")])
    with pytest.raises(ValueError, match="cannot travel"):
        pack([Item("m", "t", {f"h{i}": "v" for i in range(9)}, b"")])
    with pytest.raises(ValueError, match="1 to 256 items"):
        pack([])


def test_a_row_whose_headers_a_bundle_cannot_carry_goes_alone_and_closes_its_queues_bundle() -> None:
    many = json.dumps({"kabuto-signature": "s", **{f"h{i}": "v" for i in range(8)}})
    rows = [_row("exchange"), _row("exchange", 200, headers=many), _row("exchange"), _row("exchange", headers="[")]
    assert Bundling().groups(rows) == [[0], [1], [2], [3]]
    # a row with no signature (found by review): never under a seal, it goes alone to be refused
    rows = [_row("exchange"), _row("exchange", headers="{}"), _row("exchange"), _row("exchange")]
    assert Bundling().groups(rows) == [[0], [1], [2, 3]]


SIGNED = '{"kabuto-signature":"s"}'


def _row(key: str, size: int = 40, exchange: str = "messages", headers: str = SIGNED) -> dict[str, Any]:
    body = b"x" * (size - len(headers))
    return {
        "exchange": exchange,
        "routing_key": key,
        "body": body,
        "headers": headers,
        "message_id": "m",
        "message_type": "t",
    }


def test_rows_for_one_agent_queue_go_together_in_sequence_order_and_others_alone() -> None:
    rows = [
        _row("settlement"),
        _row("trader-1"),  # an external participant's own reply queue
        _row("issuer"),
        _row("settlement"),
        _row("trade.executed", exchange="events"),
        _row("issuer.answers"),
        _row("settlement"),
        _row("alice"),  # hosted by the investor agent
        _row("alice.answers"),
        _row("bob"),  # the investor agent's inbox too
        _row("alice"),
        _row("card-issuer"),  # hosted by the credit agent, with credit
        _row("credit"),
    ]
    groups = Bundling(max_items=32, hosted=frozenset({"alice", "bob"})).groups(rows)
    assert groups == [[0, 3, 6], [1], [2], [4], [5], [7, 9, 10], [8], [11, 12]]


def test_a_full_bundle_is_closed_and_the_next_rows_start_another_after_it() -> None:
    rows = [_row("exchange") for _ in range(7)]
    assert Bundling(max_items=3).groups(rows) == [[0, 1, 2], [3, 4, 5], [6]]


def test_bundles_stay_within_their_bytes_and_a_row_bigger_than_that_goes_alone_in_its_place() -> None:
    rows = [_row("exchange", 40), _row("exchange", 40), _row("exchange", 30), _row("exchange", 300), _row("exchange")]
    assert Bundling(max_items=32, max_bytes=100).groups(rows) == [[0, 1], [2], [3], [4]]


def test_one_item_bundles_nothing_and_no_bundle_is_bigger_than_a_receiver_reads() -> None:
    rows = [_row("exchange") for _ in range(3)]
    assert Bundling(max_items=1).groups(rows) == [[0], [1], [2]]
    assert Bundling(max_items=1).queue_of("messages", "exchange") is None
    with pytest.raises(ValueError, match="1 to 256 items"):
        Bundling(max_items=MAX_BUNDLE_ITEMS + 1)


def test_every_participant_an_agent_hosts_is_routed_to_that_agent() -> None:
    """The relay knows which keys share an agent's queue; it must agree with the agents."""
    for definition in AGENTS.values():
        if definition.role is Role.INVESTOR:
            continue  # its investors are configured: Bundling.hosted
        for participant in definition.participant_ids(Settings()):
            assert Names.agent_of_key(participant) == definition.id
            assert Names.agent_of_key(Names.answers_key(participant)) == definition.id


class _Arrived:
    """What the consumer's callback is given: only the type, body and headers are read before a batch."""

    def __init__(self, body: bytes = b"", type_: str | None = None) -> None:
        self.body, self.type, self.message_id = body, type_, None
        self.headers: dict[str, Any] = {}


async def test_what_is_left_of_the_answers_goes_before_any_new_work() -> None:
    """A bundle never splits; one that does not fit waits for the next batch, and the inbox behind
    it waits too (work under way is finished before new work is started)."""
    deliveries = Deliveries(*([object()] * 2))  # type: ignore[arg-type]
    answers, inbox = deliveries._buffers
    for n in range(2):
        bundle = pack([Item(f"a{n}.{i}", "t", {}, b"") for i in range(20)])
        await deliveries._arrived(answers, _Arrived(bundle, BUNDLE_TYPE))  # type: ignore[arg-type]
    for _ in range(5):
        await deliveries._arrived(inbox, _Arrived())  # type: ignore[arg-type]
    first, second = await deliveries.next_batch(32), await deliveries.next_batch(32)
    assert [d.message_id for d in first or []] == [f"a0.{i}" for i in range(20)]
    assert [d.message_id for d in second or []] == [f"a1.{i}" for i in range(20)] + [None] * 5


@pytest.mark.parametrize(
    ("headers", "key"),
    [
        ({"x-kabuto-routing-key": "alice.answers", "x-death": [{"routing-keys": ["bob"]}]}, "alice.answers"),
        ({"x-death": [{"reason": "delivery_limit", "routing-keys": ["alice"]}]}, "alice"),  # the broker's own
        ({"x-death": [{"reason": "delivery_limit"}]}, "issuer"),
        ({}, "issuer"),
    ],
)
def test_a_dead_letter_is_replayed_to_the_key_it_was_sent_with(headers: dict[str, Any], key: str) -> None:
    assert _sent_to(headers, "issuer") == key
