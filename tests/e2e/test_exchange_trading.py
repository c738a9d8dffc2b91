"""Flow 2 end to end (seed 001 Phase 2, R-001-20..46): a sale with partial fills, name
transfer, new and remainder certificates, cash settlement, and a copied certificate refused."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from agents.investor.trading import OrderTicket, place_order
from broker.envelope import seal
from broker.runtime import AgentRuntime
from broker.settings import Settings
from broker.stock_certificates import endorse
from schemas.certificates import IssuerSignature, SignedCertificate
from schemas.trading import OrderTerms, OrderType, Side, SubmitOrder
from tests import support

AGENTS = ("investor", "issuer", "exchange", "settlement")


async def held(investor: AgentRuntime, user: str) -> list[dict[str, Any]]:
    return await support.rows(
        investor,
        "SELECT cert_id, shares, status, committed_order FROM wallet WHERE holder_user_id = $1 ORDER BY received_at",
        user,
    )


async def issue_to_alice(rt: dict[str, AgentRuntime], shares: int = 1000) -> UUID:
    await support.open_offering(rt["issuer"])
    await support.list_issue(rt["exchange"])
    request_id = await support.request(rt["investor"], "alice", shares=shares)
    await rt["investor"].outcomes.reply("certificate.issued", request_id)
    await rt["exchange"].outcomes.reply("certid_list.updated", request_id)
    return (await held(rt["investor"], "alice"))[0]["cert_id"]


def sell(coid: str, quantity: int, cert_id: UUID, account: str, price: str = "1000") -> OrderTicket:
    return OrderTicket(coid, support.ISSUE, Side.SELL, quantity, account, Decimal(price), cert_id=cert_id)


def buy(coid: str, quantity: int, account: str, price: str = "1000") -> OrderTicket:
    return OrderTicket(
        coid,
        support.ISSUE,
        Side.BUY,
        quantity,
        account,
        Decimal(price),
        holder_name="Bob",
        holder_address="2-2 Kabuto-cho, Tokyo",
    )


async def test_partial_fills_transfer_names_issue_certificates_and_settle_cash(settings: Settings) -> None:
    async with support.agents(settings, *AGENTS) as rt:
        investor, exchange, settlement = rt["investor"], rt["exchange"], rt["settlement"]
        cert_id = await issue_to_alice(rt)
        alice_cash = await support.fund(settlement, "alice")
        bob_cash = await support.fund(settlement, "bob", Decimal("5000000"))

        await investor.command("alice", place_order(sell("s1", 600, cert_id, alice_cash)))
        first = await investor.command("bob", place_order(buy("b1", 400, bob_cash)))
        # R-001-46: bob's certificate by NTN; the cash leg settles (R-001-41)
        await investor.outcomes.reply("certificate.issued", first)
        await investor.outcomes.wait_count(support.replies("settlement.notice", first), 2)

        second = await investor.command("bob", place_order(buy("b2", 200, bob_cash)))
        await investor.outcomes.reply("certificate.issued", second)
        await investor.outcomes.wait_count(support.replies("settlement.notice", second), 2)
        await exchange.outcomes.wait_count(support.replies("settlement.instruction.status", second), 2)

        bob = await held(investor, "bob")
        assert sorted(c["shares"] for c in bob if c["status"] == "held") == [200, 400]
        alice = await held(investor, "alice")
        assert [(c["shares"], c["status"]) for c in alice] == [
            (1000, "surrendered"),
            (600, "surrendered"),
            (400, "held"),
        ]
        assert alice[-1]["committed_order"] is None  # the order is filled: the remainder is hers again

        register = await support.rows(
            rt["issuer"], "SELECT holder_user_id, shares FROM register WHERE status = 'valid'"
        )
        expected = [("alice", 400), ("bob", 200), ("bob", 400)]
        assert sorted((r["holder_user_id"], r["shares"]) for r in register) == expected
        listed = await support.rows(exchange, "SELECT user_id, shares FROM certid_list WHERE status = 'valid'")
        assert sorted((r["user_id"], r["shares"]) for r in listed) == expected  # the exchange agrees

        balances = await support.rows(
            settlement,
            "SELECT account_id, sum(amount) AS balance FROM postings WHERE account_id = ANY($1) GROUP BY account_id "
            "ORDER BY account_id",
            [alice_cash, bob_cash],
        )
        assert balances == [
            {"account_id": alice_cash, "balance": Decimal("600000")},
            {"account_id": bob_cash, "balance": Decimal("4400000")},
        ]
        total = await support.rows(settlement, "SELECT coalesce(sum(amount), 0) AS total FROM postings")
        assert total == [{"total": 0}]

        orders = await support.rows(
            investor, "SELECT client_order_id, status, filled FROM orders ORDER BY client_order_id"
        )
        assert orders == [
            {"client_order_id": "b1", "status": "filled", "filled": 400},
            {"client_order_id": "b2", "status": "filled", "filled": 200},
            {"client_order_id": "s1", "status": "filled", "filled": 600},
        ]


async def test_a_copied_certificate_is_refused_after_the_trade(settings: Settings, keys: Any) -> None:
    async with support.agents(settings, *AGENTS) as rt:
        investor, exchange = rt["investor"], rt["exchange"]
        cert_id = await issue_to_alice(rt, shares=500)
        copy = await support.rows(investor, "SELECT content, issuer_signature, issuer_certificate FROM wallet")
        alice_cash = await support.fund(rt["settlement"], "alice")
        bob_cash = await support.fund(rt["settlement"], "bob", Decimal("1000000"))
        await investor.command("alice", place_order(sell("s1", 500, cert_id, alice_cash)))
        trade = await investor.command("bob", place_order(buy("b1", 500, bob_cash)))
        await investor.outcomes.reply("certificate.issued", trade)

        # alice kept a copy of the certificate she sold and offers it again
        signed = SignedCertificate(
            content=copy[0]["content"],
            issuer_signature=IssuerSignature(
                certificate=copy[0]["issuer_certificate"], signature=copy[0]["issuer_signature"]
            ),
        )
        alice = keys.load_identity("alice")
        order = SubmitOrder(
            client_order_id="s2",
            user_id="alice",
            issue_code=support.ISSUE,
            terms=OrderTerms(side=Side.SELL, order_type=OrderType.LIMIT, price=Decimal("1000"), quantity=500),
            settlement_account=support.account_box(keys, "alice", alice_cash),
            certificate=endorse(alice, signed, "sell_order", "order:alice:s2"),
        )
        sealed = seal(alice, order, recipient="exchange", now=datetime.now(UTC))
        await support.publish_sealed(settings, sealed)
        await exchange.outcomes.wait_for(sealed.envelope.message_id)
        rejected = await support.rows(exchange, "SELECT count(*) AS n FROM orders WHERE client_order_id = 's2'")
        assert rejected == [{"n": 0}]
        outbox = await support.rows(
            exchange,
            "SELECT body FROM outbox_messages WHERE message_type = 'order.rejected'"
            " ORDER BY seq DESC, place DESC LIMIT 1",
        )
        assert b"certificate_not_listed" in outbox[0]["body"]
