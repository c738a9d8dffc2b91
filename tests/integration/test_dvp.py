"""Delivery versus payment through the real investor, issuer, exchange and settlement agents
(issue 11, docs/dvp.md; R-001-20..46, R-001-42).

Cover at order entry (an empty or someone else's account buys nothing and nothing moves),
holds honoured by withdrawals, a failed leg leaving both sides as they were, recycling then
settling once the buyer is funded, the cut-off, cancellation by both parties, partial
settlement, the trade completion notice presented to settlement, mandates, and conservation of
cash and shares throughout.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest

from agents.investor import instructions as investor_instructions
from agents.investor.trading import cancel_order
from agents.settlement import app as ledger
from agents.settlement import domain, instruction_desk
from broker.consumer import Outcome
from broker.context import Context
from broker.envelope import seal
from broker.pki import KeyStore
from broker.runtime import AgentRuntime
from broker.settings import Settings
from broker.stock_certificates import endorse
from schemas.brokerage import LedgerLeg, PostBrokeredSettlement
from schemas.certificates import IssuerSignature, ShareClass, SignedCertificate
from schemas.dvp import CertificateLeg, PresentTradeNotice, SettlementInstruction
from schemas.identity import EXCHANGE_ID, SETTLEMENT_ID
from schemas.trading import Side
from tests import support
from tests.integration.test_trading_paths import answer_to, buy, issue, market, place, sell, sent, traded

AGENTS = ("investor", "issuer", "exchange", "settlement")
Rt = dict[str, AgentRuntime]


async def balance(rt: Rt, account: str) -> Decimal:
    rows = await support.rows(
        rt["settlement"], "SELECT coalesce(sum(amount), 0) AS b FROM postings WHERE account_id = $1", account
    )
    return Decimal(rows[0]["b"])


async def held(rt: Rt, account: str) -> Decimal:
    rows = await support.rows(
        rt["settlement"],
        "SELECT coalesce(sum(amount), 0) AS h FROM holds WHERE account_id = $1 AND status = 'placed'",
        account,
    )
    return Decimal(rows[0]["h"])


async def register(rt: Rt) -> list[tuple[str, int, str | None]]:
    rows = await support.rows(
        rt["issuer"], "SELECT holder_user_id, shares, committed_by FROM register WHERE status = 'valid' ORDER BY 1, 2"
    )
    return [(r["holder_user_id"], r["shares"], r["committed_by"]) for r in rows]


async def conserved(rt: Rt, shares: int) -> None:
    """Cash: every entry balances and the ledger sums to zero. Shares: the valid register holds them all."""
    assert await support.rows(rt["settlement"], "SELECT coalesce(sum(amount), 0) AS t FROM postings") == [{"t": 0}]
    unbalanced = "SELECT entry_id FROM postings GROUP BY entry_id HAVING sum(amount) <> 0"
    assert await support.rows(rt["settlement"], unbalanced) == []
    valid = "SELECT coalesce(sum(shares), 0) AS s FROM register WHERE status = 'valid'"
    total = await support.rows(rt["issuer"], valid)
    assert total == [{"s": shares}]


async def instruction(rt: Rt, number: int) -> dict[str, Any]:
    rows = await support.rows(rt["settlement"], "SELECT * FROM dvp_instructions WHERE matching_number = $1", number)
    return rows[0]


# --- cover at order entry ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("account_of", "funds", "reason"),
    [
        ("bob", Decimal(0), "insufficient_funds"),  # the empty-account buyer of issue 11
        ("alice", Decimal(0), "account_not_owned"),  # the foreign-account buyer of issue 11
        ("nobody", Decimal(0), "unknown_account"),
    ],
)
async def test_issue_11_an_uncovered_buyer_is_refused_and_nothing_moves(
    settings: Settings, account_of: str, funds: Decimal, reason: str
) -> None:
    """R-001-23: the buy order is refused with settlement's reason; alice's certificate and every
    account are as they were, and her sell order still rests."""
    async with support.agents(settings, *AGENTS) as rt:
        await support.open_offering(rt["issuer"])
        await support.list_issue(rt["exchange"])
        await support.fund(rt["settlement"], "alice", Decimal(1_000_000))
        await support.fund(rt["settlement"], "bob", funds)
        cert_id = await issue(rt, "alice", 500)
        await place(rt, "alice", sell("s1", 500, cert_id))
        before = (await register(rt), await support.rows(rt["settlement"], "SELECT * FROM postings ORDER BY 1, 2"))

        ticket = replace(buy("b1", 500), settlement_account=f"{account_of}-cash")
        await place(rt, "bob", ticket, expect="order.rejected")

        mine = await support.rows(rt["investor"], "SELECT status, reason FROM orders WHERE client_order_id = 'b1'")
        assert mine == [{"status": "rejected", "reason": reason}]
        orders = await support.rows(rt["exchange"], "SELECT client_order_id, status FROM orders ORDER BY 1")
        assert orders == [{"client_order_id": "s1", "status": "open"}]
        assert await support.rows(rt["exchange"], "SELECT * FROM matches") == []
        after = (await register(rt), await support.rows(rt["settlement"], "SELECT * FROM postings ORDER BY 1, 2"))
        assert after == before
        assert await support.rows(rt["settlement"], "SELECT * FROM holds WHERE status = 'placed'") == []
        await conserved(rt, 500)


async def test_issue_11_a_withdrawal_cannot_take_a_resting_buy_orders_cover(settings: Settings) -> None:
    """A resting buy of 500 at 1,000 holds 500,000 of bob's 600,000: only 100,000 can leave."""
    async with support.agents(settings, *AGENTS) as rt:
        await support.open_offering(rt["issuer"])
        await support.list_issue(rt["exchange"])
        bob_cash = await support.fund(rt["settlement"], "bob", Decimal(600_000))
        await place(rt, "bob", buy("b1", 500))
        assert await held(rt, bob_cash) == Decimal(500_000)

        with pytest.raises(domain.InsufficientFunds, match="100,000 JPY available"):
            await rt["settlement"].command(SETTLEMENT_ID, ledger.withdraw(bob_cash, Decimal(100_001), "out-1"))
        await rt["settlement"].command(SETTLEMENT_ID, ledger.withdraw(bob_cash, Decimal(100_000), "out-2"))
        assert await balance(rt, bob_cash) == Decimal(500_000)

        # the cover is released when the order ends, and the money is bob's to take again
        cancel = await rt["investor"].command("bob", cancel_order("b1"))
        await rt["investor"].outcomes.wait(answer_to(cancel, "order.cancelled"))
        await rt["settlement"].outcomes.wait(lambda s: s.type == "settlement.cover.release")
        assert await held(rt, bob_cash) == 0
        await rt["settlement"].command(SETTLEMENT_ID, ledger.withdraw(bob_cash, Decimal(500_000), "out-3"))


async def test_r_001_41_a_covered_trade_settles_both_legs_and_releases_the_cover(settings: Settings) -> None:
    async with support.agents(settings, *AGENTS) as rt:
        await market(rt)
        cert_id = await issue(rt, "alice", 500)
        await place(rt, "alice", sell("s1", 500, cert_id, price="990"))
        order = await place(rt, "bob", buy("b1", 300, price="1000"))
        await traded(rt, order)
        await rt["settlement"].outcomes.wait(lambda s: s.type == "settlement.cover.release")

        row = await instruction(rt, 1)
        assert (row["processing"], row["matching"], row["settlement"], row["settled_quantity"]) == (
            "accepted",
            "matched",
            "settled",
            300,
        )
        assert await balance(rt, "bob-cash") == Decimal(5_000_000 - 297_000)  # at the resting price, 990
        assert await balance(rt, "alice-cash") == Decimal(5_000_000 + 297_000)
        assert await held(rt, "bob-cash") == 0  # the 300 × 10 the cover held beyond the price is free
        assert await register(rt) == [("alice", 200, "exchange"), ("bob", 300, None)]
        matches = await support.rows(rt["exchange"], "SELECT status, settled, settlement_status FROM matches")
        assert matches == [{"status": "completed", "settled": True, "settlement_status": "settled"}]
        events = await support.rows(
            rt["settlement"],
            "SELECT count(*) AS n FROM outbox_messages WHERE message_type = 'settlement.instruction.status_changed'",
        )
        assert events == [{"n": 2}]  # accepted (pending), settled: one event per status change
        await conserved(rt, 500)


# --- an instruction the buyer cannot pay (settlement checks cash itself) ------------------------


async def exchange_instruction(
    rt: Rt, keys: KeyStore, cert_id: UUID, *, number: int = 901, quantity: int = 500, partial: bool = False
) -> SettlementInstruction:
    """What the exchange sends for an execution, built here for a buyer who gave no cover: settlement
    must not trust the exchange for the cash, so it checks the buyer's available balance itself."""
    wallet = await support.rows(
        rt["investor"], "SELECT content, issuer_signature, issuer_certificate FROM wallet WHERE cert_id = $1", cert_id
    )
    signed = SignedCertificate(
        content=wallet[0]["content"],
        issuer_signature=IssuerSignature(
            certificate=wallet[0]["issuer_certificate"], signature=wallet[0]["issuer_signature"]
        ),
    )
    by_seller = endorse(keys.load_identity("alice"), signed, "sell_order", "order:alice:otc-1")
    by_exchange = endorse(keys.load_identity(EXCHANGE_ID), by_seller, "name_transfer", f"omn:{number}")
    today = datetime.now(UTC).date()
    return SettlementInstruction(
        matching_number=number,
        trade_date=today,
        intended_settlement_date=today,
        issue_code=support.ISSUE,
        quantity=quantity,
        price=Decimal(1000),
        amount=Decimal(1000 * quantity),
        buyer_user_id="bob",
        buyer_account=support.account_box(keys, "bob", "bob-cash"),
        seller_user_id="alice",
        seller_account=support.account_box(keys, "alice", "alice-cash"),
        partial_allowed=partial,
        securities=CertificateLeg(
            agent="issuer",
            exchange_id=EXCHANGE_ID,
            cert_id=cert_id,
            share_class=ShareClass.COMMON,
            certificate=by_exchange,
            buyer_name="Bob",
            buyer_address="2-2 Kabuto-cho, Tokyo",
            seller_order=77,
            seller_order_open=False,
        ),
    )


async def unfunded(rt: Rt, settings: Settings, keys: KeyStore, **kwargs: Any) -> tuple[UUID, SettlementInstruction]:
    await support.open_offering(rt["issuer"])
    await support.list_issue(rt["exchange"])
    await support.fund(rt["settlement"], "alice")
    await support.fund(rt["settlement"], "bob", Decimal(200_000))
    cert_id = await issue(rt, "alice", 500)
    message = await exchange_instruction(rt, keys, cert_id, **kwargs)
    sealed = seal(keys.load_identity(EXCHANGE_ID), message, recipient=SETTLEMENT_ID, now=datetime.now(UTC))
    await support.publish_sealed(settings, sealed)
    assert (await rt["settlement"].outcomes.wait_for(sealed.envelope.message_id)).outcome is Outcome.PROCESSED
    return cert_id, message


async def test_issue_11_lack_of_cash_leaves_both_sides_as_they_were_then_recycling_settles(
    settings: Settings, keys: KeyStore
) -> None:
    async with support.agents(settings, *AGENTS) as rt:
        await unfunded(rt, settings, keys)
        row = await instruction(rt, 901)
        assert (row["processing"], row["settlement"], row["reason"]) == ("accepted", "pending", "lack_of_cash")
        assert await register(rt) == [("alice", 500, None)]  # the seller's certificate is not lost
        assert await balance(rt, "bob-cash") == Decimal(200_000) and await held(rt, "bob-cash") == 0
        assert await support.rows(rt["issuer"], "SELECT * FROM reservations") == []  # nothing asked of the issuer
        told = await sent_statuses(rt, "bob")
        assert told[-1]["status"]["reason"] == "lack_of_cash"

        # recycling before the buyer is funded changes nothing; after, both legs settle
        assert await rt["settlement"].command(SETTLEMENT_ID, instruction_desk.recycle()) == {
            "attempted": 0,
            "failed": 0,
            "waiting": 1,
        }
        await rt["settlement"].command(SETTLEMENT_ID, ledger.deposit("bob-cash", Decimal(300_000), "top-up"))
        outcome = await rt["settlement"].command(SETTLEMENT_ID, instruction_desk.recycle())
        assert outcome["attempted"] == 1
        await rt["settlement"].outcomes.wait(lambda s: s.type == "securities.committed")
        row = await instruction(rt, 901)
        assert (row["settlement"], row["settled_quantity"], row["attempt"]) == ("settled", 500, 1)
        assert await register(rt) == [("bob", 500, None)]
        assert (await balance(rt, "bob-cash"), await balance(rt, "alice-cash")) == (Decimal(0), Decimal(500_000))
        await conserved(rt, 500)


async def sent_statuses(rt: Rt, to: str) -> list[dict[str, Any]]:
    rows = await support.rows(
        rt["settlement"],
        "SELECT body FROM outbox_messages WHERE message_type = 'settlement.instruction.status' AND routing_key = $1 "
        "ORDER BY seq, place",
        to,
    )
    return [json.loads(r["body"])["payload"] for r in rows]


async def test_issue_11_an_instruction_past_its_cut_off_fails_and_nothing_moves(
    settings: Settings, keys: KeyStore
) -> None:
    async with support.agents(settings, *AGENTS) as rt:
        await unfunded(rt, settings, keys)
        today = datetime.now(UTC).date()
        still = await rt["settlement"].command(SETTLEMENT_ID, instruction_desk.recycle(today + timedelta(days=2), 2))
        assert still == {"attempted": 0, "failed": 0, "waiting": 1}
        ended = await rt["settlement"].command(SETTLEMENT_ID, instruction_desk.recycle(today + timedelta(days=3), 2))
        assert ended == {"attempted": 0, "failed": 1, "waiting": 0}
        row = await instruction(rt, 901)
        assert (row["processing"], row["settlement"], row["reason"]) == ("accepted", "failed", "past_cut_off")
        assert await register(rt) == [("alice", 500, None)]
        assert await balance(rt, "bob-cash") == Decimal(200_000)
        later = await rt["settlement"].command(SETTLEMENT_ID, instruction_desk.recycle(date.max - timedelta(days=9)))
        assert later == {"attempted": 0, "failed": 0, "waiting": 0}  # a failed instruction stays failed
        await conserved(rt, 500)


async def test_issue_11_a_matched_instruction_is_cancelled_once_both_parties_ask(
    settings: Settings, keys: KeyStore
) -> None:
    async with support.agents(settings, *AGENTS) as rt:
        await unfunded(rt, settings, keys)
        stranger = await rt["investor"].command("carol", investor_instructions.cancel_instruction(901))
        await rt["investor"].outcomes.wait(answer_to(stranger, "settlement.instruction.cancel_refused"))
        first = await rt["investor"].command("alice", investor_instructions.cancel_instruction(901))
        await rt["settlement"].outcomes.wait_for(first)
        assert (await instruction(rt, 901))["processing"] == "accepted"  # one party is not enough
        second = await rt["investor"].command("bob", investor_instructions.cancel_instruction(901))
        await rt["settlement"].outcomes.wait_for(second)
        row = await instruction(rt, 901)
        assert (row["processing"], row["settlement"], row["reason"]) == ("cancelled", "failed", "cancelled_by_party")
        refused = await support.rows(
            rt["investor"],
            "SELECT body->>'reason' AS r FROM settlement_messages WHERE message_type LIKE '%cancel_refused'",
        )
        assert refused == [{"r": "unknown_instruction"}]
        # a cancelled instruction is never recycled, whoever pays later
        await rt["settlement"].command(SETTLEMENT_ID, ledger.deposit("bob-cash", Decimal(300_000), "late"))
        assert (await rt["settlement"].command(SETTLEMENT_ID, instruction_desk.recycle()))["attempted"] == 0
        assert await register(rt) == [("alice", 500, None)]
        await conserved(rt, 500)


async def test_issue_11_partial_settlement_delivers_what_the_cash_pays_for_then_the_rest(
    settings: Settings, keys: KeyStore
) -> None:
    async with support.agents(settings, *AGENTS) as rt:
        await unfunded(rt, settings, keys, partial=True)  # bob can pay for 200 of 500
        await rt["settlement"].outcomes.wait(lambda s: s.type == "securities.committed")
        row = await instruction(rt, 901)
        assert (row["settlement"], row["settled_quantity"], row["reason"]) == (
            "partially_settled",
            200,
            "lack_of_cash",
        )
        assert await register(rt) == [("alice", 300, None), ("bob", 200, None)]
        assert (await balance(rt, "bob-cash"), await balance(rt, "alice-cash")) == (Decimal(0), Decimal(200_000))

        await rt["settlement"].command(SETTLEMENT_ID, ledger.deposit("bob-cash", Decimal(300_000), "rest"))
        await rt["settlement"].command(SETTLEMENT_ID, instruction_desk.recycle())
        await rt["settlement"].outcomes.wait_count(lambda s: s.type == "securities.committed", 2)
        row = await instruction(rt, 901)
        assert (row["settlement"], row["settled_quantity"], row["attempt"]) == ("settled", 500, 2)
        assert await register(rt) == [("bob", 200, None), ("bob", 300, None)]
        assert (await balance(rt, "bob-cash"), await balance(rt, "alice-cash")) == (Decimal(0), Decimal(500_000))
        await conserved(rt, 500)


# --- R-001-42 ---------------------------------------------------------------------------------


async def test_r_001_42_an_investor_presents_its_trade_completion_notice(settings: Settings) -> None:
    async with support.agents(settings, *AGENTS) as rt:
        await market(rt)
        cert_id = await issue(rt, "alice", 500)
        await place(rt, "alice", sell("s1", 500, cert_id))
        await traded(rt, await place(rt, "bob", buy("b1", 500)))
        investor = rt["investor"]

        presented = await investor.command("bob", investor_instructions.present_notice(1))
        await investor.outcomes.wait(answer_to(presented, "settlement.trade_notice.verified"))
        forged = PresentTradeNotice(
            matching_number=1,
            side=Side.BUY,
            issue_code=support.ISSUE,
            quantity=5,
            price=Decimal(1000),
            amount=Decimal(5000),
        )
        wrong = await investor.command("bob", lambda ctx: _emit(ctx, forged))
        await investor.outcomes.wait(answer_to(wrong, "settlement.trade_notice.verified"))
        true_notice = forged.model_copy(update={"quantity": 500, "amount": Decimal(500_000)})
        nosy = await investor.command("carol", lambda ctx: _emit(ctx, true_notice))
        await investor.outcomes.wait(answer_to(nosy, "settlement.trade_notice.verified"))

        answers = await support.rows(
            investor,
            "SELECT user_id, body FROM settlement_messages WHERE message_type = 'settlement.trade_notice.verified' "
            "ORDER BY id",
        )
        bodies = [(a["user_id"], json.loads(a["body"])) for a in answers]
        assert bodies[0][0] == "bob" and bodies[0][1]["verified"] is True
        assert bodies[0][1]["status"]["settlement"] == "settled" and bodies[0][1]["status"]["settled_quantity"] == 500
        assert (bodies[1][1]["verified"], bodies[1][1]["reason"]) == (False, "notice_mismatch")
        assert (bodies[2][0], bodies[2][1]["verified"], bodies[2][1]["reason"]) == (
            "carol",
            False,
            "unknown_instruction",
        )
        assert bodies[2][1]["status"] is None  # nothing about someone else's trade


async def _emit(ctx: Context, message: PresentTradeNotice) -> UUID:
    return ctx.emit(message, to=SETTLEMENT_ID).envelope.message_id


# --- mandates ---------------------------------------------------------------------------------


async def test_issue_11_the_brokerage_posts_only_on_accounts_mandated_to_it(settings: Settings, keys: KeyStore) -> None:
    async with support.agents(settings, "investor", "settlement") as rt:
        await support.fund(rt["settlement"], "alice", Decimal(100_000))
        await rt["settlement"].command(SETTLEMENT_ID, ledger.open_account("brk-clearing", "brokerage"))
        posting = PostBrokeredSettlement(
            order_id=UUID(int=1),
            hold_id=UUID(int=1),
            customer="alice",
            description="brokered buy",
            legs=(
                LedgerLeg(account="alice-cash", amount=Decimal(-50_000), means="39"),
                LedgerLeg(account="brk-clearing", amount=Decimal(50_000), means="23"),
            ),
        )

        async def post() -> dict[str, Any]:
            sealed = seal(keys.load_identity("brokerage"), posting, recipient=SETTLEMENT_ID, now=datetime.now(UTC))
            await support.publish_sealed(settings, sealed)
            await rt["settlement"].outcomes.wait_for(sealed.envelope.message_id)
            return (await sent(rt["settlement"], "funds.brokered_failed", sealed.envelope.correlation_id) or [{}])[0]

        refused = await post()
        assert refused["reason"] == "not_mandated"
        assert await balance(rt, "alice-cash") == Decimal(100_000)

        # alice grants the mandate herself (a signed message); bob cannot grant one on her account
        nosy = await rt["investor"].command("bob", investor_instructions.mandate("alice-cash", "brokerage"))
        await rt["investor"].outcomes.wait(answer_to(nosy, "settlement.mandate.recorded"))
        assert await support.rows(rt["settlement"], "SELECT * FROM mandates") == []
        granted = await rt["investor"].command("alice", investor_instructions.mandate("alice-cash", "brokerage"))
        await rt["investor"].outcomes.wait(answer_to(granted, "settlement.mandate.recorded"))
        assert (await post()) == {}
        assert await balance(rt, "alice-cash") == Decimal(50_000)
        said = await support.rows(
            rt["investor"],
            "SELECT user_id, body->>'active' AS active, body->>'refused' AS refused "
            "FROM settlement_messages ORDER BY id",
        )
        assert said == [
            {"user_id": "bob", "active": "false", "refused": "account_not_owned"},
            {"user_id": "alice", "active": "true", "refused": None},
        ]
