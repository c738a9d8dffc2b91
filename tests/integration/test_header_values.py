"""Header values anyone on the network may publish must never stop an agent (docs/bad-input.md,
B95; broker/amqp_values.py). Found by an independent crash hunt (stop 33).

Each case is published straight to the messages exchange to the real issuer agent. It must be
dead-lettered with its reason code, change nothing, and leave the agent running: a valid
request published afterwards is processed. Headers travel outside every signature, and a dead
letter or a retry copy publishes the delivery's headers again as they were read: a double past
a 32-bit float's range, or a long string that is not UTF-8, could not be written back, and the
agent stopped; a timestamp no ``datetime`` holds failed the frame, and the consumer's connection
dropped at every redelivery. The bundle's own header and framing are covered too.
"""

from __future__ import annotations

import contextlib
import struct
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pamqp.encode
import pytest

from broker import bundle
from broker.consumer import Outcome
from broker.errors import Reason
from broker.pki import KeyStore
from broker.runtime import AgentRuntime
from broker.settings import Settings
from schemas.envelope import SIGNATURE_HEADER
from tests import support
from tests.integration.refusal_kit import expect_dead_letter


class Raw(bytes):
    """A header value written to the wire as these exact bytes (type tag included)."""


@contextlib.contextmanager
def raw_header_values() -> Iterator[None]:
    """While publishing, encode ``Raw`` header values verbatim: AMQP field types aio-pika never
    writes itself (a double, a long string that is not UTF-8, a timestamp past year 9999)."""
    original = pamqp.encode.encode_table_value

    def encode(value: Any) -> bytes:
        return bytes(value) if isinstance(value, Raw) else original(value)

    pamqp.encode.encode_table_value = encode
    try:
        yield
    finally:
        pamqp.encode.encode_table_value = original


def _valid(keys: KeyStore) -> tuple[bytes, dict[str, Any]]:
    sealed = support.sealed_request(keys.load_identity("alice"))
    return sealed.body, dict(sealed.headers)


def _unsigned(keys: KeyStore, **extra: Any) -> tuple[bytes, dict[str, Any]]:
    """A request without its signature (dead-lettered ``unsigned``), with ``extra`` headers."""
    body, headers = _valid(keys)
    headers.pop(SIGNATURE_HEADER)
    return body, {**headers, **extra}


async def still_running(settings: Settings, keys: KeyStore, runtime: AgentRuntime) -> None:
    """The agent did not stop: a valid request published now is processed."""
    assert not runtime.finished.is_set(), "the agent stopped"
    sealed = support.sealed_request(keys.load_identity("alice"))
    await support.publish_sealed(settings, sealed)
    settled = await runtime.outcomes.wait_for(sealed.envelope.message_id, timeout=20)
    assert settled.outcome is Outcome.PROCESSED, settled
    assert not runtime.finished.is_set(), "the agent stopped"


async def _dead_lettered(
    settings: Settings, keys: KeyStore, headers_of: Any, reason: Reason, raw: bool = False
) -> None:
    body, headers = headers_of(keys)
    async with support.agents(settings, "issuer") as rt:
        issuer = rt["issuer"]
        await support.open_offering(issuer)
        with raw_header_values() if raw else contextlib.nullcontext():
            await expect_dead_letter(settings, issuer, body, headers, reason)
        await still_running(settings, keys, issuer)


# -- header values of AMQP types whose decoding does not round-trip ---------------------------

HEADER_CASES: dict[str, tuple[dict[str, Any], bool]] = {
    # Negative decimals, which pamqp writes and reads back signed (regression).
    "negative_decimal": ({"x-note": Decimal(-1)}, False),
    "negative_decimal_in_a_table": ({"x-note": {"deep": [Decimal("-0.5")]}}, False),
    # A double ('d') is read as a float and written back as a 32-bit float ('f').
    "double_too_large_for_a_float": ({"x-note": Raw(b"d" + struct.pack(">d", 1e300))}, True),
    # A long string that is not UTF-8 is read as bytes, which pamqp cannot write ('Unknown type').
    "long_string_not_utf8": ({"x-note": Raw(b"S" + struct.pack(">I", 2) + b"\xff\xfe")}, True),
    # A timestamp whose value is past what datetime holds (read as milliseconds, still too large).
    "timestamp_past_year_9999": ({"x-note": Raw(b"T" + struct.pack(">Q", 2**63))}, True),
    # A nested table whose key is not UTF-8 failed the frame as the timestamp did.
    "table_key_not_utf8": ({"x-note": Raw(b"F" + struct.pack(">I", 3) + b"\x01\xfeV")}, True),
    # Void, bool, nested tables, arrays, byte arrays: these do round-trip (regression).
    "every_plain_type": (
        {
            "x-none": None,
            "x-bool": True,
            "x-int": -(2**63),
            "x-table": {"a": [1, "b", {"c": None}]},
            "x-bytes": bytearray(b"\x00\xff"),
            "x-float": 1.5,
            "x-decimal": Decimal("12.34"),
        },
        False,
    ),
}


@pytest.mark.parametrize("case", HEADER_CASES, ids=list(HEADER_CASES))
async def test_a_refused_delivery_with_odd_header_values_is_dead_lettered(
    settings: Settings, keys: KeyStore, case: str
) -> None:
    extra, raw = HEADER_CASES[case]
    await _dead_lettered(settings, keys, lambda k: _unsigned(k, **extra), Reason.UNSIGNED, raw=raw)


async def test_signature_header_not_utf8_is_unsigned(settings: Settings, keys: KeyStore) -> None:
    """The signature header itself a long string of bytes that are not UTF-8."""

    def build(k: KeyStore) -> tuple[bytes, dict[str, Any]]:
        body, headers = _valid(k)
        headers[SIGNATURE_HEADER] = Raw(b"S" + struct.pack(">I", 3) + b"\xff\x00\xfe")
        return body, headers

    await _dead_lettered(settings, keys, build, Reason.UNSIGNED, raw=True)


async def test_headers_of_many_entries_not_counted_as_text(settings: Settings, keys: KeyStore) -> None:
    """Thousands of integer headers: not text, so not counted by the size check; still refused."""
    extra = {f"x-{i}": i for i in range(4000)}
    await _dead_lettered(settings, keys, lambda k: _unsigned(k, **extra), Reason.UNSIGNED)


async def test_headers_near_the_frame_limit_are_dead_lettered(settings: Settings, keys: KeyStore) -> None:
    """Headers just under the broker's frame size: refused as too large; the dead letter adds its
    own headers to them and must still be published."""
    extra = {"x-padding": "p" * 129_000}

    def build(k: KeyStore) -> tuple[bytes, dict[str, Any]]:
        body, headers = _valid(k)
        return body, {**headers, **extra}

    await _dead_lettered(settings, keys, build, Reason.MESSAGE_TOO_LARGE)


async def test_headers_near_the_frame_limit_in_a_list_are_dead_lettered(settings: Settings, keys: KeyStore) -> None:
    """The same in a list of strings: not counted by the size check, so refused for its signature."""
    extra = {"x-padding": ["p" * 1000] * 128}
    await _dead_lettered(settings, keys, lambda k: _unsigned(k, **extra), Reason.UNSIGNED)


# -- bundles ------------------------------------------------------------------------------------


def _item(keys: KeyStore, **headers: str) -> bundle.Item:
    sealed = support.sealed_request(keys.load_identity("alice"))
    return bundle.Item(
        str(sealed.envelope.message_id), sealed.envelope.type, {**sealed.headers, **headers}, sealed.body
    )


async def _bundle_refused(
    settings: Settings, keys: KeyStore, body: bytes, headers: dict[str, Any], reason: Reason, raw: bool = False
) -> None:
    async with support.agents(settings, "issuer") as rt:
        issuer = rt["issuer"]
        await support.open_offering(issuer)
        mid = f"bundle-{time.monotonic_ns()}"
        with raw_header_values() if raw else contextlib.nullcontext():
            await support.publish_bundle(settings, body, headers, message_id=mid)
        settled = await issuer.outcomes.wait(lambda s: s.outcome is Outcome.DEAD_LETTERED, timeout=20)
        assert settled.reason is reason, settled
        dead = await support.dead_letter(settings, "issuer")
        assert dead.headers["x-kabuto-reason"] == reason.value
        await still_running(settings, keys, issuer)


BUNDLE_HEADER_CASES: dict[str, tuple[Any, bool]] = {
    "items_header_an_int": (7, False),
    "items_header_a_list": (["a", "b"], False),
    "items_header_a_table": ({"a": 1}, False),
    "items_header_empty": ("", False),
    "items_header_negative_decimal": (Decimal(-3), False),
    "items_header_not_utf8": (Raw(b"S" + struct.pack(">I", 1) + b"\xff"), True),
}


@pytest.mark.parametrize("case", BUNDLE_HEADER_CASES, ids=list(BUNDLE_HEADER_CASES))
async def test_bundle_items_header_of_odd_types(settings: Settings, keys: KeyStore, case: str) -> None:
    value, raw = BUNDLE_HEADER_CASES[case]
    body = bundle.pack([_item(keys)])
    await _bundle_refused(settings, keys, body, {bundle.ITEMS_HEADER: value}, Reason.BUNDLE_MALFORMED, raw=raw)


async def test_bundle_with_a_negative_decimal_carrier_header_and_a_bad_item(settings: Settings, keys: KeyStore) -> None:
    """A well-formed bundle whose one item is unsigned; the carrier has a header that does not
    round-trip. The item's dead letter carries its own headers, so it must go through."""
    item = _item(keys)
    item = bundle.Item(
        item.message_id, item.type, {k: v for k, v in item.headers.items() if k != SIGNATURE_HEADER}, item.body
    )
    # An item without signature makes the bundle packed: no seal → dead-lettered whole, carrier headers.
    body = bundle.pack([item])
    await _bundle_refused(settings, keys, body, {"x-note": Decimal(-1)}, Reason.UNSIGNED)


async def test_bundle_with_duplicate_item_ids(settings: Settings, keys: KeyStore) -> None:
    """The same signed item twice in one bundle: one is processed, the other absorbed; the agent
    keeps running."""
    item = _item(keys)
    async with support.agents(settings, "issuer") as rt:
        issuer = rt["issuer"]
        await support.open_offering(issuer)
        await support.publish_bundle(settings, bundle.pack([item, item]))
        found = await issuer.outcomes.wait_count(lambda s: s.message_id == item.message_id, 2, timeout=20)
        assert sorted(s.outcome for s in found) == sorted([Outcome.PROCESSED, Outcome.DUPLICATE]), found
        await still_running(settings, keys, issuer)
