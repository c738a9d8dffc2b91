"""The bad-input catalogue, part 1: deliveries no agent may process (docs/bad-input.md, B01–B24, B70, B94).

Each case is published straight to the messages exchange, as any client on the network
could, to the real issuer agent with an offering open. Each is dead-lettered with its reason
code and leaves every table of the issuer's schema as it was (``refusal_kit``).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.consumer import Outcome
from broker.envelope import seal, sign_headers
from broker.errors import Reason
from broker.pki import Identity, KeyStore, default_participant
from broker.settings import Settings
from schemas.envelope import CERTIFICATE_HEADER, SIGNATURE_HEADER, SIGNER_HEADER
from schemas.identity import Role
from schemas.lifecycle import HoldingsInquiry
from tests import support
from tests.integration.refusal_kit import expect_dead_letter, state

Delivery = tuple[bytes, dict[str, Any]]
Build = Callable[[KeyStore], Delivery]


def _alice(keys: KeyStore) -> Identity:
    return keys.load_identity("alice")


def _valid(keys: KeyStore) -> Delivery:
    sealed = support.sealed_request(_alice(keys))
    return sealed.body, dict(sealed.headers)


def _resigned(change: Callable[[dict[str, Any]], None], signer: str = "alice") -> Build:
    """A valid request's envelope changed by hand and correctly signed again by ``signer``."""

    def build(keys: KeyStore) -> Delivery:
        identity = keys.load_identity(signer)
        envelope = json.loads(support.sealed_request(_alice(keys)).body)
        change(envelope)
        body = json.dumps(envelope).encode()
        return body, sign_headers(identity, body)

    return build


def _payload(**changes: Any) -> Build:
    return _resigned(lambda env: env["payload"].update(changes))


def _signed_raw(body: bytes) -> Build:
    return lambda keys: (body, sign_headers(_alice(keys), body))


def _reencoded(encode: Callable[[str], bytes], value: object = "Tokyo", raw: str | None = None) -> Build:
    """A valid request whose holder address is ``value`` (or the JSON text ``raw``), its envelope
    written out by ``encode`` and signed as those bytes (B94)."""

    def build(keys: KeyStore) -> Delivery:
        envelope = json.loads(support.sealed_request(_alice(keys)).body)
        envelope["payload"]["holder_address"] = "PLACE" if raw is not None else value
        text = json.dumps(envelope)
        body = encode(text.replace('"PLACE"', raw) if raw is not None else text)
        return body, sign_headers(_alice(keys), body)

    return build


def _utf8(text: str) -> bytes:
    return text.encode()


def _oversize_body(keys: KeyStore) -> Delivery:
    """5 MB, correctly signed: refused on its size alone, before the signature is checked."""
    envelope = json.loads(support.sealed_request(_alice(keys)).body)
    envelope["payload"]["holder_address"] = "x" * 5_000_000
    body = json.dumps(envelope).encode()
    return body, sign_headers(_alice(keys), body)


def _oversize_headers(keys: KeyStore) -> Delivery:
    body, headers = _valid(keys)
    return body, {**headers, "x-padding": "p" * 20_000}


def _without(header: str) -> Build:
    def build(keys: KeyStore) -> Delivery:
        body, headers = _valid(keys)
        return body, {k: v for k, v in headers.items() if k != header}

    return build


def _with_header(header: str, value: Callable[[KeyStore], str]) -> Build:
    def build(keys: KeyStore) -> Delivery:
        body, headers = _valid(keys)
        return body, {**headers, header: value(keys)}

    return build


def _bobs_certificate(keys: KeyStore) -> str:
    return base64.b64encode(keys.load_identity("bob").certificate_der).decode()


def _garbage_certificate(keys: KeyStore) -> Delivery:
    """An attachment whose fingerprint matches the signer header but which is not X.509."""
    garbage = b"\x30\x03\x02\x01\x01"
    body, headers = _valid(keys)
    headers[SIGNER_HEADER] = hashlib.sha256(garbage).hexdigest()
    headers[CERTIFICATE_HEADER] = base64.b64encode(garbage).decode()
    return body, headers


def _not_yet_valid(keys: KeyStore) -> Delivery:
    now = datetime.now(UTC)
    participant = default_participant("alice", Role.INVESTOR)
    key = Ed25519PrivateKey.generate()
    certificate = keys.load_ca().issue(
        participant, key.public_key(), not_before=now + timedelta(days=1), not_after=now + timedelta(days=30)
    )
    sealed = support.sealed_request(Identity(participant, key, certificate))
    return sealed.body, dict(sealed.headers)


def _signed_by_the_ca(keys: KeyStore) -> Delivery:
    """The CA's own certificate used as a message signer: a CA certificate never signs messages."""
    ca = keys.load_ca()
    participant = default_participant("alice", Role.INVESTOR)
    sealed = support.sealed_request(Identity(participant, ca.private_key, ca.certificate))
    return sealed.body, dict(sealed.headers)


def _other_signer_field(keys: KeyStore) -> Delivery:
    bob_fingerprint = keys.load_identity("bob").fingerprint
    return _resigned(lambda env: env.update(signer=bob_fingerprint))(keys)


def _sent_to(recipient: str | None) -> Build:
    return _resigned(lambda env: env.update(recipient=recipient))


def _order_to_the_issuer(keys: KeyStore) -> Delivery:
    """An exchange message type (order.submit) addressed to the issuer: right envelope, wrong agent."""
    from schemas.certificates import ShareClass
    from schemas.trading import OrderTerms, OrderType, Side, SubmitOrder

    order = SubmitOrder(
        client_order_id="wrong-agent",
        user_id="alice",
        issue_code=support.ISSUE,
        share_class=ShareClass.COMMON,
        terms=OrderTerms(side=Side.BUY, order_type=OrderType.LIMIT, price=1000, quantity=100),
        settlement_account=support.box("alice-cash"),
        holder_name="Alice",
        holder_address="1-1 Kabuto-cho, Tokyo",
    )
    sealed = seal(_alice(keys), order, recipient="issuer", now=datetime.now(UTC))
    return sealed.body, dict(sealed.headers)


CASES: dict[str, tuple[Build, Reason]] = {
    "B01_oversize_body_5mb": (_oversize_body, Reason.MESSAGE_TOO_LARGE),
    "B02_oversize_headers": (_oversize_headers, Reason.MESSAGE_TOO_LARGE),
    "B03_no_signature_header": (_without(SIGNATURE_HEADER), Reason.UNSIGNED),
    "B04_no_signer_header": (_without(SIGNER_HEADER), Reason.UNSIGNED),
    "B05_signature_not_base64": (_with_header(SIGNATURE_HEADER, lambda _: "%%not base64%%"), Reason.UNSIGNED),
    "B06_attached_certificate_of_another": (
        _with_header(CERTIFICATE_HEADER, _bobs_certificate),
        Reason.CERTIFICATE_INVALID,
    ),
    "B07_attached_certificate_not_x509": (_garbage_certificate, Reason.CERTIFICATE_INVALID),
    "B08_certificate_not_yet_valid": (_not_yet_valid, Reason.CERTIFICATE_NOT_YET_VALID),
    "B09_ca_certificate_as_signer": (_signed_by_the_ca, Reason.CERTIFICATE_INVALID),
    "B10_body_not_utf8": (_signed_raw(b"\xff\xfe\x00{not json"), Reason.MALFORMED_JSON),
    "B11_body_a_json_array": (_signed_raw(b"[1, 2, 3]"), Reason.ENVELOPE_INVALID),
    "B12_envelope_extra_field": (_resigned(lambda env: env.update(admin=True)), Reason.ENVELOPE_INVALID),
    "B13_envelope_without_message_id": (_resigned(lambda env: env.pop("message_id")), Reason.ENVELOPE_INVALID),
    "B14_envelope_names_another_signer": (_other_signer_field, Reason.SENDER_MISMATCH),
    "B15_sender_claims_another_participant": (
        _resigned(lambda env: env.update(sender="bob")),
        Reason.SENDER_MISMATCH,
    ),
    "B16_wrong_recipient": (_sent_to("exchange"), Reason.MISROUTED),
    "B17_event_sent_point_to_point": (_sent_to(None), Reason.MISROUTED),
    "B18_message_type_for_another_agent": (_order_to_the_issuer, Reason.SENDER_NOT_AUTHORIZED),
    "B19_unknown_version": (_resigned(lambda env: env.update(version=99)), Reason.UNKNOWN_MESSAGE_TYPE),
    "B20_zero_shares": (_payload(shares=0), Reason.SCHEMA_VIOLATION),
    "B21_huge_shares": (_payload(shares=10**30), Reason.SCHEMA_VIOLATION),
    "B22_shares_as_text": (_payload(shares="500; DROP TABLE register"), Reason.SCHEMA_VIOLATION),
    "B23_malformed_issue_code": (_payload(issue_code="kbt'--"), Reason.SCHEMA_VIOLATION),
    # B94: bodies that are not plain UTF-8 JSON. Before stop 33 the first four were read (a UTF-16
    # body's escaped NUL unseen by the check made on the bytes), and each of the last two failed the
    # consumer and stopped the agent (RecursionError, ValueError: not a refusal).
    "B94a_body_utf16_hiding_a_nul": (
        _reencoded(lambda text: text.encode("utf-16"), "Tokyo\x00 Chiyoda"),
        Reason.MALFORMED_JSON,
    ),
    "B94b_body_utf32": (_reencoded(lambda text: text.encode("utf-32")), Reason.MALFORMED_JSON),
    "B94c_body_after_a_utf8_bom": (_reencoded(lambda text: b"\xef\xbb\xbf" + text.encode()), Reason.MALFORMED_JSON),
    "B94d_lone_surrogate": (_reencoded(_utf8, "\ud800"), Reason.MALFORMED_JSON),
    "B94e_nested_1000_deep": (_reencoded(_utf8, raw="[" * 1000 + "]" * 1000), Reason.MALFORMED_JSON),
    "B94f_integer_of_5000_digits": (_reencoded(_utf8, raw="9" * 5000), Reason.MALFORMED_JSON),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
async def test_bad_delivery_is_dead_lettered_with_its_reason_and_changes_nothing(
    settings: Settings, keys: KeyStore, case: str
) -> None:
    build, reason = CASES[case]
    body, headers = build(keys)
    async with support.agents(settings, "issuer") as rt:
        await support.open_offering(rt["issuer"])
        await expect_dead_letter(settings, rt["issuer"], body, headers, reason)


async def test_oversize_dead_letter_keeps_evidence_not_the_whole_body(settings: Settings, keys: KeyStore) -> None:
    body, headers = _oversize_body(keys)
    async with support.agents(settings, "issuer") as rt:
        await support.open_offering(rt["issuer"])
        await support.publish(settings, body, headers, "issuer")
        dead = await support.dead_letter(settings, "issuer")
    assert dead.headers["x-kabuto-reason"] == Reason.MESSAGE_TOO_LARGE.value
    assert dead.headers["x-kabuto-original-size"] == len(body)
    assert dead.body == body[: len(dead.body)] and len(dead.body) <= 4096


async def test_smaller_configured_maximum_refuses_what_the_default_accepts(settings: Settings, keys: KeyStore) -> None:
    sealed = support.sealed_request(_alice(keys))
    tight = settings.with_(max_message_bytes=len(sealed.body) - 1)
    async with support.agents(tight, "issuer") as rt:
        await support.open_offering(rt["issuer"])
        await expect_dead_letter(tight, rt["issuer"], sealed.body, sealed.headers, Reason.MESSAGE_TOO_LARGE)


async def test_B24_cross_type_replay_same_id_other_type_is_refused(settings: Settings, keys: KeyStore) -> None:
    """B24: a processed request's id reused for another message type is a replay, not a new message."""
    alice = _alice(keys)
    async with support.agents(settings, "issuer") as rt:
        issuer = rt["issuer"]
        await support.open_offering(issuer)
        first = support.sealed_request(alice)
        await support.publish_sealed(settings, first)
        assert (await issuer.outcomes.wait_for(first.envelope.message_id)).outcome is Outcome.PROCESSED
        other_type = seal(
            alice,
            HoldingsInquiry(user_id="alice"),
            recipient="issuer",
            now=datetime.now(UTC),
            message_id=first.envelope.message_id,
        )
        before = await state(issuer)
        await support.publish_sealed(settings, other_type)
        dead = await support.dead_letter(settings, "issuer")
        assert dead.headers["x-kabuto-reason"] == Reason.REPLAYED_MESSAGE_ID.value
        assert dead.body == other_type.body
        assert await state(issuer) == before


def test_the_catalogue_ids_are_unique_and_numbered() -> None:
    numbers = [case.split("_")[0] for case in CASES]
    assert numbers == sorted(set(numbers)) and numbers[0] == "B01"


async def test_B70_new_work_sent_to_the_answers_queue_is_misrouted(settings: Settings, keys: KeyStore) -> None:
    """B70: the answers queue is taken ahead of the inbox, so a request published under
    ``<id>.answers`` would jump the queue; it is refused, and the same request through the
    inbox is processed."""
    body, headers = _valid(keys)
    async with support.agents(settings, "issuer") as rt:
        await support.open_offering(rt["issuer"])
        await expect_dead_letter(settings, rt["issuer"], body, headers, Reason.MISROUTED, routing_key="issuer.answers")
