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
from uuid import UUID, uuid4

import pytest

from agents.exchange import reporting
from agents.exchange.acceptance import Refused
from agents.exchange.reports import ReportedTrade, TradeReport
from agents.investor import repo as investor_repo
from agents.investor import reported as investor_reports
from agents.settlement import app as ledger
from agents.settlement import instruction_desk
from broker.consumer import Outcome
from broker.context import Context
from broker.errors import Reason
from broker.pki import KeyStore
from broker.runtime import AgentRuntime
from broker.settings import Settings
from broker.stock_certificates import content_of, endorse
from broker.trade_reports import ReportTerms, bought
from schemas.certificates import EndorsedCertificate, ShareClass, SignedCertificate
from schemas.identity import EXCHANGE_ID, SETTLEMENT_ID
from schemas.trading import OrderRefusal, ReportSettled, Side
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


async def signed_report(
    rt: Rt,
    cert_id: UUID,
    *,
    seller: str = "alice",
    buyer: str = "bob",
    report_id: str = "otc-1",
    quantity: int = 500,
    price: Decimal = Decimal(1000),
    buyer_account: str | None = None,
) -> TradeReport:
    """A report both parties signed through their investor agent (agents/investor/reported.py),
    which keeps what it signed for when the trade settles."""
    terms = ReportTerms(report_id, support.ISSUE, ShareClass.COMMON, quantity, price, seller, buyer)
    holder = (buyer.capitalize(), "2-2 Kabuto-cho, Tokyo")
    sale = await rt["investor"].command(seller, investor_reports.sign_sale(terms, cert_id, f"{seller}-cash"))
    purchase = await rt["investor"].command(
        buyer, investor_reports.sign_purchase(terms, sale.certificate, buyer_account or f"{buyer}-cash", holder)
    )
    return TradeReport.of(terms, (sale.certificate, sale.account), (purchase.consent, purchase.account), holder)


async def wallet(rt: Rt, cert_id: UUID) -> tuple[str, str] | None:
    rows = await support.rows(rt["investor"], "SELECT holder_user_id, status FROM wallet WHERE cert_id = $1", cert_id)
    return (rows[0]["holder_user_id"], rows[0]["status"]) if rows else None


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
        trade = await reported(rt, await signed_report(rt, cert_id, quantity=quantity))
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
        # told by the exchange (trade.report_settled), the buyer's agent asked for the new
        # certificate by its NTN and holds it; the seller's gave the old one up
        new_cert = row["new_cert_id"]

        async def delivered() -> bool:
            return await wallet(rt, new_cert) == ("bob", "held")

        await support.eventually(delivered, timeout=30)
        assert await wallet(rt, cert_id) == ("alice", "surrendered")
        remainder = [c for c, (user, _, status) in certid_list.items() if user == "alice" and status == "valid"]
        for kept in remainder:  # the seller's remainder, sent to its wallet by the issuer
            assert await wallet(rt, kept) == ("alice", "held")
        await conserved(rt, 500)


async def test_an_unfunded_reported_trade_waits_with_its_certificate_held_then_settles_when_recycled(
    settings: Settings, keys: KeyStore
) -> None:
    """R-001-26: no cover, so settlement finds the buyer's cash short and the trade waits; meanwhile
    the certificate backs no sell order at the exchange, and recycling settles it once funded."""
    async with support.agents(settings, *AGENTS) as rt:
        cert_id = await setup(rt, Decimal(200_000))
        trade = await reported(rt, await signed_report(rt, cert_id))
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
        report = await signed_report(rt, cert_id, buyer_account="bob-nowhere")
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
            ("a lender as the buyer", fresh, {"buyer_user_id": "credit"}, OrderRefusal.USER_MISMATCH),
            ("the issuer as the buyer", fresh, {"buyer_user_id": "issuer"}, OrderRefusal.USER_MISMATCH),
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


async def test_a_party_signs_only_its_own_side_of_terms_it_can_meet(settings: Settings, keys: KeyStore) -> None:
    """The investor agent signs for a participant only its side, of a certificate in its wallet
    with the shares sold, and a purchase only of a sale that holds for the same terms; each
    refusal says why, and nothing is kept."""
    async with support.agents(settings, *AGENTS) as rt:
        cert_id = await setup(rt, Decimal(1_000_000))
        terms = ReportTerms("otc-1", support.ISSUE, ShareClass.COMMON, 500, Decimal(1000), "alice", "bob")
        sale_by = investor_reports.sign_sale
        refusals = [
            ("bob", sale_by(terms, cert_id, "bob-cash"), "as the seller, not bob"),
            ("alice", sale_by(terms, uuid4(), "alice-cash"), "is not in alice's wallet"),
            ("alice", sale_by(replace(terms, quantity=600), cert_id, "alice-cash"), "against a certificate of 500"),
            ("alice", sale_by(replace(terms, issue_code="KBU"), cert_id, "alice-cash"), "is of KBT"),
        ]
        sale = await rt["investor"].command("alice", sale_by(terms, cert_id, "alice-cash"))
        at_1200 = replace(terms, report_id="otc-2", price=Decimal(1200))
        other_sale = await rt["investor"].command("alice", sale_by(at_1200, cert_id, "alice-cash"))
        refusals.append(("alice", sale_by(replace(terms, price=Decimal(1100)), cert_id, "alice-cash"), "other terms"))
        holder = ("Bob", "Tokyo")
        purchase_by = investor_reports.sign_purchase
        refusals += [
            ("alice", purchase_by(terms, sale.certificate, "alice-cash", holder), "as the buyer, not alice"),
            ("bob", purchase_by(terms, other_sale.certificate, "bob-cash", holder), "the sale does not hold"),
            ("bob", purchase_by(terms, sale.certificate, "bob-cash", ("Bob", "")), "holder's name and address"),
            ("bob", purchase_by(replace(terms, quantity=600), sale.certificate, "bob-cash", holder), "does not hold"),
        ]
        for user, command, why in refusals:
            with pytest.raises(investor_reports.ReportError, match=why):
                await rt["investor"].command(user, command)
        kept = await support.rows(rt["investor"], "SELECT user_id, side, price FROM reports ORDER BY price")
        assert [(r["user_id"], r["side"], r["price"]) for r in kept] == [
            ("alice", "sell", Decimal(1000)),
            ("alice", "sell", Decimal(1200)),
        ]  # the two sales signed; no refused one, and no purchase


async def test_a_settled_notice_is_acted_on_once_and_only_for_a_report_the_participant_signed(
    settings: Settings, keys: KeyStore
) -> None:
    """trade.report_settled for a report bob never signed is refused as unsolicited, and changes
    nothing; the same notice again after a settled trade asks for no second certificate."""
    async with support.agents(settings, *AGENTS) as rt:
        cert_id = await setup(rt, Decimal(1_000_000))
        trade = await reported(rt, await signed_report(rt, cert_id))
        row = await ended(rt, trade.matching_number)
        notice = settled_notice(trade.matching_number, row["name_transfer_number"], cert_id, Side.BUY)
        requests = "SELECT count(*) AS n FROM requests WHERE kind = 'after_transfer'"

        async def asked_once() -> bool:
            return (await support.rows(rt["investor"], requests)) == [{"n": 1}]

        await support.eventually(asked_once, timeout=30)
        again = await from_exchange(rt, notice, "bob")
        assert (await rt["investor"].outcomes.wait_for(again, timeout=30)).outcome is Outcome.PROCESSED
        stranger = await from_exchange(rt, notice.model_copy(update={"report_id": "never"}), "bob")
        refused = await rt["investor"].outcomes.wait_for(stranger, timeout=30)
        assert (refused.outcome, refused.reason) == (Outcome.DEAD_LETTERED, Reason.UNSOLICITED)
        misaddressed = await from_exchange(rt, notice, "carol")  # bob's side of the trade, sent to carol
        refused = await rt["investor"].outcomes.wait_for(misaddressed, timeout=30)
        assert (refused.outcome, refused.reason) == (Outcome.DEAD_LETTERED, Reason.UNSOLICITED)
        assert await support.rows(rt["investor"], requests) == [{"n": 1}]


def settled_notice(number: int, ntn: int, cert_id: UUID, side: Side) -> ReportSettled:
    """The exchange's trade.report_settled of alice's sale to bob of 500 at 1,000 (report otc-1)."""
    return ReportSettled(
        matching_number=number,
        name_transfer_number=ntn,
        report_id="otc-1",
        seller_user_id="alice",
        buyer_user_id="bob",
        side=side,
        issue_code=support.ISSUE,
        price=Decimal(1000),
        quantity=500,
        amount=Decimal(500_000),
        transferred_cert_id=cert_id,
    )


async def from_exchange(rt: Rt, notice: ReportSettled, to: str) -> UUID:
    async def emit(ctx: Context) -> UUID:
        return ctx.emit(notice, to=to).envelope.message_id

    return await rt["exchange"].command(EXCHANGE_ID, emit)
