"""Header values anyone may send, read and sent on without failing (broker/amqp_values.py, B95):
pamqp's readers, as ``broker.link`` installs them, and ``republishable``."""

from __future__ import annotations

import struct
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from pamqp import decode, encode

from broker import amqp_values

amqp_values.install()


def _table(*entries: tuple[bytes, bytes]) -> bytes:
    """An AMQP field table written by hand: each (key bytes, tagged value bytes)."""
    body = b"".join(bytes([len(key)]) + key + value for key, value in entries)
    return struct.pack(">I", len(body)) + body


def test_a_timestamp_no_datetime_holds_is_read_as_the_number_sent_or_as_no_timestamp() -> None:
    _, value = decode.by_type(_table((b"t", b"T" + struct.pack(">Q", 2**63))), "table")
    assert value == {"t": 2**63}  # a header's value: kept as evidence
    # the message's own timestamp property: aio-pika takes a date or None there, nothing else
    assert decode.by_type(struct.pack(">Q", 2**63), "timestamp") == (8, None)
    assert decode.by_type(struct.pack(">Q", 1_700_000_000), "timestamp") == (
        8,
        datetime.fromtimestamp(1_700_000_000, tz=UTC),
    )
    with pytest.raises(ValueError, match="timestamp"):
        decode.by_type(b"\x00\x01", "timestamp")  # too short: a broken frame still is one


def test_text_that_is_not_utf8_is_read_with_a_question_mark_and_can_be_written_back() -> None:
    assert decode.by_type(b"\x03a\xffb", "shortstr") == (4, "a?b")
    assert decode.by_type("\x04né".encode()[:1] + "né".encode() + b"\xff", "shortstr") == (5, "né?")
    _, value = decode.by_type(_table((b"k\xfe", b"S" + struct.pack(">I", 1) + b"v")), "table")
    assert value == {"k?": "v"}
    with pytest.raises(ValueError):
        decode.by_type(b"", "shortstr")
    # 255 bytes none of which is UTF-8: as long as it came, so still a short string (a message id
    # of U+FFFD, three bytes each, could not be published again with its dead letter)
    _, message_id = decode.by_type(bytes([255]) + b"\xff" * 255, "shortstr")
    assert message_id == "?" * 255 and encode.short_string(message_id)


def test_a_table_whose_length_runs_past_its_data_is_still_refused() -> None:
    with pytest.raises(ValueError, match="exceeds"):
        decode.by_type(struct.pack(">I", 50) + b"\x01k", "table")


def test_every_header_value_pamqp_read_can_be_published_again() -> None:
    arrived = {
        "text": "ok",
        "bytes": b"\xff\xfe",  # a long string that was not UTF-8
        "huge": 1e300,  # a double pamqp would write as a 32-bit float
        "moment": 2**63,  # a timestamp read as its number, past a signed 64-bit integer
        "nested": {"deep": [b"\x00", 1e300, "fine"]},
        "plain": [None, True, -(2**63), bytearray(b"\x01"), 1.5, Decimal("12.34")],
    }
    sent = amqp_values.republishable(arrived)
    encode.field_table(sent)  # raises if any value cannot be written
    assert sent["text"] == "ok" and sent["bytes"] == bytearray(b"\xff\xfe")
    assert sent["huge"] == "1e+300" and sent["nested"] == {"deep": [bytearray(b"\x00"), "1e+300", "fine"]}
    assert sent["moment"] == str(2**63) and sent["plain"] == arrived["plain"]


def test_a_value_kept_as_its_repr_is_bounded() -> None:
    class Odd:
        def __repr__(self) -> str:
            return "x" * 5000

    assert amqp_values.republishable({"odd": Odd()}) == {"odd": "x" * amqp_values.REPR_CHARACTERS}
