"""Bundles (issue 8, broker/bundle.py): several signed messages for one of Kabuto's queues in one
AMQP message. What goes in comes out byte for byte and in order; anything that is not a bundle
this module wrote is refused whole; the relay bundles only rows for an agent's queues or a hosted
investor, keeps each queue's order, and never passes its item or byte bounds."""

from __future__ import annotations

import json
import struct
from typing import Any

import pytest

from broker.bundle import TAG, BundleMalformed, Bundling, Item, pack, unpack

ITEMS = [
    Item("m-1", "order.submit", {"kabuto-signature": "c2ln", "kabuto-signer": "ab12"}, b'{"a":1}'),
    Item("m-2", "order.cancel", {}, b""),
    Item(None, None, {"x": "y"}, bytes(range(256))),
]


def test_a_bundle_gives_back_each_item_byte_for_byte_in_order() -> None:
    assert unpack(pack(ITEMS)) == ITEMS


def _meta(item: Item) -> bytes:
    return json.dumps({"message_id": item.message_id, "type": item.type, "headers": dict(item.headers)}).encode()


def _framed(count: int, *chunks: bytes) -> bytes:
    return TAG + struct.pack(">I", count) + b"".join(struct.pack(">I", len(c)) + c for c in chunks)


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"", "tag"),
        (b'{"message_id": "x"}', "tag"),
        (TAG, "length"),
        (_framed(0), "0 items"),
        (_framed(2000), "2000 items"),
        (_framed(1, _meta(ITEMS[0])), "length"),
        (pack(ITEMS[:1])[:-1], "past the end"),
        (pack(ITEMS[:1]) + b"!", "after the last item"),
        (_framed(1, b"not json", b"{}"), "not JSON"),
        (_framed(1, b"[1, 2]", b"{}"), "properties"),
        (_framed(1, b'{"message_id": "x", "type": "t"}', b"{}"), "properties"),
        (_framed(1, b'{"message_id": 7, "type": "t", "headers": {}}', b"{}"), "not text"),
        (_framed(1, b'{"message_id": "x", "type": "t", "headers": {"n": 1}}', b"{}"), "headers"),
        (_framed(1, b'{"message_id": "x", "type": "t", "headers": []}', b"{}"), "headers"),
        (_framed(1, b" " * 40_000, b"{}"), "limit 32768"),
    ],
)
def test_anything_but_a_well_formed_bundle_is_refused_with_what_is_wrong(body: bytes, why: str) -> None:
    with pytest.raises(BundleMalformed, match=why):
        unpack(body, max_items=1024)


def _row(key: str, size: int = 10, exchange: str = "messages") -> dict[str, Any]:
    return {"exchange": exchange, "routing_key": key, "body": b"x" * (size - 2), "headers": "{}"}


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
        _row("alice"),
    ]
    groups = Bundling(max_items=32, hosted=frozenset({"alice"})).groups(rows)
    assert groups == [[0, 3, 6], [1], [2], [4], [5], [7, 9], [8]]


def test_a_full_bundle_is_closed_and_the_next_rows_start_another_after_it() -> None:
    rows = [_row("exchange") for _ in range(7)]
    assert Bundling(max_items=3).groups(rows) == [[0, 1, 2], [3, 4, 5], [6]]


def test_bundles_stay_within_their_bytes_and_a_row_bigger_than_that_goes_alone() -> None:
    rows = [_row("exchange", 40), _row("exchange", 40), _row("exchange", 300), _row("exchange", 30)]
    assert Bundling(max_items=32, max_bytes=100).groups(rows) == [[0, 1], [2], [3]]


def test_one_item_bundles_nothing() -> None:
    rows = [_row("exchange") for _ in range(3)]
    assert Bundling(max_items=1).groups(rows) == [[0], [1], [2]]
    assert not Bundling(max_items=1).carries("messages", "exchange")
