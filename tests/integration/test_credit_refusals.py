"""Bad input at the card issuer and the line: each is refused with a reason and changes nothing."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import uuid4

from agents.credit import operators
from agents.credit.domain import Method
from agents.merchant.client import MerchantTerminal
from broker.envelope import seal
from broker.pki import KeyStore
from broker.settings import Settings
from schemas.credit import AdditionalCreditInquiry, PurchaseRequest
from tests import credit_support as cs
from tests import support


async def test_a_purchase_request_addressed_to_the_line_is_dead_lettered(settings: Settings) -> None:
    async with support.agents(settings, *cs.AGENTS) as rt:
        identity = KeyStore(settings.key_dir).load_identity("shop")
        request = PurchaseRequest(purchase_id="x", card_number=cs.CARD, amount=1_000)
        sealed = seal(identity, request, recipient="credit", now=datetime.now(UTC))
        await support.publish_sealed(settings, sealed)
        dead = await support.dead_letter(settings, "credit")
        assert dead.headers["x-kabuto-reason"] == "sender_not_authorized"
        assert await support.rows(rt["credit"], "SELECT * FROM authorisations") == []


async def test_only_the_card_issuer_may_ask_the_line(settings: Settings) -> None:
    async with support.agents(settings, *cs.AGENTS) as rt:
        identity = KeyStore(settings.key_dir).load_identity("shop")
        inquiry = AdditionalCreditInquiry(obligation_id=uuid4(), purchaser="alice", card_number=cs.CARD, shortfall=1)
        sealed = seal(identity, inquiry, recipient="credit", now=datetime.now(UTC))
        await support.publish_sealed(settings, sealed)
        dead = await support.dead_letter(settings, "credit")
        assert dead.headers["x-kabuto-reason"] == "sender_not_authorized"
        assert await support.rows(rt["credit"], "SELECT * FROM obligations") == []


async def test_a_purchaser_without_a_contract_is_refused_r_003_11(settings: Settings) -> None:
    async with support.agents(settings, *cs.AGENTS) as rt, MerchantTerminal.connect(settings, "shop") as shop:
        await cs.seed_003_worked_example(rt)
        await rt["credit"].query(lambda c: c.execute("DELETE FROM purchaser_cards"))
        await shop.request_purchase("no-contract", cs.CARD, 200_000)
        answer = await shop.answer("no-contract")
        assert not answer.approved and (answer.detail or "").startswith("unknown_purchaser")
        assert await cs.collateral(rt["credit"]) == []


async def test_missing_price_refuses_with_the_reason_r_003_27(settings: Settings) -> None:
    async with support.agents(settings, *cs.AGENTS) as rt, MerchantTerminal.connect(settings, "shop") as shop:
        await cs.seed_003_worked_example(rt)
        await rt["custody"].command("custody", cs.deposit_shares("alice-sk", "alice", "NOPRICE", 10))
        await shop.request_purchase("no-price", cs.CARD, 200_000)
        answer = await shop.answer("no-price")
        assert not answer.approved and (answer.detail or "").startswith("price_missing") and "NOPRICE" in answer.detail
        [valuation] = await support.rows(rt["credit"], "SELECT refusal FROM valuations")
        assert valuation["refusal"] == "price_missing"
        assert await cs.custody_positions(rt["custody"]) == {
            cs.ISSUE_A: (6_000, 0),
            cs.ISSUE_B: (2_000, 0),
            "NOPRICE": (10, 0),
        }


async def test_missing_rating_refuses_with_the_reason_r_003_29(settings: Settings) -> None:
    async with support.agents(settings, *cs.AGENTS) as rt, MerchantTerminal.connect(settings, "shop") as shop:
        await cs.seed_003_worked_example(rt)
        await rt["credit"].query(lambda c: c.execute("DELETE FROM ratings WHERE issue_code = $1", cs.ISSUE_B))
        await shop.request_purchase("no-rating", cs.CARD, 200_000)
        answer = await shop.answer("no-rating")
        assert not answer.approved and (answer.detail or "").startswith("rating_missing")


async def test_missing_haircut_band_refuses_with_the_reason_r_003_27(settings: Settings) -> None:
    async with support.agents(settings, *cs.AGENTS) as rt, MerchantTerminal.connect(settings, "shop") as shop:
        await cs.seed_003_worked_example(rt, method=Method.HAIRCUT)
        await rt["credit"].command("credit", operators.haircut_bands(()))
        await shop.request_purchase("no-band", cs.CARD, 200_000)
        answer = await shop.answer("no-band")
        assert not answer.approved and (answer.detail or "").startswith("haircut_rate_missing")


async def test_the_same_purchase_id_is_answered_once_and_never_charged_twice(settings: Settings) -> None:
    async with support.agents(settings, *cs.AGENTS) as rt, MerchantTerminal.connect(settings, "shop") as shop:
        await cs.seed_003_worked_example(rt)
        await shop.request_purchase("twice", cs.CARD, 30_000)
        first = await shop.answer("twice")
        await shop.request_purchase("twice", cs.CARD, 30_000)
        await rt["credit"].outcomes.wait_count(lambda s: s.type == "card.purchase_request", 2)
        assert first.approved
        [card] = await support.rows(rt["credit"], "SELECT outstanding FROM card_accounts")
        assert card["outstanding"] == 30_000
        assert len(await support.rows(rt["credit"], "SELECT * FROM authorisations")) == 1
