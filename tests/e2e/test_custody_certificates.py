"""Certificates into and out of custody against the real issuer (issue 11 §2): a deposit makes
the custodian holder of record and only then raises the client's position; a withdrawal hands
the client a certificate of exactly the quantity (split at the issuer) and the position falls
only once the issuer registered it to the client; a locked quantity cannot be withdrawn."""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid4

import pytest

from agents.custody import deposits, withdrawals
from agents.investor.domain import Dividend
from agents.investor.lifecycle import claim_handover, hand_over
from broker.runtime import AgentRuntime
from broker.settings import Settings
from schemas.custody import PlaceLock, PositionQuantity
from schemas.issuance import DividendMethod
from tests import support
from tests.custody_support import ask, balances, open_account

AGENTS = ("investor", "issuer", "exchange", "custody")
DIVIDEND = Dividend(method=DividendMethod.BANK_TRANSFER, account="0002-999999")


async def register(issuer: AgentRuntime) -> list[tuple[str, int]]:
    rows = await support.rows(issuer, "SELECT holder_user_id, shares FROM register WHERE status = 'valid'")
    return sorted((r["holder_user_id"], r["shares"]) for r in rows)


async def vault(custody: AgentRuntime) -> list[tuple[int, str, bool]]:
    rows = await support.rows(custody, "SELECT shares, status, signed IS NOT NULL AS signed FROM vault ORDER BY shares")
    return [(r["shares"], r["status"], r["signed"]) for r in rows]


async def deposited(rt: dict[str, AgentRuntime], shares: int = 500, note: str = "account:alice-sk") -> UUID:
    """alice is issued ``shares`` and hands the certificate to custody."""
    request_id = await support.request(rt["investor"], "alice", shares=shares)
    await rt["investor"].outcomes.reply("certificate.issued", request_id)
    cert = await support.rows(rt["investor"], "SELECT cert_id FROM wallet WHERE status = 'held'")
    handover_id: UUID = await rt["investor"].command("alice", hand_over(cert[-1]["cert_id"], "custody", note))
    await rt["custody"].outcomes.wait(lambda s: s.type == "certificate.handover")
    return handover_id


async def until(custody: AgentRuntime, sql: str, expected: Any, *args: Any) -> None:
    """Wait, statement by statement from the issuer, until ``sql`` returns ``expected``."""
    seen = 0
    while (await support.rows(custody, sql, *args)) != expected:
        seen += 1
        await custody.outcomes.wait_count(lambda s: s.type == "holdings.statement", seen, timeout=15)


async def test_deposit_then_withdraw_keeps_the_issuers_register_and_the_positions_equal(settings: Settings) -> None:
    async with support.agents(settings, *AGENTS) as rt:
        investor, issuer, custody = rt["investor"], rt["issuer"], rt["custody"]
        await support.open_offering(issuer)
        await open_account(custody, "alice-sk", "alice")
        await deposited(rt)
        await custody.outcomes.wait(lambda s: s.type == "certificate.issued")  # 43 answered: in the vault
        assert await register(issuer) == [("custody", 500)]
        assert await balances(custody, "alice-sk", "KBT") == {
            "available": 500,
            "locked": 0,
            "pending_delivery": 0,
            "pending_receipt": 0,
        }
        assert await vault(custody) == [(500, "held", True)]
        causes = await support.rows(
            custody, "SELECT cause, pending_receipt, available FROM position_changes ORDER BY sequence"
        )
        assert causes == [  # pending receipt from the claim, available only once registered
            {"cause": "deposit_claimed", "pending_receipt": 500, "available": 0},
            {"cause": "deposit", "pending_receipt": 0, "available": 500},
        ]

        withdrawal_id = await custody.command("custody", withdrawals.withdraw("alice-sk", "KBT", 200))
        await investor.outcomes.wait(lambda s: s.type == "certificate.handover" and s.message_id is not None)
        assert (await balances(custody, "alice-sk", "KBT"))["pending_delivery"] == 200
        assert await register(issuer) == [("custody", 200), ("custody", 300)]  # split for the withdrawal
        claim = await investor.command("alice", claim_handover(withdrawal_id, "Alice", "1-1 Kabuto-cho", DIVIDEND))
        await investor.outcomes.reply("certificate.issued", claim)
        await until(custody, "SELECT status FROM withdrawals", [{"status": "completed"}])
        assert await register(issuer) == [("alice", 200), ("custody", 300)]
        assert await balances(custody, "alice-sk", "KBT") == {
            "available": 300,
            "locked": 0,
            "pending_delivery": 0,
            "pending_receipt": 0,
        }
        assert [v for v in await vault(custody) if v[1] != "gone"] == [(300, "held", True)]
        wallet = await support.rows(
            investor, "SELECT shares FROM wallet WHERE holder_user_id = 'alice' AND status = 'held'"
        )
        assert wallet == [{"shares": 200}]


async def test_a_locked_quantity_cannot_be_withdrawn_and_nothing_moves(settings: Settings) -> None:
    async with support.agents(settings, *AGENTS) as rt:
        issuer, custody = rt["issuer"], rt["custody"]
        await support.open_offering(issuer)
        await open_account(custody, "alice-sk", "alice")
        await deposited(rt)
        await custody.outcomes.wait(lambda s: s.type == "certificate.issued")
        lock = PlaceLock(
            lock_id=uuid4(),
            client="alice",
            account="alice-sk",
            positions=(PositionQuantity(issue_code="KBT", quantity=400),),
            lock_holder="credit",
            reason="collateral",
            obligation_reference="card-0001",
        )
        assert (await ask(settings, custody, lock))["type"] == "custody.lock.placed"
        with pytest.raises(withdrawals.WithdrawalError, match=r"^quantity_locked"):
            await custody.command("custody", withdrawals.withdraw("alice-sk", "KBT", 200))
        with pytest.raises(withdrawals.WithdrawalError, match=r"^insufficient_available"):
            await custody.command("custody", withdrawals.withdraw("alice-sk", "KBT", 600))
        assert await balances(custody, "alice-sk", "KBT") == {
            "available": 100,
            "locked": 400,
            "pending_delivery": 0,
            "pending_receipt": 0,
        }
        assert await support.rows(custody, "SELECT * FROM withdrawals") == []
        assert await register(issuer) == [("custody", 500)]


async def test_a_deposit_for_someone_elses_account_waits_for_the_operator(settings: Settings) -> None:
    async with support.agents(settings, *AGENTS) as rt:
        issuer, custody = rt["issuer"], rt["custody"]
        await support.open_offering(issuer)
        await open_account(custody, "alice-sk", "alice")
        await open_account(custody, "bob-sk", "bob")
        handover_id = await deposited(rt, note="account:bob-sk")
        waiting = await support.rows(custody, "SELECT status, reason FROM deposits")
        assert waiting == [{"status": "received", "reason": "account bob-sk is not alice's"}]
        assert await register(issuer) == [("alice", 500)] and await balances(custody, "bob-sk", "KBT") == {}
        with pytest.raises(deposits.DepositError, match="account_not_owned"):
            await custody.command("custody", deposits.deposit_into(handover_id, "bob-sk"))
        await custody.command("custody", deposits.deposit_into(handover_id, "alice-sk"))
        await custody.outcomes.wait(lambda s: s.type == "certificate.issued")
        assert await register(issuer) == [("custody", 500)]
        assert (await balances(custody, "alice-sk", "KBT"))["available"] == 500
