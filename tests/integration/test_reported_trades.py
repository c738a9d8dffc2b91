"""Trades agreed off the order book and reported to the exchange (agents/exchange/reporting.py,
docs/dvp.md "Reported trades"), through the real investor, issuer, exchange and settlement agents.

A reported trade is instructed like an exchange trade (seed 001 S95: the seller's certificate
countersigned by the exchange for ``omn:<matching number>``), has no order cover, so settlement
checks the buyer's cash itself (R-001-26), and, when it settles, moves the exchange's CertID list
(S127) as a matched trade does. A report that fails a check is refused with a reason and leaves
nothing behind.
"""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest

from agents.exchange import reporting
from agents.exchange.acceptance import Refused
from agents.exchange.reports import ReportedTrade, ReportTerms, TradeReport, bought
from agents.investor import repo as investor_repo
from agents.settlement import app as ledger
from agents.settlement import instruction_desk
from broker.consumer import Outcome
from broker.pki import KeyStore
from broker.runtime import AgentRuntime
from broker.settings import Settings
from broker.stock_certificates import content_of, endorse
from schemas.certificates import EndorsedCertificate, ShareClass, SignedCertificate
from schemas.identity import EXCHANGE_ID, SETTLEMENT_ID
from schemas.trading import OrderRefusal
from tests import support
from tests.integration.test_dvp import balance, conserved, instruction, register
from tests.integration.test_trading_paths import investor_order, issue, place, sell

AGENTS = ("investor", "issuer", "exchange", "settlement")
Rt = dict[str, AgentRuntime]


async def signed_certificate(rt: Rt, holder: str, cert_id: UUID) -> SignedCertificate:
    held = await rt["investor"].query(lambda c: investor_repo.held(c, holder))
    return next(s for s in held if content_of(s).cert_id == cert_id)


async def a_report(
    keys: KeyStore,
    signed: SignedCertificate,
    *,
    endorser: str = "alice",
    consenter: str | None = None,
    context: str | None = None,
    signed_as: dict[str, Any] | None = None,
    consent_as: dict[str, Any] | None = None,
    endorsed: EndorsedCertificate | None = None,
    **reported: Any,
) -> TradeReport:
    """alice sells bob 500 at 1,000 a share (``reported`` changes the terms), ``signed``
    countersigned by ``endorser`` for the terms (``signed_as`` changes the terms signed, ``context``
    the whole context; ``endorsed``, a certificate countersigned already) and by ``consenter``
    (the buyer) for them (``consent_as``)."""
    fields: dict[str, Any] = {
        "report_id": "otc-1",
        "issue_code": support.ISSUE,
        "share_class": ShareClass.COMMON,
        "quantity": 500,
        "price": Decimal(1000),
        "seller_user_id": "alice",
        "seller_account": support.account_box(keys, "alice", "alice-cash"),
        "buyer_user_id": "bob",
        "buyer_account": support.account_box(keys, "bob", "bob-cash"),
        "buyer_name": "Bob",
        "buyer_address": "2-2 Kabuto-cho, Tokyo",
    } | reported
    terms = ReportTerms(
        fields["report_id"],
        fields["issue_code"],
        ShareClass(fields["share_class"]),
        fields["quantity"],
        fields["price"],
        fields["seller_user_id"],
        fields["buyer_user_id"],
    )
    agreed = replace(terms, **(signed_as or {}))
    by_seller = endorsed or endorse(
        keys.load_identity(endorser), signed, "sell_order", context or agreed.context(agreed.seller_user_id)
    )
    consent = bought(
        keys.load_identity(consenter or fields["buyer_user_id"]), by_seller, replace(terms, **(consent_as or {}))
    )
    return TradeReport(**fields, certificate=by_seller, buyer_consent=consent)


async def reported(rt: Rt, report: TradeReport) -> ReportedTrade:
    trade = await rt["exchange"].command(EXCHANGE_ID, lambda ctx: reporting.report(ctx, report))
    outcome = await rt["settlement"].outcomes.wait_for(trade.instruction_id, timeout=30)
    assert outcome.outcome is Outcome.PROCESSED
    return trade


async def exchange_trade(rt: Rt, number: int) -> dict[str, Any]:
    rows = await support.rows(rt["exchange"], "SELECT * FROM reported_trades WHERE matching_number = $1", number)
    return rows[0]


async def listed(rt: Rt) -> dict[UUID, tuple[str | None, int | None, str]]:
    rows = await support.rows(rt["exchange"], "SELECT cert_id, user_id, shares, status FROM certid_list")
    return {r["cert_id"]: (r["user_id"], r["shares"], r["status"]) for r in rows}


async def ended(rt: Rt, number: int) -> dict[str, Any]:
    async def done() -> bool:
        return (await exchange_trade(rt, number))["status"] != "transfer_requested"

    await support.eventually(done, timeout=30)
    return await exchange_trade(rt, number)


async def setup(rt: Rt, bob_funds: Decimal) -> UUID:
    await support.open_offering(rt["issuer"])
    await support.list_issue(rt["exchange"])
    await support.fund(rt["settlement"], "alice")
    await support.fund(rt["settlement"], "bob", bob_funds)
    return await issue(rt, "alice", 500)


@pytest.mark.parametrize("quantity", [500, 300])
async def test_a_reported_trade_settles_both_legs_and_moves_the_certid_list(
    settings: Settings, keys: KeyStore, quantity: int
) -> None:
    """S95, S127: the name transfer and the cash at once; the exchange retires the seller's CertID
    and lists the buyer's (and the seller's remainder of a part sold)."""
    async with support.agents(settings, *AGENTS) as rt:
        cert_id = await setup(rt, Decimal(1_000_000))
        trade = await reported(
            rt, await a_report(keys, await signed_certificate(rt, "alice", cert_id), quantity=quantity)
        )
        assert (trade.status, trade.cert_id, trade.shares) == ("transfer_requested", cert_id, quantity)

        row = await ended(rt, trade.matching_number)
        assert (row["status"], row["settlement_status"], row["settlement_failure"]) == ("completed", "settled", None)
        assert (await instruction(rt, trade.matching_number))["settlement"] == "settled"
        expected = (
            [("alice", 500 - quantity, None), ("bob", quantity, None)] if quantity < 500 else [("bob", 500, None)]
        )
        assert await register(rt) == expected
        assert await balance(rt, "alice-cash") == Decimal(1000 * quantity)
        assert await balance(rt, "bob-cash") == Decimal(1_000_000 - 1000 * quantity)
        certid_list = await listed(rt)
        assert certid_list[cert_id][2] == "retired"
        assert certid_list[row["new_cert_id"]] == ("bob", quantity, "valid")
        valid = sorted((user, shares) for user, shares, status in certid_list.values() if status == "valid")
        assert valid == sorted((holder, shares) for holder, shares, _ in expected)
        await conserved(rt, 500)


async def test_an_unfunded_reported_trade_waits_with_its_certificate_held_then_settles_when_recycled(
    settings: Settings, keys: KeyStore
) -> None:
    """R-001-26: no cover, so settlement finds the buyer's cash short and the trade waits; meanwhile
    the certificate backs no sell order at the exchange, and recycling settles it once funded."""
    async with support.agents(settings, *AGENTS) as rt:
        cert_id = await setup(rt, Decimal(200_000))
        trade = await reported(rt, await a_report(keys, await signed_certificate(rt, "alice", cert_id)))
        row = await instruction(rt, trade.matching_number)
        assert (row["settlement"], row["reason"]) == ("pending", "lack_of_cash")

        async def kept_pending() -> bool:
            return (await exchange_trade(rt, trade.matching_number))["settlement_status"] == "pending"

        await support.eventually(kept_pending, timeout=30)
        assert (await exchange_trade(rt, trade.matching_number))["status"] == "transfer_requested"
        assert (await listed(rt))[cert_id] == ("alice", 500, "in_transfer")
        await place(rt, "alice", sell("s1", 500, cert_id), expect="order.rejected")
        assert (await investor_order(rt, "alice", "s1"))["reason"] == OrderRefusal.CERTIFICATE_NOT_LISTED
        assert await register(rt) == [("alice", 500, None)]

        await rt["settlement"].command(SETTLEMENT_ID, ledger.deposit("bob-cash", Decimal(300_000), "top-up"))
        assert (await rt["settlement"].command(SETTLEMENT_ID, instruction_desk.recycle()))["attempted"] == 1
        assert (await ended(rt, trade.matching_number))["status"] == "completed"
        assert await register(rt) == [("bob", 500, None)]
        assert (await listed(rt))[cert_id][2] == "retired"
        await conserved(rt, 500)


async def test_a_reported_trade_settlement_rejects_lists_the_certificate_again(
    settings: Settings, keys: KeyStore
) -> None:
    """A trade that ends unsettled moved nothing: the seller's CertID is valid again, so it can
    back a sell order."""
    async with support.agents(settings, *AGENTS) as rt:
        cert_id = await setup(rt, Decimal(1_000_000))
        signed = await signed_certificate(rt, "alice", cert_id)
        report = await a_report(keys, signed, buyer_account=support.account_box(keys, "bob", "bob-nowhere"))
        trade = await reported(rt, report)
        row = await ended(rt, trade.matching_number)
        assert row["status"] == "failed" and row["settlement_failure"] is not None
        assert (await listed(rt))[cert_id] == ("alice", 500, "valid")
        assert await register(rt) == [("alice", 500, None)]
        await place(rt, "alice", sell("s1", 500, cert_id))  # accepted: the certificate is free again
        await conserved(rt, 500)


async def test_a_report_failing_a_check_is_refused_with_its_reason_and_leaves_nothing(
    settings: Settings, keys: KeyStore
) -> None:
    """Each refusal names what to mend; no reported trade is kept, no instruction sent, and the
    CertID list stays as it was."""
    async with support.agents(settings, *AGENTS) as rt:
        sold = await setup(rt, Decimal(1_000_000))
        fresh, committed, bobs = (
            await issue(rt, "alice", 500),
            await issue(rt, "alice", 500),
            await issue(rt, "bob", 500),
        )
        await place(rt, "alice", sell("s1", 500, committed))  # backs a live sell order
        signed = {
            c: await signed_certificate(rt, holder, c)
            for c, holder in ((sold, "alice"), (fresh, "alice"), (committed, "alice"), (bobs, "bob"))
        }
        first = await reported(rt, await a_report(keys, signed[sold], report_id="first"))
        assert (await ended(rt, first.matching_number))["status"] == "completed"  # ``sold`` is retired

        seller, consent = OrderRefusal.SELLER_ENDORSEMENT_INVALID, OrderRefusal.BUYER_CONSENT_INVALID
        cases: list[tuple[str, UUID, dict[str, Any], OrderRefusal]] = [
            ("self-trade", fresh, {"buyer_user_id": "alice"}, OrderRefusal.USER_MISMATCH),
            ("unlisted issue", fresh, {"issue_code": "NOPE"}, OrderRefusal.UNKNOWN_ISSUE),
            ("report id used", fresh, {"report_id": "first"}, OrderRefusal.DUPLICATE_CLIENT_ORDER_ID),
            ("off the tick", fresh, {"price": Decimal("1000.5")}, OrderRefusal.INVALID_TICK),
            ("outside the day's limits", fresh, {"price": Decimal(5000)}, OrderRefusal.PRICE_LIMIT_EXCEEDED),
            ("more than the certificate", fresh, {"quantity": 600}, OrderRefusal.SHORT_SELLING_PROHIBITED),
            ("of another class", fresh, {"share_class": "preferred"}, OrderRefusal.WRONG_ISSUE),
            (
                "a sell order's countersignature",
                fresh,
                {"context": "order:alice:report-otc-9"},
                seller,
            ),
            (
                "signed at another price",
                fresh,
                {"signed_as": {"price": Decimal(1200)}},
                seller,
            ),
            (
                "signed for another buyer",
                fresh,
                {"signed_as": {"buyer_user_id": "carol"}},
                seller,
            ),
            ("endorsed by the buyer", fresh, {"endorser": "bob"}, seller),
            ("another's certificate", bobs, {"endorser": "bob"}, seller),
            ("the buyer's consent by another", fresh, {"consenter": "carol"}, consent),
            ("the buyer's consent by the seller", fresh, {"consenter": "alice"}, consent),
            (
                "the buyer's consent to fewer shares",
                fresh,
                {"consent_as": {"quantity": 100}},
                consent,
            ),
            (
                "the buyer's consent to a lower price",
                fresh,
                {"consent_as": {"price": Decimal(900)}},
                consent,
            ),
            ("another's certificate, endorsed by the seller", bobs, {}, OrderRefusal.HOLDER_MISMATCH),
            ("a certificate sold already", sold, {}, OrderRefusal.CERTIFICATE_NOT_LISTED),
            ("a certificate backing a sell order", committed, {}, OrderRefusal.CERTIFICATE_ALREADY_COMMITTED),
        ]
        before = (await listed(rt), await _outbox_instructions(rt))
        for n, (name, certificate, terms, reason) in enumerate(cases):
            report = await a_report(keys, signed[certificate], **({"report_id": f"r-{n}"} | terms))
            with pytest.raises(Refused) as refused:
                await rt["exchange"].command(EXCHANGE_ID, lambda ctx, r=report: reporting.report(ctx, r))
            assert refused.value.refusal.reason is reason, f"{name}: {refused.value.refusal}"

        # the certificate with no countersignature at all
        bare = (await a_report(keys, signed[fresh], report_id="bare")).model_copy(
            update={"certificate": EndorsedCertificate(certificate=signed[fresh])}
        )
        with pytest.raises(Refused) as refused:
            await rt["exchange"].command(EXCHANGE_ID, lambda ctx: reporting.report(ctx, bare))
        assert refused.value.refusal.reason is OrderRefusal.SELLER_ENDORSEMENT_INVALID

        assert [
            r["report_id"] for r in await support.rows(rt["exchange"], "SELECT report_id FROM reported_trades")
        ] == ["first"]
        assert (await listed(rt), await _outbox_instructions(rt)) == before


async def _outbox_instructions(rt: Rt) -> int:
    rows = await support.rows(
        rt["exchange"], "SELECT count(*) AS n FROM outbox_messages WHERE message_type = 'settlement.instruction'"
    )
    return int(rows[0]["n"])
