"""A property-based fuzzer for the consumer: mutated deliveries never crash it, never change
state, and always end with a reason (issue 13, docs/bad-input.md).

Each example starts from a valid, signed issuance request with a fresh message id and
mutates it: bit flips, truncation, removed or altered headers, or a JSON mutation of the
envelope that is either re-signed by the sender (a well-signed message with bad content)
or sent under the old signature. It is published to the real issuer agent on the real
broker and database.

The oracle is ``open_delivery`` run here with the agent's own trust: if it refuses the
delivery, the agent must dead-letter it with the same reason and leave every table as it
was; if it accepts it (a mutation can produce a valid request), the agent must process it
or refuse it with a business reason — never retry it, never crash.

Examples per run: the ``kabuto-fuzz`` profile (200) unless ``KABUTO_FUZZ_PROFILE`` names
another (``kabuto-fuzz-long``: 5,000) or ``KABUTO_FUZZ_EXAMPLES`` sets the count.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest
from hypothesis import HealthCheck, event, example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from broker.consumer import Outcome
from broker.envelope import Freshness, open_delivery, sign_headers
from broker.errors import Reason, Rejected
from broker.pki import KeyStore
from broker.runtime import AgentRuntime
from broker.settings import Settings
from broker.trust import TrustStore
from schemas.envelope import CERTIFICATE_HEADER, SIGNATURE_HEADER, SIGNER_HEADER
from schemas.identity import Role
from schemas.issuance import CertificateIssuanceRequest
from tests import support
from tests.integration.refusal_kit import state

_HEALTH = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large]
hypothesis_settings.register_profile(
    "kabuto-fuzz",
    max_examples=int(os.environ.get("KABUTO_FUZZ_EXAMPLES", "200")),
    deadline=None,
    suppress_health_check=_HEALTH,
)
hypothesis_settings.register_profile(
    "kabuto-fuzz-long", max_examples=5_000, deadline=None, suppress_health_check=_HEALTH
)
FUZZ = hypothesis_settings.get_profile(os.environ.get("KABUTO_FUZZ_PROFILE", "kabuto-fuzz"))

HEADERS = (SIGNATURE_HEADER, SIGNER_HEADER, CERTIFICATE_HEADER)
JSON_LEAF = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.text(max_size=40),
    st.sampled_from(["", "0", "-1", "NaN", "1e400", "alice", "bob", "issuer", "KBT", "1999-11-11", str(uuid4())]),
)
JSON_VALUE = st.recursive(
    JSON_LEAF,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)


# --- mutations: each is a plan applied to a fresh valid delivery ---------------------------

Plan = tuple[str, Any]

bit_flips = st.tuples(st.just("flip"), st.lists(st.integers(min_value=0, max_value=10**6), min_size=1, max_size=8))
truncation = st.tuples(st.just("truncate"), st.integers(min_value=0, max_value=10**6))
header_removal = st.tuples(st.just("drop"), st.sets(st.sampled_from(HEADERS), min_size=1))
header_change = st.tuples(
    st.just("header"),
    st.tuples(
        st.sampled_from(HEADERS),
        # what an AMQP header table can carry (the client library refuses bytes and wider integers)
        st.one_of(st.text(max_size=100), st.integers(min_value=-(2**63), max_value=2**63 - 1), st.booleans()),
    ),
)
json_change = st.tuples(
    st.just("json"),
    st.tuples(
        st.lists(
            st.sampled_from(
                [
                    "payload",
                    "dividend_delivery",
                    "shares",
                    "type",
                    "version",
                    "sender",
                    "recipient",
                    "created_at",
                    "message_id",
                    "signer",
                    "issue_code",
                    "holder_name",
                    "x",
                ]
            ),
            min_size=1,
            max_size=3,
        ),
        st.one_of(st.just("<delete>"), JSON_VALUE),
        st.booleans(),  # re-signed by the sender, or sent under the old signature
    ),
)
# A well-signed request whose content is bad: the payload's own fields, re-signed by the sender.
payload_change = st.tuples(
    st.just("json"),
    st.tuples(
        st.tuples(st.just("payload"), st.sampled_from([*sorted(CertificateIssuanceRequest.model_fields), "extra"])).map(
            list
        ),
        st.one_of(st.just("<delete>"), JSON_VALUE),
        st.just(True),
    ),
)
PLANS = st.one_of(bit_flips, truncation, header_removal, header_change, json_change, payload_change)


def mutate(body: bytes, headers: dict[str, Any], plan: Plan, keys: KeyStore) -> tuple[bytes, dict[str, Any]]:
    kind, arg = plan
    if kind == "flip":
        data = bytearray(body)
        for position in arg:
            bit = position % (len(data) * 8)
            data[bit // 8] ^= 1 << (bit % 8)
        return bytes(data), headers
    if kind == "truncate":
        return body[: arg % max(len(body), 1)], headers
    if kind == "drop":
        return body, {k: v for k, v in headers.items() if k not in arg}
    if kind == "header":
        name, value = arg
        return body, {**headers, name: value}
    path, value, resign = arg
    envelope = json.loads(body)
    _set(envelope, path, value)
    mutated = json.dumps(envelope).encode()
    return mutated, sign_headers(keys.load_identity("alice"), mutated) if resign else headers


def _set(document: dict[str, Any], path: list[str], value: Any) -> None:
    """Set (or delete) the value at ``path``, descending only through existing objects."""
    node: Any = document
    for key in path[:-1]:
        if not isinstance(node.get(key), dict):
            break
        node = node[key]
    if value == "<delete>":
        node.pop(path[-1], None)
    else:
        node[path[-1]] = value


def oracle(body: bytes, headers: dict[str, Any], trust: TrustStore, runtime: AgentRuntime) -> Reason | None:
    """The reason the receiver's checks give, or None when the delivery is a valid request."""
    try:
        opened = open_delivery(
            body,
            headers,
            trust=trust,
            hosted={"issuer": Role.ISSUER},
            freshness=Freshness(runtime.settings.max_message_age, runtime.settings.max_clock_skew),
            now=datetime.now(UTC),
        )
    except Rejected as rejected:
        return rejected.reason
    if type(opened.message) not in runtime.definition.handlers:
        return Reason.UNKNOWN_MESSAGE_TYPE
    return None


@pytest.fixture
async def fuzz_issuer(settings: Settings) -> AsyncIterator[AgentRuntime]:
    """One issuer agent with an offering open, shared by every example of a run."""
    async with support.agents(settings, "issuer") as rt:
        await support.open_offering(rt["issuer"], support.offering(shares_offered=10**9, shares_remaining=10**9))
        yield rt["issuer"]


@hypothesis_settings(FUZZ)
@given(plan=PLANS)
@example(plan=("json", (["payload", "holder_address"], "\x00", True)))  # a NUL: schema-valid, not storable
async def test_mutated_delivery_never_crashes_never_changes_state_and_always_has_a_reason(
    fuzz_issuer: AgentRuntime, keys: KeyStore, plan: Plan
) -> None:
    issuer = fuzz_issuer
    sealed = support.sealed_request(keys.load_identity("alice"))
    body, headers = mutate(sealed.body, dict(sealed.headers), plan, keys)
    expected = oracle(body, headers, issuer.trust, issuer)
    if expected is Reason.STALE_MESSAGE or _near_the_freshness_edge(body):
        return  # the agent's clock is a moment later: at the edge the two honestly differ
    before = await state(issuer)
    delivery_id = str(uuid4())
    await support.publish(issuer.settings, body, headers, "issuer", delivery_id)
    # A processed delivery is recorded under its envelope's id, a refused one under the AMQP id.
    ids = {delivery_id, _envelope_id(body)}
    settled = await issuer.outcomes.wait(lambda s: s.message_id in ids, timeout=20)
    event(f"{plan[0]}: {settled.reason or settled.outcome}")  # --hypothesis-show-statistics
    assert settled.outcome is not Outcome.RETRY_SCHEDULED, settled
    if expected is None:
        assert settled.outcome in (Outcome.PROCESSED, Outcome.DUPLICATE), settled
        return
    assert (settled.outcome, settled.reason) == (Outcome.DEAD_LETTERED, expected), (plan, settled)
    assert await state(issuer) == before


def _envelope_id(body: bytes) -> str:
    try:
        return str(json.loads(body)["message_id"])
    except (ValueError, KeyError, TypeError):
        return ""


def _near_the_freshness_edge(body: bytes) -> bool:
    try:
        created = datetime.fromisoformat(json.loads(body)["created_at"])
    except (ValueError, KeyError, TypeError, AttributeError):
        return False
    if created.tzinfo is None:
        return False
    age = datetime.now(UTC) - created
    edges = (timedelta(hours=24), -timedelta(seconds=30))
    return any(abs(age - edge) < timedelta(seconds=5) for edge in edges)
