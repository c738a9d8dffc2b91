"""Flow 6 end to end (seed 001 Phases 3 and 4, R-001-47..56): hand-over and off-exchange name
transfer, holdings inquiry, reissue after loss, split and merge — and the dead CertIDs refused."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any
from uuid import UUID

from agents.investor.domain import Dividend
from agents.investor.lifecycle import claim_handover, hand_over, inquire_holdings, reissue
from agents.investor.trading import OrderTicket, place_order
from broker.runtime import AgentRuntime
from broker.settings import Settings
from schemas.issuance import DividendMethod
from schemas.lifecycle import ReissueKind
from schemas.trading import Side
from tests import support

AGENTS = ("investor", "issuer", "exchange")
DIVIDEND = Dividend(method=DividendMethod.BANK_TRANSFER, account="0002-999999")


async def wallet(investor: AgentRuntime, user: str) -> list[dict[str, Any]]:
    return await support.rows(
        investor, "SELECT cert_id, shares, status FROM wallet WHERE holder_user_id = $1 ORDER BY received_at", user
    )


async def issued(rt: dict[str, AgentRuntime], user: str = "alice", shares: int = 1000) -> UUID:
    request_id = await support.request(rt["investor"], user, shares=shares)
    await rt["investor"].outcomes.reply("certificate.issued", request_id)
    await rt["exchange"].outcomes.reply("certid_list.updated", request_id)
    return (await wallet(rt["investor"], user))[-1]["cert_id"]


async def valid(runtime: AgentRuntime, table: str, holder_column: str) -> list[tuple[str, int]]:
    rows = await support.rows(runtime, f"SELECT {holder_column} AS holder, shares FROM {table} WHERE status = 'valid'")
    return sorted((r["holder"], r["shares"]) for r in rows)


async def test_a_certificate_handed_over_is_registered_to_the_transferee(settings: Settings) -> None:
    async with support.agents(settings, *AGENTS) as rt:
        investor, issuer, exchange = rt["investor"], rt["issuer"], rt["exchange"]
        await support.open_offering(issuer)
        cert_id = await issued(rt)

        handover_id = await investor.command("alice", hand_over(cert_id, "bob", "a gift"))
        await investor.outcomes.wait(lambda s: s.type == "certificate.handover")
        claim = await investor.command("bob", claim_handover(handover_id, "Bob", "2-2 Kabuto-cho", DIVIDEND))
        await investor.outcomes.reply("certificate.issued", claim)
        await exchange.outcomes.wait_count(lambda s: s.type == "certid_list.updated", 2)

        assert [(c["shares"], c["status"]) for c in await wallet(investor, "bob")] == [(1000, "held")]
        assert [(c["shares"], c["status"]) for c in await wallet(investor, "alice")] == [(1000, "handed_over")]
        assert await valid(issuer, "register", "holder_user_id") == [("bob", 1000)]
        assert await valid(exchange, "certid_list", "user_id") == [("bob", 1000)]
        history = await support.rows(issuer, "SELECT kind, buyer_user_id, seller_user_id FROM name_transfers")
        assert history == [{"kind": "off_exchange", "buyer_user_id": "bob", "seller_user_id": "alice"}]
        dividend = await support.rows(issuer, "SELECT dividend_method FROM register WHERE status = 'valid'")
        assert dividend == [{"dividend_method": "bank_transfer"}]  # recorded from request 43 (S148)


async def test_a_lost_certificate_is_reissued_and_the_old_certid_is_dead_everywhere(settings: Settings) -> None:
    async with support.agents(settings, *AGENTS, "settlement") as rt:
        investor, issuer, exchange = rt["investor"], rt["issuer"], rt["exchange"]
        await support.open_offering(issuer)
        await support.list_issue(exchange)
        lost = await issued(rt)

        request_id = await investor.command("alice", reissue(ReissueKind.LOST, (lost,)))
        await investor.outcomes.reply("certificate.reissued", request_id)
        await exchange.outcomes.reply("certid_list.updated", request_id)
        assert [(c["shares"], c["status"]) for c in await wallet(investor, "alice")] == [
            (1000, "surrendered"),
            (1000, "held"),
        ]
        numbers = await support.rows(issuer, "SELECT DISTINCT certificate_number FROM register")
        assert len(numbers) == 1  # the certificate number stays; the CertID changes

        # even its rightful holder can no longer sell or transfer the old CertID
        await investor.query(lambda c: c.execute("UPDATE wallet SET status = 'held' WHERE cert_id = $1", lost))
        account = await support.fund(rt["settlement"], "alice")
        sent = await investor.command(
            "alice",
            place_order(OrderTicket("old", support.ISSUE, Side.SELL, 100, account, Decimal(1000), cert_id=lost)),
        )
        await investor.outcomes.reply("order.rejected", sent)
        rejected = await support.rows(investor, "SELECT reason FROM orders WHERE client_order_id = 'old'")
        assert rejected == [{"reason": "certificate_not_listed"}]
        await investor.query(lambda c: c.execute("UPDATE wallet SET committed_order = NULL WHERE cert_id = $1", lost))
        handover_id = await investor.command("alice", hand_over(lost, "bob"))
        await investor.outcomes.wait(lambda s: s.type == "certificate.handover")
        claim = await investor.command("bob", claim_handover(handover_id, "Bob", "Tokyo", DIVIDEND))
        await investor.outcomes.reply("name_transfer.refused", claim)
        refusal = await support.rows(investor, "SELECT status, reason FROM requests WHERE request_id = $1", claim)
        assert refusal == [{"status": "refused", "reason": "not_registered"}]
        assert await valid(issuer, "register", "holder_user_id") == [("alice", 1000)]


async def test_split_and_merge_conserve_shares_and_keep_the_register_consistent(settings: Settings) -> None:
    async with support.agents(settings, *AGENTS) as rt:
        investor, issuer, exchange = rt["investor"], rt["issuer"], rt["exchange"]
        await support.open_offering(issuer)
        whole = await issued(rt)

        split = await investor.command("alice", reissue(ReissueKind.SPLIT, (whole,), (600, 300, 100)))
        await investor.outcomes.reply("certificate.reissued", split)
        await exchange.outcomes.reply("certid_list.updated", split)
        assert await valid(issuer, "register", "holder_user_id") == [("alice", 100), ("alice", 300), ("alice", 600)]
        assert await valid(exchange, "certid_list", "user_id") == [("alice", 100), ("alice", 300), ("alice", 600)]

        parts = [c["cert_id"] for c in await wallet(investor, "alice") if c["status"] == "held" and c["shares"] < 600]
        merge = await investor.command("alice", reissue(ReissueKind.MERGE, tuple(parts)))
        await investor.outcomes.reply("certificate.reissued", merge)
        await exchange.outcomes.reply("certid_list.updated", merge)
        assert await valid(issuer, "register", "holder_user_id") == [("alice", 400), ("alice", 600)]
        assert await valid(exchange, "certid_list", "user_id") == [("alice", 400), ("alice", 600)]
        held = [c["shares"] for c in await wallet(investor, "alice") if c["status"] == "held"]
        assert sorted(held) == [400, 600]

        inquiry = await investor.command("alice", inquire_holdings(support.ISSUE))
        await investor.outcomes.reply("holdings.statement", inquiry)
        statement = await support.rows(investor, "SELECT statement FROM holdings_statements WHERE user_id = 'alice'")
        holdings = json.loads(statement[0]["statement"])["holdings"]
        assert sorted(h["shares"] for h in holdings) == [400, 600] and all(h["issued"] for h in holdings)


async def test_a_reissue_that_does_not_conserve_shares_is_refused_and_changes_nothing(settings: Settings) -> None:
    async with support.agents(settings, *AGENTS) as rt:
        investor, issuer = rt["investor"], rt["issuer"]
        await support.open_offering(issuer)
        whole = await issued(rt)
        bad = await investor.command("alice", reissue(ReissueKind.SPLIT, (whole,), (600, 300)))
        await investor.outcomes.reply("certificate.reissue_refused", bad)
        refusal = await support.rows(investor, "SELECT status, reason FROM requests WHERE request_id = $1", bad)
        assert refusal == [{"status": "refused", "reason": "shares_not_conserved"}]
        assert await valid(issuer, "register", "holder_user_id") == [("alice", 1000)]
        assert await support.rows(issuer, "SELECT * FROM reissues") == []
