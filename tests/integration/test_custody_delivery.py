"""Custody as the securities leg of a book-entry trade (docs/dvp.md; issue 11 §1, §2): reserve,
commit and release driven by settlement, over the real broker and database."""

from __future__ import annotations

from uuid import uuid4

from broker.settings import Settings
from schemas.custody import PlaceLock, PositionQuantity
from schemas.dvp import BookEntryLeg, SecuritiesCommit, SecuritiesRelease, SecuritiesReserve
from tests import support
from tests.custody_support import answers_to, ask, balances, credit_position, open_account, send_as


def reserve(
    instruction: int, quantity: int = 200, attempt: int = 1, deliver: bool = False, **leg: str
) -> SecuritiesReserve:
    accounts = {"deliverer_account": "alice-sk", "receiver_account": "bob-sk", **leg}
    return SecuritiesReserve(
        instruction=instruction,
        attempt=attempt,
        issue_code="KBT",
        quantity=quantity,
        deliverer="alice",
        receiver="bob",
        leg=BookEntryLeg(agent="custody", **accounts),
        deliver=deliver,
    )


def sub(available: int, locked: int = 0, pending_delivery: int = 0, pending_receipt: int = 0) -> dict[str, int]:
    return {
        "available": available,
        "locked": locked,
        "pending_delivery": pending_delivery,
        "pending_receipt": pending_receipt,
    }


async def two_clients(custody: support.AgentRuntime) -> None:
    await open_account(custody, "alice-sk", "alice")
    await open_account(custody, "bob-sk", "bob")
    await credit_position(custody, "alice-sk", "KBT", 500)


async def test_reserve_then_commit_moves_the_position_once(settings: Settings) -> None:
    async with support.agents(settings, "custody") as rt:
        custody = rt["custody"]
        await two_clients(custody)
        reserved = await ask(settings, custody, reserve(7), sender="settlement")
        assert (reserved["type"], reserved["quantity"]) == ("securities.reserved", 200)
        assert await balances(custody, "alice-sk", "KBT") == sub(300, pending_delivery=200)
        assert await balances(custody, "bob-sk", "KBT") == sub(0, pending_receipt=200)
        again = await ask(settings, custody, reserve(7), sender="settlement")  # asked again: same answer
        assert again["type"] == "securities.reserved"
        assert await balances(custody, "alice-sk", "KBT") == sub(300, pending_delivery=200)
        committed = await ask(settings, custody, SecuritiesCommit(instruction=7, attempt=1), sender="settlement")
        assert committed["delivery"] == {
            "kind": "book_entry",
            "deliverer_account": "alice-sk",
            "receiver_account": "bob-sk",
        }
        assert (
            await ask(settings, custody, SecuritiesCommit(instruction=7, attempt=1), sender="settlement") == committed
        )
        assert await balances(custody, "alice-sk", "KBT") == sub(300)
        assert await balances(custody, "bob-sk", "KBT") == sub(200)


async def test_a_reserve_that_says_deliver_moves_the_position_at_once_and_only_once(settings: Settings) -> None:
    """docs/dvp.md, "Delivery against earmarked cash": reserved and delivered in one transaction,
    answered committed; asked again, the same answer and nothing moves twice; refused as before."""
    async with support.agents(settings, "custody") as rt:
        custody = rt["custody"]
        await two_clients(custody)
        committed = await ask(settings, custody, reserve(12, deliver=True), sender="settlement")
        assert (committed["type"], committed["attempt"], committed["quantity"]) == ("securities.committed", 1, 200)
        assert committed["delivery"]["kind"] == "book_entry"
        assert await balances(custody, "alice-sk", "KBT") == sub(300)
        assert await balances(custody, "bob-sk", "KBT") == sub(200)
        again = await ask(settings, custody, reserve(12, deliver=True), sender="settlement")
        assert again == committed
        assert await balances(custody, "alice-sk", "KBT") == sub(300)
        assert await balances(custody, "bob-sk", "KBT") == sub(200)
        await ask_nothing(settings, custody, reserve(12))  # delivered: a plain reserve is not answered
        refused = await ask(settings, custody, reserve(13, quantity=301, deliver=True), sender="settlement")
        assert (refused["type"], refused["reason"]) == ("securities.reservation_refused", "lack_of_securities")
        assert await balances(custody, "alice-sk", "KBT") == sub(300)


async def test_a_locked_position_cannot_be_delivered_and_nothing_moves(settings: Settings) -> None:
    async with support.agents(settings, "custody") as rt:
        custody = rt["custody"]
        await two_clients(custody)
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
        refused = await ask(settings, custody, reserve(8), sender="settlement")
        assert refused["type"] == "securities.reservation_refused"
        assert (refused["reason"], refused["retryable"], refused["available_quantity"]) == (
            "lack_of_securities",
            False,  # locked shares move only on the lock holder's word: not recycled
            100,
        )
        assert refused["detail"].startswith("quantity_locked")
        assert await balances(custody, "alice-sk", "KBT") == sub(100, locked=400)
        assert await balances(custody, "bob-sk", "KBT") == {}
        # a commit for what was never reserved moves nothing
        await ask_nothing(settings, custody, SecuritiesCommit(instruction=8, attempt=1))
        assert await balances(custody, "alice-sk", "KBT") == sub(100, locked=400)


async def ask_nothing(settings: Settings, custody: support.AgentRuntime, payload: object) -> None:
    message_id = await send_as(settings, "settlement", payload)  # type: ignore[arg-type]
    await custody.outcomes.wait_for(message_id)
    assert await answers_to(custody, message_id) == []


async def test_release_puts_both_positions_back_and_accounts_are_checked(settings: Settings) -> None:
    async with support.agents(settings, "custody") as rt:
        custody = rt["custody"]
        await two_clients(custody)
        await ask(settings, custody, reserve(9), sender="settlement")
        await ask_nothing(settings, custody, SecuritiesRelease(instruction=9, attempt=1))
        assert await balances(custody, "alice-sk", "KBT") == sub(500)
        assert await balances(custody, "bob-sk", "KBT") == sub(0)
        await ask_nothing(settings, custody, SecuritiesCommit(instruction=9, attempt=1))  # released: no commit
        assert await balances(custody, "bob-sk", "KBT") == sub(0)
        second = await ask(settings, custody, reserve(9, attempt=2), sender="settlement")  # recycled
        assert second["type"] == "securities.reserved" and second["attempt"] == 2
        for leg, reason in (
            ({"receiver_account": "nowhere"}, "unknown_account"),
            ({"deliverer_account": "bob-sk", "receiver_account": "alice-sk"}, "account_not_owned"),
        ):
            refused = await ask(settings, custody, reserve(10, **leg), sender="settlement")
            assert (refused["reason"], refused["retryable"]) == (reason, False)
        too_many = await ask(settings, custody, reserve(11, quantity=301), sender="settlement")
        assert (too_many["reason"], too_many["detail"].split(":")[0]) == ("lack_of_securities", "quantity_pending")
        assert await balances(custody, "alice-sk", "KBT") == sub(300, pending_delivery=200)
