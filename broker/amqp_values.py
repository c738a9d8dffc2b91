"""AMQP header values as anyone on the network may send them, read and sent on without failing.

Headers travel outside every signature, so their values are whatever a publisher wrote, and
pamqp (under aio-pika) does not read back all it can be sent:

* a timestamp no ``datetime`` holds, or a string property or table key that is not UTF-8, fails
  the frame: the connection drops and the broker redelivers, until its delivery limit;
* a long string that is not UTF-8 is read as ``bytes``, and a double past a 32-bit float's range
  as a float pamqp writes back as one: neither can be published again.

Each made an agent stop or lose its consumer on one message (found by an independent crash
hunt and its review, stop 33; B95 in docs/bad-input.md). ``install`` makes pamqp read the first
kind: a timestamp as the number sent in a header, and as none for the message's own timestamp,
which aio-pika takes only as a date; text with ``?`` for each run of bytes that is not UTF-8, so
that it is never longer than it came and can be written back as a short string.
``republishable`` makes the headers of a delivery safe to publish again, for its dead letter and
its retry copies. ``broker.link``, through which every connection is made, installs it.
"""

from __future__ import annotations

import codecs
import struct
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pamqp import common, decode, encode

# A value no header can carry is kept as its repr, this long at most.
REPR_CHARACTERS = 1000


def republishable(headers: Mapping[str, Any]) -> dict[str, Any]:
    """``headers`` as a delivery arrived with them, each value one pamqp can write: as it came
    where it can be, a byte array for bytes, else its repr (evidence, not the value)."""
    return {key: _writable(value) for key, value in headers.items()}


def _writable(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _writable(inner) for key, inner in value.items()}
    if isinstance(value, list):
        return [_writable(inner) for inner in value]
    if isinstance(value, bytes):
        return bytearray(value)
    try:
        encode.encode_table_value(value)
    except (TypeError, ValueError, OverflowError, struct.error):
        return repr(value)[:REPR_CHARACTERS]
    return value


def _timestamp(value: bytes) -> tuple[int, datetime | int]:
    """pamqp's timestamp, or the number sent where no ``datetime`` holds it (a header's value)."""
    try:
        return decode.timestamp(value)
    except (ValueError, OverflowError, OSError):
        if len(value) < 8:
            raise ValueError("Could not unpack timestamp value") from None
        return 8, int.from_bytes(value[:8], "big")


def _timestamp_property(value: bytes) -> tuple[int, datetime | None]:
    """The message's timestamp property: pamqp's, or none where no ``datetime`` holds it
    (aio-pika refuses anything but a date or None there, and the delivery would be lost to its
    consumer, unacked; Kabuto reads the envelope's ``created_at``, never this property)."""
    consumed, moment = _timestamp(value)
    return consumed, moment if isinstance(moment, datetime) else None


def _question_mark(error: UnicodeError) -> tuple[str, int]:
    assert isinstance(error, UnicodeDecodeError)
    return "?", error.end


codecs.register_error("kabuto-question-mark", _question_mark)


def _short_str(value: bytes) -> tuple[int, str]:
    """pamqp's short string, with ``?`` for each run of bytes that is not UTF-8: never longer, in
    UTF-8, than the 255 bytes it came in, so a dead letter can carry it again as its message id."""
    if not value:
        raise ValueError("Could not unpack short string value")
    length = value[0]
    return length + 1, value[1 : length + 1].decode("utf-8", errors="kabuto-question-mark")


def _field_table(value: bytes) -> tuple[int, common.FieldTable]:
    """pamqp's field table, its keys read as ``_short_str`` reads."""
    try:
        length = common.Struct.integer.unpack(value[0:4])[0]
    except struct.error as err:
        raise ValueError("Could not unpack data") from err
    offset, end, table = 4, 4 + length, {}
    if end > len(value):
        raise ValueError("Field table length exceeds available data")
    while offset < end:
        consumed, key = _short_str(value[offset:end])
        offset += consumed
        if offset > end:
            raise ValueError("Field table key length exceeds data")
        consumed, table[key] = decode.embedded_value(value[offset:])
        offset += consumed
    return end, table


def install() -> None:
    """Make pamqp read what it would fail the frame on (idempotent)."""
    decode.TABLE_MAPPING[b"T"] = _timestamp
    decode.TABLE_MAPPING[b"F"] = _field_table
    decode.METHODS["timestamp"] = _timestamp_property
    decode.METHODS["table"] = _field_table
    decode.METHODS["shortstr"] = _short_str
