"""Bytes on the wire: ``bytes`` in Python, standard base64 text in JSON.

Python code passes raw bytes; JSON input must be strict base64, so a stray character is a
validation error rather than silently dropped.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any

from pydantic import PlainSerializer, PlainValidator, WithJsonSchema


def _from_wire(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError("not standard base64") from exc
    raise ValueError("expected base64 text")


Binary = Annotated[
    bytes,
    PlainValidator(_from_wire),
    PlainSerializer(lambda b: base64.b64encode(b).decode(), return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "contentEncoding": "base64"}),
]
