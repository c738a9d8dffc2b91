"""Correctly signed messages from an enrolled investor whose *payload* is at an edge the schemas
do not bound (docs/bad-input.md, B96–B97; found by an independent payload hunt, stop 33).

Each test asserts what the catalogue promises: a dead letter with a specific reason, or a
business refusal with a reason, nothing stored that should not be, and the agent still processing
a good message afterwards. B96: a sealed order account that opens to text that is no account id
(a NUL) was dead-lettered at settlement as ``data_invalid``, so the exchange never had the cover's
answer and the buy order none either; it is now refused as a box that does not open. B97: a split
into more certificates than one answer can carry. The bigint edges held and are kept.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from uuid import UUID

import pytest

from broker.consumer import Outcome, Settled
from broker.envelope import seal
from broker.errors import Reason
from broker.pki import KeyStore
from broker.runtime import AgentRuntime
from broker.settings import Settings
from schemas.dvp import CancelInstruction, PresentTradeNotice
from schemas.identity import EXCHANGE_ID, SETTLEMENT_ID
from schemas.lifecycle import ReissueKind, ReissueRequest
from schemas.trading import OrderStatusRequest, Side
from tests import support
from tests.integration.refusal_kit import state
from tests.integration.test_sealed_accounts import _buy
from tests.integration.test_trading_paths import sent

BIGINT_PAST = 2**63  # one past PostgreSQL's bigint


def _not_retried(settled: Settled) -> bool:
    return settled.outcome is not Outcome.RETRY_SCHEDULED


# --- a buy order whose sealed account opens to text that is no account id ----------------------

ACCOUNT_TEXTS = {
    "nul_inside": "bob\x00cash",
    "empty": "",
    "newline_after": "bob-cash\n",
    "one_thousand_chars": "b" * 1000,
}


@pytest.mark.parametrize("text", ACCOUNT_TEXTS.values(), ids=ACCOUNT_TEXTS.keys())
async def test_buy_whose_account_box_opens_to_no_account_id_is_refused_not_dead_lettered(
    settings: Settings, keys: KeyStore, text: str
) -> None:
    """The box opens with settlement's key, but what it holds is not an account id. Settlement
    must answer the exchange's cover request (refused, with a reason) so the exchange can reject
    the order; a dead letter at settlement leaves the exchange waiting for a cover answer forever."""
    async with support.agents(settings, "exchange", "settlement") as rt:
        await support.list_issue(rt["exchange"])
        await support.fund(rt["settlement"], "bob", Decimal(1_000_000))
        before = await state(rt["settlement"])
        order = _buy(keys, support.account_box(keys, "bob", text))
        await support.publish_sealed(settings, order)
        settled = await rt["settlement"].outcomes.wait(lambda s: s.type == "settlement.cover.request")
        assert settled.outcome is Outcome.PROCESSED, settled
        await rt["exchange"].outcomes.wait(lambda s: s.type == "settlement.cover.refused")
        [refusal] = await sent(rt["exchange"], "order.rejected", order.envelope.message_id)
        assert refusal["reason"] in {"sealed_field_invalid", "unknown_account"}, refusal
        assert await support.rows(rt["exchange"], "SELECT * FROM orders") == []
        after = await state(rt["settlement"])
        assert after.without("inbox", "outbox") == before.without("inbox", "outbox")
        # settlement still covers a good order afterwards
        good = _buy(keys, support.account_box(keys, "bob", "bob-cash"), coid="b2")
        await support.publish_sealed(settings, good)
        await rt["exchange"].outcomes.wait(lambda s: s.type == "settlement.cover.granted")


# --- integers past bigint in requests an investor may send -------------------------------------


async def test_bigint_edges_at_settlement_are_refused_without_retries(settings: Settings, keys: KeyStore) -> None:
    alice = keys.load_identity("alice")
    now = datetime.now(UTC)
    requests = [
        CancelInstruction(instruction=BIGINT_PAST),
        PresentTradeNotice(
            matching_number=BIGINT_PAST,
            side=Side.BUY,
            issue_code=support.ISSUE,
            quantity=10**30,
            price=Decimal("1E+15"),
            amount=Decimal("-0"),
        ),
    ]
    async with support.agents(settings, "settlement") as rt:
        runtime = rt["settlement"]
        before = await state(runtime)
        for request in requests:
            sealed = seal(alice, request, recipient=SETTLEMENT_ID, now=now)
            await support.publish_sealed(settings, sealed)
            settled = await runtime.outcomes.wait(
                lambda s, m=str(sealed.envelope.message_id): s.message_id == m and _not_retried(s)
            )
            assert (settled.outcome, settled.reason) in {
                (Outcome.PROCESSED, None),
                (Outcome.DEAD_LETTERED, Reason.SCHEMA_VIOLATION),
                (Outcome.DEAD_LETTERED, Reason.DATA_INVALID),
            }, settled
        assert runtime.outcomes.count(Outcome.RETRY_SCHEDULED) == 0
        after = await state(runtime)
        assert after.without("inbox", "outbox") == before.without("inbox", "outbox")
        good = seal(alice, CancelInstruction(instruction=1), recipient=SETTLEMENT_ID, now=datetime.now(UTC))
        await support.publish_sealed(settings, good)
        assert (await runtime.outcomes.wait_for(str(good.envelope.message_id))).outcome is Outcome.PROCESSED


async def test_order_status_request_past_bigint_is_answered_not_found(settings: Settings, keys: KeyStore) -> None:
    alice = keys.load_identity("alice")
    async with support.agents(settings, "exchange") as rt:
        runtime = rt["exchange"]
        request = OrderStatusRequest(acceptance_number=BIGINT_PAST)
        sealed = seal(alice, request, recipient=EXCHANGE_ID, now=datetime.now(UTC))
        await support.publish_sealed(settings, sealed)
        settled = await runtime.outcomes.wait(
            lambda s: s.message_id == str(sealed.envelope.message_id) and _not_retried(s)
        )
        assert (settled.outcome, settled.reason) in {
            (Outcome.PROCESSED, None),
            (Outcome.DEAD_LETTERED, Reason.SCHEMA_VIOLATION),
            (Outcome.DEAD_LETTERED, Reason.DATA_INVALID),
        }, settled


# --- a split into more parts than any answer can carry -----------------------------------------


async def alices_certificate_of_1000(settings: Settings, keys: KeyStore, issuer: AgentRuntime) -> UUID:
    """A 1,000-share certificate issued to alice; its CertID."""
    issued = support.sealed_request(keys.load_identity("alice"), shares=1000)
    await support.publish_sealed(settings, issued)
    assert (await issuer.outcomes.wait_for(str(issued.envelope.message_id))).outcome is Outcome.PROCESSED
    [record] = await support.rows(issuer, "SELECT cert_id FROM register WHERE holder_user_id = 'alice'")
    cert_id: UUID = record["cert_id"]
    return cert_id


async def split(
    settings: Settings, keys: KeyStore, issuer: AgentRuntime, cert_id: UUID, parts: tuple[int, ...]
) -> Settled:
    """Alice asks for ``cert_id`` split into ``parts``; what the issuer did with the request."""
    request = ReissueRequest(user_id="alice", kind=ReissueKind.SPLIT, cert_ids=(cert_id,), split_into=parts)
    sealed = seal(keys.load_identity("alice"), request, recipient="issuer", now=datetime.now(UTC))
    await support.publish_sealed(settings, sealed)
    return await issuer.outcomes.wait_for(str(sealed.envelope.message_id), timeout=120)


@pytest.mark.parametrize(("parts", "answered"), [(101, "certificate.reissue_refused"), (100, "certificate.reissued")])
async def test_split_into_more_certificates_than_one_answer_carries_is_refused(
    settings: Settings, keys: KeyStore, parts: int, answered: str
) -> None:
    """B97: ``split_into`` was released with no bound on its length. Splitting a 1,000-share
    certificate into 1,000 one-share certificates made the issuer retire the old one, register
    1,000 new ones and answer with 1,000 signed certificates (about 1.5 KB each) in one message,
    past the 1 MiB every agent accepts: the holder's agent dead-lettered the answer as
    ``message_too_large`` while the register had changed. A split makes at most 100 certificates
    (as many as a merge may name): past that it is refused as ``bad_request`` and the register
    is left as it was."""
    async with support.agents(settings, "issuer") as rt:
        issuer = rt["issuer"]
        await support.open_offering(issuer)
        cert_id = await alices_certificate_of_1000(settings, keys, issuer)
        shares = (1000 // parts,) * (parts - 1)
        settled = await split(settings, keys, issuer, cert_id, (*shares, 1000 - sum(shares)))
        assert settled.outcome is Outcome.PROCESSED, settled
        [answer] = await support.rows(
            issuer,
            "SELECT message_type, body FROM outbox_messages WHERE message_type LIKE 'certificate.reissue%'",
        )
        assert answer["message_type"] == answered
        valid = await support.rows(issuer, "SELECT cert_id FROM register WHERE status = 'valid'")
        if answered == "certificate.reissue_refused":
            refusal = json.loads(answer["body"])["payload"]
            assert refusal["reason"] == "bad_request" and "at most 100 certificates" in refusal["detail"]
            assert valid == [{"cert_id": cert_id}]
        else:
            assert len(answer["body"]) < settings.max_message_bytes // 2 and len(valid) == parts


async def test_an_answer_larger_than_any_agent_accepts_fails_its_handler_and_changes_nothing(
    settings: Settings, keys: KeyStore
) -> None:
    """B98: nothing a handler emits may be larger than ``KABUTO_MAX_MESSAGE_BYTES``: its recipient
    would dead-letter it (or the broker refuse it) after the handler's changes had committed. With
    a limit of 100 KB, a split into 100 certificates (its answer about 155 KB) is dead-lettered as
    ``data_invalid`` and the register is left as it was."""
    tight = settings.with_(max_message_bytes=100_000)
    async with support.agents(tight, "issuer") as rt:
        issuer = rt["issuer"]
        await support.open_offering(issuer)
        cert_id = await alices_certificate_of_1000(tight, keys, issuer)
        before = await state(issuer)
        settled = await split(tight, keys, issuer, cert_id, (10,) * 100)
        assert (settled.outcome, settled.reason) == (Outcome.DEAD_LETTERED, Reason.DATA_INVALID), settled
        dead = await support.dead_letter(tight, "issuer")
        assert "certificate.reissued would be" in dead.headers["x-kabuto-detail"]
        assert await state(issuer) == before
