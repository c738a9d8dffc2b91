"""Review of reported trades, the parties' side (agents/investor/reported.py, docs/dvp.md
"Reported trades"): an independent suite through the real investor, issuer, exchange and
settlement agents (and brokerage, as a party) on real RabbitMQ and PostgreSQL."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from uuid import UUID

import pytest

from agents.exchange import reporting
from agents.exchange.acceptance import Refused
from agents.exchange.reports import TradeReport
from agents.investor import reported as investor_reports
from broker.consumer import Outcome
from broker.errors import Reason
from broker.pki import KeyStore
from broker.runtime import AgentRuntime
from broker.settings import Settings
from broker.trade_reports import ReportTerms, sold
from schemas.certificates import ShareClass
from schemas.identity import EXCHANGE_ID
from schemas.issuance import DividendMethod
from schemas.trading import OrderRefusal, ReportSettled, Side
from tests import support
from tests.integration.test_dvp import conserved, register
from tests.integration.test_reported_trades import (
    a_report,
    ended,
    from_exchange,
    listed,
    reported,
    settled_notice,
    setup,
    signed_certificate,
    signed_report,
    wallet,
)
from tests.integration.test_trading_paths import investor_order, issue, place, sell

AGENTS = ("investor", "issuer", "exchange", "settlement")
Rt = dict[str, AgentRuntime]
HOLDER = ("Bob", "2-2 Kabuto-cho, Tokyo")


def terms_of(report_id: str = "otc-1", quantity: int = 500, **changes: object) -> ReportTerms:
    terms = ReportTerms(report_id, support.ISSUE, ShareClass.COMMON, quantity, Decimal(1000), "alice", "bob")
    return replace(terms, **changes)  # type: ignore[arg-type]


async def kept(rt: Rt) -> list[tuple[str, str, str, str]]:
    rows = await support.rows(
        rt["investor"], "SELECT user_id, side, report_id, status FROM reports ORDER BY report_id, side"
    )
    return [(r["user_id"], r["side"], r["report_id"], r["status"]) for r in rows]


async def delivered_to(rt: Rt, cert_id: UUID, holder: str) -> None:
    async def held() -> bool:
        return await wallet(rt, cert_id) == (holder, "held")

    await support.eventually(held, timeout=30)


# --- a partial report, then the remainder --------------------------------------------------


async def test_a_partial_report_then_the_remainder_reported_to_another_buyer(
    settings: Settings, keys: KeyStore
) -> None:
    """alice reports 300 of 500 to bob; her remainder of 200 reaches her wallet and she reports it,
    under a new id, to carol: each buyer's agent holds its new certificate, each sold one is
    surrendered, and both signed reports are settled at the investor."""
    async with support.agents(settings, *AGENTS) as rt:
        cert_id = await setup(rt, Decimal(1_000_000))
        await support.fund(rt["settlement"], "carol", Decimal(1_000_000))
        first = await ended(rt, (await reported(rt, await signed_report(rt, cert_id, quantity=300))).matching_number)
        assert first["status"] == "completed"
        await delivered_to(rt, first["new_cert_id"], "bob")
        remainder = next(c for c, (u, n, s) in (await listed(rt)).items() if u == "alice" and s == "valid")
        assert (await listed(rt))[remainder] == ("alice", 200, "valid")
        await delivered_to(rt, remainder, "alice")

        report = await signed_report(rt, remainder, buyer="carol", report_id="otc-2", quantity=200)
        second = await ended(rt, (await reported(rt, report)).matching_number)
        assert second["status"] == "completed"
        await delivered_to(rt, second["new_cert_id"], "carol")

        async def surrendered() -> bool:
            return await wallet(rt, remainder) == ("alice", "surrendered")

        await support.eventually(surrendered, timeout=30)
        assert await wallet(rt, cert_id) == ("alice", "surrendered")
        assert sorted(await register(rt)) == [("bob", 300, None), ("carol", 200, None)]
        assert await kept(rt) == [
            ("bob", "buy", "otc-1", "settled"),
            ("alice", "sell", "otc-1", "settled"),
            ("carol", "buy", "otc-2", "settled"),
            ("alice", "sell", "otc-2", "settled"),
        ]
        await conserved(rt, 500)


# --- a report that fails at settlement ------------------------------------------------------


async def test_after_a_failed_report_the_seller_signs_a_new_one_for_the_same_certificate(
    settings: Settings, keys: KeyStore
) -> None:
    """otc-1 fails at settlement (bob's account does not exist): nothing moved, alice's wallet
    still holds the certificate, and she signs otc-2 for it, which settles; the failed report's
    rows stay signed (the exchange tells the parties only of a settlement), and no second
    certificate is asked for."""
    async with support.agents(settings, *AGENTS) as rt:
        cert_id = await setup(rt, Decimal(1_000_000))
        failed = await reported(rt, await signed_report(rt, cert_id, buyer_account="bob-nowhere"))
        assert (await ended(rt, failed.matching_number))["status"] == "failed"
        assert await wallet(rt, cert_id) == ("alice", "held")

        second = await reported(rt, await signed_report(rt, cert_id, report_id="otc-2"))
        row = await ended(rt, second.matching_number)
        assert row["status"] == "completed"
        await delivered_to(rt, row["new_cert_id"], "bob")
        assert await wallet(rt, cert_id) == ("alice", "surrendered")
        assert await kept(rt) == [
            ("bob", "buy", "otc-1", "signed"),
            ("alice", "sell", "otc-1", "signed"),
            ("bob", "buy", "otc-2", "settled"),
            ("alice", "sell", "otc-2", "settled"),
        ]
        requests = await support.rows(
            rt["investor"], "SELECT count(*) AS n FROM requests WHERE kind = 'after_transfer'"
        )
        assert requests == [{"n": 1}]
        await conserved(rt, 500)


async def test_two_sales_of_one_certificate_only_one_settles_and_the_other_buyer_asks_for_nothing(
    settings: Settings, keys: KeyStore
) -> None:
    """alice signs otc-1 to bob and otc-2 to carol for the same certificate: the exchange takes the
    first; the second is refused while the first is unsettled and after; carol's agent asks for
    no certificate and its row stays signed."""
    async with support.agents(settings, *AGENTS) as rt:
        cert_id = await setup(rt, Decimal(1_000_000))
        await support.fund(rt["settlement"], "carol", Decimal(1_000_000))
        to_bob = await signed_report(rt, cert_id)
        to_carol = await signed_report(rt, cert_id, buyer="carol", report_id="otc-2")
        row = await ended(rt, (await reported(rt, to_bob)).matching_number)
        assert row["status"] == "completed"
        with pytest.raises(Refused):
            await rt["exchange"].command(EXCHANGE_ID, lambda ctx: reporting.report(ctx, to_carol))
        await delivered_to(rt, row["new_cert_id"], "bob")
        assert ("carol", "buy", "otc-2", "signed") in await kept(rt)
        carols = await support.rows(rt["investor"], "SELECT count(*) AS n FROM requests WHERE user_id = 'carol'")
        assert carols == [{"n": 0}]


# --- the interplay with the wallet's sell orders --------------------------------------------


async def test_a_sale_is_not_signed_for_a_certificate_backing_a_live_sell_order(
    settings: Settings, keys: KeyStore
) -> None:
    """The wallet commits a certificate to a sell order (``committed_order``); place_order will
    not commit it twice (order_repo.committable_all), and the exchange refuses a report of it
    (certificate_already_committed). The agent should not sign a sale of it either (B104)."""
    async with support.agents(settings, *AGENTS) as rt:
        cert_id = await setup(rt, Decimal(1_000_000))
        await place(rt, "alice", sell("s1", 500, cert_id))
        committed = await support.rows(rt["investor"], "SELECT committed_order FROM wallet WHERE cert_id = $1", cert_id)
        assert committed[0]["committed_order"] is not None
        # found by review (stop 44): sign_sale read any held certificate, not the committable ones
        with pytest.raises(investor_reports.ReportError):
            await rt["investor"].command("alice", investor_reports.sign_sale(terms_of(), cert_id, "alice-cash"))
        assert await kept(rt) == []


async def test_a_certificate_in_a_pending_report_cannot_back_a_sell_order_and_stays_free_in_the_wallet(
    settings: Settings, keys: KeyStore
) -> None:
    """While the report waits for cash the certificate is in transfer at the exchange: a sell order
    on it is rejected, and the wallet does not keep it committed to that order afterwards."""
    async with support.agents(settings, *AGENTS) as rt:
        cert_id = await setup(rt, Decimal(100_000))
        trade = await reported(rt, await signed_report(rt, cert_id))
        await place(rt, "alice", sell("s1", 500, cert_id), expect="order.rejected")
        assert (await investor_order(rt, "alice", "s1"))["status"] == "rejected"
        rows = await support.rows(
            rt["investor"], "SELECT status, committed_order FROM wallet WHERE cert_id = $1", cert_id
        )
        assert rows == [{"status": "held", "committed_order": None}]
        assert (await listed(rt))[cert_id] == ("alice", 500, "in_transfer")
        assert trade.status == "transfer_requested"


# --- what the buyer's agent checks before it signs -------------------------------------------


async def test_a_purchase_is_not_signed_for_a_certificate_the_seller_does_not_hold(
    settings: Settings, keys: KeyStore
) -> None:
    """alice countersigns carol's certificate for a sale to bob: the sale does not hold for the
    terms (the exchange refuses it, holder_mismatch), so bob's agent should refuse it and keep
    nothing (B104: "a purchase of a sale that does not hold for the terms")."""
    async with support.agents(settings, *AGENTS) as rt:
        await setup(rt, Decimal(1_000_000))
        carols = await issue(rt, "carol", 500)
        terms = terms_of()
        forged = sold(keys.load_identity("alice"), await signed_certificate(rt, "carol", carols), terms)
        # found by review (stop 44): sign_purchase checked the endorser, not the certificate's holder
        with pytest.raises(investor_reports.ReportError):
            await rt["investor"].command("bob", investor_reports.sign_purchase(terms, forged, "bob-cash", HOLDER))
        assert await kept(rt) == []


async def test_a_purchase_is_not_signed_for_a_sale_the_seller_already_sold(settings: Settings, keys: KeyStore) -> None:
    """alice sold her certificate to bob (settled); a sale of the same certificate she signed
    before, for carol, no longer holds: the exchange refuses it (certificate_not_listed). Does
    carol's agent sign it?"""
    async with support.agents(settings, *AGENTS) as rt:
        cert_id = await setup(rt, Decimal(1_000_000))
        await support.fund(rt["settlement"], "carol", Decimal(1_000_000))
        to_carol_terms = terms_of("otc-2", buyer_user_id="carol")
        stale = await rt["investor"].command("alice", investor_reports.sign_sale(to_carol_terms, cert_id, "alice-cash"))
        row = await ended(rt, (await reported(rt, await signed_report(rt, cert_id))).matching_number)
        assert row["status"] == "completed"
        assert await wallet(rt, cert_id) is not None
        purchase = investor_reports.sign_purchase(to_carol_terms, stale.certificate, "carol-cash", ("Carol", "Tokyo"))
        # the investor agent cannot know what the exchange's CertID list says: it signs, and keeps it
        await rt["investor"].command("carol", purchase)
        assert ("carol", "buy", "otc-2", "signed") in await kept(rt)


# --- the request after transfer: holder and dividend ----------------------------------------


async def test_the_new_certificate_carries_the_holder_and_dividend_the_buyer_signed(
    settings: Settings, keys: KeyStore
) -> None:
    """sign_purchase's holder and ``dividend`` reach the issuer's register through the request by
    NTN: bob's name and address, postal order to the account he named, not the settlement account."""
    async with support.agents(settings, *AGENTS) as rt:
        cert_id = await setup(rt, Decimal(1_000_000))
        terms = terms_of()
        sale = await rt["investor"].command("alice", investor_reports.sign_sale(terms, cert_id, "alice-cash"))
        holder = ("Robert Example", "9-9 Nihonbashi, Tokyo")
        purchase = await rt["investor"].command(
            "bob",
            investor_reports.sign_purchase(
                terms, sale.certificate, "bob-cash", holder, (DividendMethod.POSTAL_ORDER, "bob-postal")
            ),
        )
        report = TradeReport.of(terms, (sale.certificate, sale.account), (purchase.consent, purchase.account), holder)
        row = await ended(rt, (await reported(rt, report)).matching_number)
        assert row["status"] == "completed"
        await delivered_to(rt, row["new_cert_id"], "bob")
        record = await support.rows(
            rt["issuer"],
            "SELECT holder_user_id, holder_name, holder_address, dividend_method FROM register WHERE cert_id = $1",
            row["new_cert_id"],
        )
        assert record == [
            {
                "holder_user_id": "bob",
                "holder_name": "Robert Example",
                "holder_address": "9-9 Nihonbashi, Tokyo",
                "dividend_method": "postal_order",
            }
        ]
        investor_row = await support.rows(
            rt["investor"],
            "SELECT dividend_method, dividend_account FROM reports WHERE user_id = 'bob' AND report_id = 'otc-1'",
        )
        assert investor_row == [{"dividend_method": "postal_order", "dividend_account": "bob-postal"}]


# --- the notice -----------------------------------------------------------------------------


async def test_a_notice_redelivered_to_the_seller_surrenders_once_and_is_processed(
    settings: Settings, keys: KeyStore
) -> None:
    """The seller's notice again: processed, nothing more; a seller's notice naming another
    certificate than sold is unsolicited and leaves the row settled."""
    async with support.agents(settings, *AGENTS) as rt:
        cert_id = await setup(rt, Decimal(1_000_000))
        trade = await reported(rt, await signed_report(rt, cert_id))
        row = await ended(rt, trade.matching_number)
        await delivered_to(rt, row["new_cert_id"], "bob")
        assert await wallet(rt, cert_id) == ("alice", "surrendered")
        notice = settled_notice(trade.matching_number, row["name_transfer_number"], cert_id, Side.SELL)
        again = await from_exchange(rt, notice, "alice")
        assert (await rt["investor"].outcomes.wait_for(again, timeout=30)).outcome is Outcome.PROCESSED
        assert ("alice", "sell", "otc-1", "settled") in await kept(rt)


async def test_a_notice_that_differs_from_the_signed_terms_is_not_acted_on(settings: Settings, keys: KeyStore) -> None:
    """bob signed a purchase of 500 KBT at 1,000 (otc-1), not yet reported. A notice for otc-1
    naming 7 shares at 1 and another NTN is refused as unsolicited and changes nothing, so when
    the real trade settles bob's agent asks for his 500 shares. (Found by review, stop 44: it was
    taken as the settlement, a request for 7 shares recorded and the report marked settled, and
    the real notice then ignored as a repeat.)"""
    async with support.agents(settings, *AGENTS) as rt:
        cert_id = await setup(rt, Decimal(1_000_000))
        report = await signed_report(rt, cert_id)
        notice = ReportSettled(
            matching_number=99,
            name_transfer_number=12345,
            report_id="otc-1",
            seller_user_id="alice",
            buyer_user_id="bob",
            side=Side.BUY,
            issue_code=support.ISSUE,
            price=Decimal(1),
            quantity=7,
            amount=Decimal(7),
            transferred_cert_id=cert_id,
        )
        sent = await from_exchange(rt, notice, "bob")
        outcome = await rt["investor"].outcomes.wait_for(sent, timeout=30)
        row = await ended(rt, (await reported(rt, report)).matching_number)
        assert row["status"] == "completed"

        async def asked_right() -> bool:
            rows = await support.rows(
                rt["investor"], "SELECT shares FROM requests WHERE kind = 'after_transfer' AND user_id = 'bob'"
            )
            return [r["shares"] for r in rows] == [500]

        # found by review (stop 44): only the CertID was compared with what was signed; a notice of
        # other shares was acted on, and the real one then ignored as a repeat
        await support.eventually(asked_right, timeout=15)
        await delivered_to(rt, row["new_cert_id"], "bob")
        assert (outcome.outcome, outcome.reason) == (Outcome.DEAD_LETTERED, Reason.UNSOLICITED)


# --- parties not hosted by the investor agent -----------------------------------------------


async def test_a_brokerage_is_not_a_party_to_a_reported_trade(settings: Settings, keys: KeyStore) -> None:
    """Found by review (stop 44): the exchange accepted a brokerage as the buyer and sent it
    trade.report_settled, which its agent has no handler for (dead-lettered
    unknown_message_type), so it never asked for its certificate. Reports are between investors
    until the brokerage's and custody's agents sign them: refused, nothing kept or sent."""
    async with support.agents(settings, *AGENTS, "brokerage") as rt:
        cert_id = await setup(rt, Decimal(0))
        report = await a_report(
            keys,
            await signed_certificate(rt, "alice", cert_id),
            buyer_user_id="brokerage",
            buyer_account=support.account_box(keys, "brokerage", "brokerage-cash"),
            buyer_name="Kabuto Securities",
        )
        with pytest.raises(Refused) as refused:
            await rt["exchange"].command(EXCHANGE_ID, lambda ctx: reporting.report(ctx, report))
        assert refused.value.refusal.reason is OrderRefusal.USER_MISMATCH
        assert "between investors" in refused.value.refusal.detail
        assert await support.rows(rt["exchange"], "SELECT * FROM reported_trades") == []
        assert (await listed(rt))[cert_id] == ("alice", 500, "valid")
