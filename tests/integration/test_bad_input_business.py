"""The bad-input catalogue, part 2: well-formed requests the books refuse (docs/bad-input.md, B30–B49).

Each request is correctly signed and routed, so the agent consumes it; it is answered by one
refusal message carrying the reason code, and every table but the inbox and outbox is as it
was (``refusal_kit.expect_refusal``). Malformed values a schema catches are dead letters,
and operator input is refused before anything is stored.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import uuid4

import pytest

from agents import cli
from agents.brokerage import operators
from agents.brokerage import repo as brokerage_repo
from agents.brokerage.customers import CustomerAccount
from broker import logs
from broker.consumer import Outcome
from broker.envelope import seal, sign_headers
from broker.errors import Reason
from broker.pki import KeyStore
from broker.runtime import AgentRuntime
from broker.settings import Settings
from schemas.brokerage import HoldLeg, IdentifyCustomer, PlaceHold
from schemas.catalogue import Message
from schemas.certificates import ShareClass
from schemas.sealed import ACCOUNT_INQUIRY_ACCOUNT, CUSTOMER_PIN
from schemas.settlement import AccountInquiry
from schemas.trading import CancelOrder, OrderTerms, OrderType, Side, SubmitOrder
from tests import support
from tests.integration.refusal_kit import expect_dead_letter, expect_refusal, state

PIN = "2468"


@pytest.fixture
def kabuto(monkeypatch: pytest.MonkeyPatch) -> Callable[[list[str]], int]:
    """The ``kabuto`` command in this process, leaving the test run's logging as it was
    (``main`` would point structlog at this test's captured, soon closed, stdout)."""
    monkeypatch.setattr(logs, "configure", lambda *args, **kwargs: None)
    return cli.main


def _order(user: str = "alice", issue: str = support.ISSUE, **terms: Any) -> SubmitOrder:
    values: dict[str, Any] = dict(side=Side.BUY, order_type=OrderType.LIMIT, price=Decimal(1000), quantity=100)
    values.update(terms)
    return SubmitOrder(
        client_order_id=f"c-{uuid4().hex[:8]}",
        user_id=user,
        issue_code=issue,
        share_class=ShareClass.COMMON,
        terms=OrderTerms(**values),
        settlement_account=support.box(f"{user}-cash"),
        holder_name=user.capitalize(),
        holder_address="1-1 Kabuto-cho, Tokyo",
    )


def _sell_without_certificate() -> SubmitOrder:
    return _order(side=Side.SELL)


ORDERS: dict[str, tuple[Callable[[], Message], str]] = {
    "B30_off_tick_price": (lambda: _order(price=Decimal("1000.5")), "invalid_tick"),
    "B31_price_above_the_daily_limit": (lambda: _order(price=Decimal(5000)), "price_limit_exceeded"),
    "B32_price_below_the_daily_limit": (lambda: _order(price=Decimal(100)), "price_limit_exceeded"),
    "B33_unknown_instrument": (lambda: _order(issue="NOPE"), "unknown_issue"),
    "B34_order_in_another_investors_name": (lambda: _order(user="bob"), "user_mismatch"),
    "B35_huge_quantity_over_the_usage_limit": (lambda: _order(quantity=10**9), "account_usage_limit_exceeded"),
    "B36_sell_without_a_certificate": (_sell_without_certificate, "missing_certificate"),
    "B37_cancel_of_an_unknown_order": (lambda: CancelOrder(client_order_id="never-sent"), "unknown_order"),
}


@pytest.mark.parametrize("case", ORDERS, ids=list(ORDERS))
async def test_order_the_exchange_refuses_is_answered_with_its_reason_and_changes_nothing(
    settings: Settings, keys: KeyStore, case: str
) -> None:
    build, reason = ORDERS[case]
    sealed = seal(keys.load_identity("alice"), build(), recipient="exchange", now=datetime.now(UTC))
    async with support.agents(settings, "exchange") as rt:
        await support.list_issue(rt["exchange"])
        await expect_refusal(settings, rt["exchange"], sealed, "order.rejected", reason)


def _raw_order(change: Callable[[dict[str, Any]], None]) -> Callable[[KeyStore], tuple[bytes, dict[str, str]]]:
    """A signed order whose terms were changed past what the model would build."""

    def build(keys: KeyStore) -> tuple[bytes, dict[str, str]]:
        alice = keys.load_identity("alice")
        envelope = json.loads(seal(alice, _order(), recipient="exchange", now=datetime.now(UTC)).body)
        change(envelope["payload"]["terms"])
        body = json.dumps(envelope).encode()
        return body, sign_headers(alice, body)

    return build


MALFORMED_ORDERS = {
    "B38_zero_quantity": _raw_order(lambda t: t.update(quantity=0)),
    "B39_negative_quantity": _raw_order(lambda t: t.update(quantity=-100)),
    "B40_zero_price": _raw_order(lambda t: t.update(price="0")),
    "B41_negative_price": _raw_order(lambda t: t.update(price="-1000")),
    "B42_price_not_a_number": _raw_order(lambda t: t.update(price="NaN")),
    "B43_price_with_too_many_digits": _raw_order(lambda t: t.update(price="1" * 30)),
    "B44_market_order_with_a_price": _raw_order(lambda t: t.update(order_type="market")),
}


@pytest.mark.parametrize("case", MALFORMED_ORDERS, ids=list(MALFORMED_ORDERS))
async def test_order_with_impossible_terms_is_dead_lettered_as_schema_violation(
    settings: Settings, keys: KeyStore, case: str
) -> None:
    body, headers = MALFORMED_ORDERS[case](keys)
    async with support.agents(settings, "exchange") as rt:
        await support.list_issue(rt["exchange"])
        await expect_dead_letter(settings, rt["exchange"], body, headers, Reason.SCHEMA_VIOLATION)


ISSUANCE = {
    "B45_more_shares_than_remain": (dict(shares=200_000), "insufficient_shares"),
    "B46_below_the_minimum_lot": (dict(shares=50), "below_minimum_lot"),
    "B47_not_a_multiple_of_the_lot": (dict(shares=150), "not_a_lot_multiple"),
    "B48_unknown_issue": (dict(issue_code="NOPE"), "unknown_issue"),
}


@pytest.mark.parametrize("case", ISSUANCE, ids=list(ISSUANCE))
async def test_issuance_request_the_issuer_refuses_changes_nothing(
    settings: Settings, keys: KeyStore, case: str
) -> None:
    changes, reason = ISSUANCE[case]
    sealed = support.sealed_request(keys.load_identity("alice"), **changes)
    async with support.agents(settings, "issuer") as rt:
        await support.open_offering(rt["issuer"])
        await expect_refusal(
            settings, rt["issuer"], sealed, "certificate.issuance.refused", reason, journal="issuance_requests"
        )
        [record] = await support.rows(rt["issuer"], "SELECT outcome FROM issuance_requests")
        assert record["outcome"] == "refused"
        assert await support.rows(rt["issuer"], "SELECT count(*) AS n FROM register") == [{"n": 0}]


@pytest.mark.parametrize(
    ("case", "amount", "reason"),
    [
        ("B49_hold_over_the_balance_insufficient_funds", Decimal(5_000_000), "insufficient_funds"),
        ("B50_hold_on_an_unknown_account", None, "unknown_account"),
    ],
)
async def test_hold_the_settlement_agent_refuses_changes_nothing(
    settings: Settings, keys: KeyStore, case: str, amount: Decimal | None, reason: str
) -> None:
    account = "alice-cash" if amount is not None else "alice-nowhere"
    hold = PlaceHold(hold_id=uuid4(), owner="alice", legs=(HoldLeg(account=account, amount=amount or Decimal(1)),))
    sealed = seal(keys.load_identity("brokerage"), hold, recipient="settlement", now=datetime.now(UTC))
    async with support.agents(settings, "settlement") as rt:
        await support.fund(rt["settlement"], "alice", Decimal(1000))
        await expect_refusal(settings, rt["settlement"], sealed, "funds.hold_refused", reason)


async def test_B51_inquiry_into_another_investors_account_reveals_nothing(settings: Settings, keys: KeyStore) -> None:
    sealed = seal(
        keys.load_identity("bob"),
        AccountInquiry(account=support.sealed_to(keys, "settlement", "alice-cash", ACCOUNT_INQUIRY_ACCOUNT)),
        recipient="settlement",
        now=datetime.now(UTC),
    )
    async with support.agents(settings, "settlement") as rt:
        await support.fund(rt["settlement"], "alice", Decimal(1000))
        answer = await expect_refusal(settings, rt["settlement"], sealed, "account.statement", False, field="found")
    assert answer["balance"] == "0" and answer["postings"] == []


# --- the brokerage: authentication, and stored data it did not validate ------------------


async def _customer(brokerage: AgentRuntime, *accounts: CustomerAccount) -> None:
    await brokerage.command(
        "brokerage", operators.register_customer("IM-0001", "alice", PIN, accounts or (_account("alice-bank"),))
    )


def _account(account_id: str) -> CustomerAccount:
    return CustomerAccount(account_id, "intermediary", "bank", 1)


def _identify(keys: KeyStore, pin: str = PIN) -> Any:
    request = IdentifyCustomer(customer_id="IM-0001", pin=support.sealed_to(keys, "brokerage", pin, CUSTOMER_PIN))
    return seal(keys.load_identity("alice"), request, recipient="brokerage", now=datetime.now(UTC))


async def test_B52_wrong_pin_is_refused_as_authentication_failed(settings: Settings, keys: KeyStore) -> None:
    async with support.agents(settings, "brokerage") as rt:
        await _customer(rt["brokerage"])
        sealed = _identify(keys, pin="9999")
        await expect_refusal(settings, rt["brokerage"], sealed, "brokerage.identify_refused", "authentication_failed")


async def test_B53_malformed_stored_account_id_is_refused_with_a_reason_not_retried(
    settings: Settings, keys: KeyStore
) -> None:
    """The issue's case: an account id no message can carry, stored before operators were checked."""
    async with support.agents(settings, "brokerage") as rt:
        brokerage = rt["brokerage"]
        await _customer(brokerage)
        await brokerage.command(
            "brokerage",
            lambda ctx: brokerage_repo.add_accounts(ctx.connection, "IM-0001", [_account("Alice Bank #2")]),
        )
        payload = await expect_refusal(
            settings, brokerage, _identify(keys), "brokerage.identify_refused", "customer_record_invalid"
        )
        assert "Alice Bank #2" in payload["detail"]
        assert brokerage.outcomes.count(Outcome.RETRY_SCHEDULED) == 0


@pytest.mark.parametrize(
    "account_id",
    ["Alice Bank", "a", "x" * 65, "alice/../../etc", "alice\nbank"],
    ids=["space", "short", "long", "path", "newline"],
)
async def test_B54_operator_cannot_store_a_malformed_account_id(settings: Settings, account_id: str) -> None:
    async with support.agents(settings, "brokerage") as rt:
        brokerage = rt["brokerage"]
        before = await state(brokerage)
        with pytest.raises(ValueError, match="is malformed"):
            await _customer(brokerage, _account(account_id))
        assert await state(brokerage) == before


def test_B55_malformed_operator_input_at_the_command_line_is_refused_with_a_clear_error(
    capsys: pytest.CaptureFixture[str],
    kabuto: Callable[[list[str]], int],
) -> None:
    for argv in (
        ["brokerage", "customer", "IM-9", "--user", "alice", "--pin", "2468", "--account", "only-two:parts"],
        ["brokerage", "customer", "IM-9", "--user", "alice", "--pin", "2468", "--account", "a:intermediary:bank:first"],
        ["settlement", "deposit", "alice-cash", "ten thousand", "--reference", "r-1"],
    ):
        assert kabuto(argv) == 2, argv  # a usage error, before anything runs
        assert "Invalid value for '" in capsys.readouterr().err


async def test_B61_sell_beyond_the_customers_holdings_is_refused_as_insufficient_holdings(
    settings: Settings, keys: KeyStore
) -> None:
    from schemas.brokerage import BrokeredOrder, FundingLeg

    async with support.agents(settings, "settlement", "brokerage", "exchange") as rt:
        await support.brokerage_market(rt, company="x-sec", issue="BRK")
        await _customer(rt["brokerage"], CustomerAccount("alice-bank", "intermediary", "bank", 1))
        order = BrokeredOrder(
            client_order_id="sell-more-than-held",
            customer_id="IM-0001",
            pin=support.sealed_to(keys, "brokerage", PIN, CUSTOMER_PIN),
            securities_company="x-sec",
            issue_code="BRK",
            side=Side.SELL,
            order_type=OrderType.LIMIT,
            price=Decimal(300),
            quantity=100,
            funding=(FundingLeg(account="alice-bank", amount=Decimal(0), priority=1),),
        )
        sealed = seal(keys.load_identity("alice"), order, recipient="brokerage", now=datetime.now(UTC))
        await expect_refusal(settings, rt["brokerage"], sealed, "brokerage.order_refused", "insufficient_holdings")
