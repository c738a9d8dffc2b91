"""Accounts sealed to the settlement agent in orders (33), instructions (38) and the dividend
delivery of 32 and 39 (R-001-06, R-001-44; docs/security.md §6).

A trade through the real investor, issuer, exchange and settlement agents: every table and
outbox row of the exchange and the issuer holds boxes, never an account; settlement opens them
and moves the right cash; each party's notice names its own account only. A box that does not
open — sealed for another party, for another field or to another key — is refused as
``sealed_field_invalid`` and nothing moves (B64–B67). Version 1, with the account in clear, is
refused after the cut-over (B68) and sealed on receipt before it.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from structlog.testing import capture_logs

from broker.envelope import Sealed, seal
from broker.errors import Reason
from broker.pki import KeyStore
from broker.runtime import AgentRuntime
from broker.sealed_box import open_box
from broker.settings import Settings
from schemas.certificates import ShareClass
from schemas.identity import EXCHANGE_ID, SETTLEMENT_ID
from schemas.issuance import CertificateIssuanceRequestV1, DividendDeliveryV1, DividendMethod
from schemas.sealed import ACCOUNT_INQUIRY_ACCOUNT as INQUIRY
from schemas.sealed import dividend_account, order_account
from schemas.trading import OrderTerms, OrderType, Side, SubmitOrder, SubmitOrderV1
from tests import support
from tests.integration.refusal_kit import expect_dead_letter, state
from tests.integration.test_dvp import exchange_instruction
from tests.integration.test_trading_paths import buy, issue, market, place, sell, sent, traded

AGENTS = ("investor", "issuer", "exchange", "settlement")
CLEAR = ("alice-cash", "bob-cash", "0001-234567")  # the order accounts and the dividend account


async def _stored(runtime: AgentRuntime) -> str:
    """Every row of every table of the agent's schema, and every outbox body and header."""
    outbox = await support.rows(runtime, "SELECT body, headers::text AS headers FROM outbox_messages")
    return json.dumps((await state(runtime)).tables) + "".join(bytes(r["body"]).decode() + r["headers"] for r in outbox)


async def _balance(settlement: AgentRuntime, account: str) -> Decimal:
    rows = await support.rows(
        settlement, "SELECT coalesce(sum(amount), 0) AS b FROM postings WHERE account_id = $1", account
    )
    return Decimal(rows[0]["b"])


async def test_the_exchange_and_the_issuer_keep_boxes_and_settlement_settles_the_opened_accounts(
    settings: Settings, keys: KeyStore
) -> None:
    async with support.agents(settings, *AGENTS) as rt:
        await market(rt)
        with capture_logs() as logged:
            cert_id = await issue(rt, "alice", 500)
            await place(rt, "alice", sell("s1", 500, cert_id))
            order = await place(rt, "bob", buy("b1", 300))
            await traded(rt, order)  # settled both legs, and bob's 39 was answered
        exchange, issuer = await _stored(rt["exchange"]), await _stored(rt["issuer"])
        [bob_record] = await support.rows(
            rt["issuer"], "SELECT dividend_account FROM register WHERE holder_user_id = 'bob' AND status = 'valid'"
        )
        boxes = await support.rows(rt["exchange"], "SELECT settlement_account FROM orders ORDER BY client_order_id")
        notices = await support.rows(
            rt["settlement"], "SELECT routing_key, body FROM outbox_messages WHERE message_type = 'settlement.notice'"
        )
        assert await _balance(rt["settlement"], "bob-cash") == Decimal(5_000_000 - 300_000)
        assert await _balance(rt["settlement"], "alice-cash") == Decimal(5_000_000 + 300_000)

    for text in (exchange, issuer):
        assert [c for c in CLEAR if c in text] == []
    assert all(b["settlement_account"].startswith("ks1.") for b in boxes) and len(boxes) == 2
    # Settlement keeps the ledger and may name its accounts; nobody else logs one.
    others = [e for e in logged if e.get("logger_name") != "kabuto.settlement"]
    assert others and [e for e in others if any(c in repr(e) for c in CLEAR)] == []
    # Only settlement's key opens what the issuer keeps: bob's dividend account, his order's account.
    settlement_key = keys.load_identity(SETTLEMENT_ID).decryption_key
    assert settlement_key is not None
    assert open_box(settlement_key, bob_record["dividend_account"], dividend_account("bob")) == "bob-cash"
    # Each party hears of its own account only (settlement.notice v2).
    told = {n["routing_key"]: json.loads(bytes(n["body"]))["payload"] for n in notices}
    assert (told["bob"]["account"], told["bob"]["side"]) == ("bob-cash", "buy")
    assert (told["alice"]["account"], told["alice"]["side"]) == ("alice-cash", "sell")
    assert "alice-cash" not in json.dumps(told["bob"]) and "bob-cash" not in json.dumps(told["alice"])


def _buy(keys: KeyStore, account: str, coid: str = "b1", quantity: int = 100) -> Sealed:
    order = SubmitOrder(
        client_order_id=coid,
        user_id="bob",
        issue_code=support.ISSUE,
        terms=OrderTerms(side=Side.BUY, order_type=OrderType.LIMIT, price=Decimal(1000), quantity=quantity),
        settlement_account=account,
        holder_name="Bob",
        holder_address="2-2 Kabuto-cho, Tokyo",
    )
    return seal(keys.load_identity("bob"), order, recipient=EXCHANGE_ID, now=datetime.now(UTC))


UNOPENABLE = {
    "sealed_for_another_party": lambda keys: support.account_box(keys, "alice", "bob-cash"),
    "sealed_for_another_field": lambda keys: support.sealed_to(keys, SETTLEMENT_ID, "bob-cash", INQUIRY),
    "sealed_to_another_key": lambda keys: support.sealed_to(keys, "brokerage", "bob-cash", order_account("bob")),
}


@pytest.mark.parametrize("box", UNOPENABLE.values(), ids=UNOPENABLE.keys())
async def test_B64_B66_a_buy_whose_account_does_not_open_is_refused_and_settlement_holds_nothing(
    settings: Settings, keys: KeyStore, box: Any
) -> None:
    async with support.agents(settings, "exchange", "settlement") as rt:
        await support.list_issue(rt["exchange"])
        await support.fund(rt["settlement"], "bob", Decimal(1_000_000))
        before = await state(rt["settlement"])
        order = _buy(keys, box(keys))
        await support.publish_sealed(settings, order)
        await rt["exchange"].outcomes.wait(lambda s: s.type == "settlement.cover.refused")

        [refusal] = await sent(rt["exchange"], "order.rejected", order.envelope.message_id)
        after = await state(rt["settlement"])
        assert refusal["reason"] == "sealed_field_invalid"
        assert await support.rows(rt["exchange"], "SELECT * FROM orders") == []
        assert after.without("inbox", "outbox") == before.without("inbox", "outbox")  # no cover, no hold
        [answer] = await sent(rt["settlement"], "settlement.cover.refused", order.envelope.message_id)
        assert answer["reason"] == "sealed_field_invalid" and "bob-cash" not in answer["detail"]


async def test_B67_an_instruction_whose_sellers_account_does_not_open_is_rejected_and_nothing_moves(
    settings: Settings, keys: KeyStore
) -> None:
    """The exchange cannot tell a bad box from a good one; settlement can, and refuses the whole
    instruction before any cash or share is earmarked (the exchange then undoes the execution)."""
    async with support.agents(settings, *AGENTS) as rt:
        await market(rt)
        cert_id = await issue(rt, "alice", 500)
        good = await exchange_instruction(rt, keys, cert_id)
        bad = good.model_copy(update={"seller_account": support.account_box(keys, "bob", "alice-cash")})
        before = await state(rt["settlement"])
        sealed = seal(keys.load_identity(EXCHANGE_ID), bad, recipient=SETTLEMENT_ID, now=datetime.now(UTC))
        await support.publish_sealed(settings, sealed)
        await rt["settlement"].outcomes.wait_for(sealed.envelope.message_id)

        after = await state(rt["settlement"])
        statuses = await sent(rt["settlement"], "settlement.instruction.status", sealed.envelope.message_id)
        # Nothing but the rejected instruction's record and its status messages: no cash earmarked.
        moved = ("inbox", "outbox", "dvp_instructions")
        assert after.without(*moved) == before.without(*moved)
        assert await sent(rt["settlement"], "securities.reserve", sealed.envelope.message_id) == []
        [row] = await support.rows(
            rt["settlement"], "SELECT processing, settlement, reason FROM dvp_instructions WHERE matching_number = 901"
        )
    assert dict(row) == {"processing": "rejected", "settlement": "failed", "reason": "sealed_field_invalid"}
    assert len(statuses) == 3  # to the exchange, the buyer and the seller
    assert all(s["status"]["reason"] == "sealed_field_invalid" for s in statuses)
    assert "alice-cash" not in json.dumps(statuses)


async def test_an_order_sent_again_with_its_account_sealed_afresh_gets_the_same_acceptance(
    settings: Settings, keys: KeyStore
) -> None:
    """Two boxes of one account differ (a fresh key each): the exchange compares orders without them."""
    async with support.agents(settings, "exchange", "settlement") as rt:
        await support.list_issue(rt["exchange"])
        await support.fund(rt["settlement"], "bob", Decimal(1_000_000))
        first, again = (_buy(keys, support.account_box(keys, "bob", "bob-cash")) for _ in range(2))
        assert first.envelope.payload["settlement_account"] != again.envelope.payload["settlement_account"]
        await support.publish_sealed(settings, first)
        await rt["exchange"].outcomes.wait(lambda s: s.type == "settlement.cover.granted")
        await support.publish_sealed(settings, again)
        await rt["exchange"].outcomes.wait_for(again.envelope.message_id)

        [accepted] = await sent(rt["exchange"], "order.accepted", first.envelope.message_id)
        [answered] = await sent(rt["exchange"], "order.accepted", again.envelope.message_id)
        assert answered["acceptance_number"] == accepted["acceptance_number"]
        assert len(await support.rows(rt["exchange"], "SELECT * FROM orders")) == 1


def _clear_order(keys: KeyStore) -> Sealed:
    order = SubmitOrderV1(
        client_order_id="v1-buy",
        user_id="bob",
        issue_code=support.ISSUE,
        terms=OrderTerms(side=Side.BUY, order_type=OrderType.LIMIT, price=Decimal(1000), quantity=100),
        settlement_account="bob-cash",
        holder_name="Bob",
        holder_address="2-2 Kabuto-cho, Tokyo",
    )
    return seal(keys.load_identity("bob"), order, recipient=EXCHANGE_ID, now=datetime.now(UTC))


async def test_B68_an_order_with_its_account_in_clear_is_dead_lettered_after_the_cut_over(
    settings: Settings, keys: KeyStore
) -> None:
    cut_over = settings.with_(clear_accounts_until=datetime.now(UTC) - timedelta(days=1))
    for configured in (settings, cut_over):  # none set: refused already
        async with support.agents(configured, "exchange") as rt:
            sealed = _clear_order(keys)
            refused = Reason.CLEAR_ACCOUNT_REFUSED
            await expect_dead_letter(configured, rt["exchange"], sealed.body, sealed.headers, refused)


async def test_before_the_cut_over_a_clear_account_is_sealed_on_receipt_and_never_stored(
    settings: Settings, keys: KeyStore
) -> None:
    """Version 1 of 33 and of 32 during the transition: the exchange and the issuer seal the
    accounts the moment they read them, and handle the sealed version."""
    window = settings.with_(clear_accounts_until=datetime.now(UTC) + timedelta(days=30))
    request = CertificateIssuanceRequestV1(
        user_id="bob",
        holder_name="Bob",
        holder_address="2-2 Kabuto-cho, Tokyo",
        issue_code=support.ISSUE,
        share_class=ShareClass.COMMON,
        shares=500,
        dividend_delivery=DividendDeliveryV1(method=DividendMethod.BANK_TRANSFER, account="0001-234567"),
    )
    subscription = seal(keys.load_identity("bob"), request, recipient="issuer", now=datetime.now(UTC))
    async with support.agents(window, "issuer", "exchange", "settlement") as rt:
        await support.open_offering(rt["issuer"])
        await support.list_issue(rt["exchange"])
        await support.fund(rt["settlement"], "bob", Decimal(1_000_000))
        order = _clear_order(keys)
        for sealed in (subscription, order):
            await support.publish_sealed(window, sealed)
        await rt["exchange"].outcomes.wait(lambda s: s.type == "settlement.cover.granted")
        await rt["issuer"].outcomes.wait_for(subscription.envelope.message_id)

        [accepted] = await sent(rt["exchange"], "order.accepted", order.envelope.message_id)
        [stored] = await support.rows(rt["exchange"], "SELECT settlement_account FROM orders")
        [register] = await support.rows(rt["issuer"], "SELECT dividend_account FROM register")
        texts = (await _stored(rt["exchange"]), await _stored(rt["issuer"]))
    settlement_key = keys.load_identity(SETTLEMENT_ID).decryption_key
    assert settlement_key is not None and accepted["acceptance_number"] > 0
    assert open_box(settlement_key, stored["settlement_account"], order_account("bob")) == "bob-cash"
    assert open_box(settlement_key, register["dividend_account"], dividend_account("bob")) == "0001-234567"
    assert [c for c in CLEAR for text in texts if c in text] == []
