"""The investor keeps each execution of its orders once, with the order's fill (R-001-35, seed
001 S91–S93): one statement records both (issue 8); an execution of an order it never placed is
refused as unsolicited and changes nothing. Against the real RabbitMQ and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from agents.investor.trading import place_order
from broker.envelope import seal
from broker.errors import Reason
from broker.pki import KeyStore
from broker.settings import Settings
from schemas.trading import OrderAccepted, OrderExecuted, Side, TradeCompleted
from tests import support
from tests.integration import refusal_kit
from tests.integration.test_trading_paths import buy


def executed(coid: str, matching_number: int, quantity: int, remaining: int) -> OrderExecuted:
    return OrderExecuted(
        client_order_id=coid,
        acceptance_number=1,
        matching_number=matching_number,
        side=Side.BUY,
        issue_code="KBT1",
        price=Decimal(1000),
        quantity=quantity,
        remaining_quantity=remaining,
    )


async def test_an_execution_of_an_order_never_placed_is_refused_and_changes_nothing(
    settings: Settings, keys: KeyStore
) -> None:
    async with support.agents(settings, "investor") as rt:
        sealed = seal(
            keys.load_identity("exchange"), executed("nobody-1", 1, 100, 0), recipient="bob", now=datetime.now(UTC)
        )
        await refusal_kit.expect_dead_letter(
            settings, rt["investor"], sealed.body, sealed.headers, Reason.UNSOLICITED, routing_key="bob"
        )


async def test_each_execution_fills_the_order_once(settings: Settings, keys: KeyStore) -> None:
    """Two fills of 200 and 300 fill a 500-share order; the first fill sent again (another
    message, the same matching number) is kept once and adds nothing."""
    async with support.agents(settings, "investor") as rt:
        investor = rt["investor"]
        await investor.command("bob", place_order(buy("b1", 500)))
        exchange = keys.load_identity("exchange")
        for fill in (executed("b1", 11, 200, 300), executed("b1", 11, 200, 300), executed("b1", 12, 300, 0)):
            sealed = seal(exchange, fill, recipient="bob", now=datetime.now(UTC))
            await support.publish_sealed(settings, sealed, routing_key="bob")
            await investor.outcomes.wait_for(sealed.envelope.message_id)
        order = await support.rows(investor, "SELECT filled, status FROM orders WHERE client_order_id = 'b1'")
        assert order == [{"filled": 500, "status": "filled"}]
        kept = await support.rows(
            investor, "SELECT matching_number, quantity, status FROM executions ORDER BY matching_number"
        )
        assert kept == [
            {"matching_number": 11, "quantity": 200, "status": "executed"},
            {"matching_number": 12, "quantity": 300, "status": "executed"},
        ]


async def test_an_acceptance_echoing_another_request_is_refused_and_keeps_nothing(
    settings: Settings, keys: KeyStore
) -> None:
    """The acceptance number is written and the echo checked in one statement (issue 8): the
    refusal must roll the write back."""
    async with support.agents(settings, "investor") as rt:
        investor = rt["investor"]
        await investor.command("bob", place_order(buy("b1", 500)))
        answer = OrderAccepted(client_order_id="b1", acceptance_number=77, request_hash="0" * 64)
        sealed = seal(keys.load_identity("exchange"), answer, recipient="bob", now=datetime.now(UTC))
        await refusal_kit.expect_dead_letter(
            settings, investor, sealed.body, sealed.headers, Reason.SIGNATURE_INVALID, routing_key="bob"
        )
        order = await support.rows(
            investor, "SELECT acceptance_number, status FROM orders WHERE client_order_id = 'b1'"
        )
        assert order == [{"acceptance_number": None, "status": "sent"}]


async def test_a_completion_of_an_order_never_placed_is_refused_and_changes_nothing(
    settings: Settings, keys: KeyStore
) -> None:
    """The execution is marked completed and its order read in one statement (issue 8): a
    completion naming an order the user never placed is refused, and the execution it names
    stays as it was."""
    async with support.agents(settings, "investor") as rt:
        investor = rt["investor"]
        await investor.command("bob", place_order(buy("b1", 500)))
        exchange = keys.load_identity("exchange")
        fill = seal(exchange, executed("b1", 11, 500, 0), recipient="bob", now=datetime.now(UTC))
        await support.publish_sealed(settings, fill, routing_key="bob")
        await investor.outcomes.wait_for(fill.envelope.message_id)
        completed = TradeCompleted(
            matching_number=11,
            name_transfer_number=5,
            client_order_id="nobody-1",
            acceptance_number=1,
            side=Side.BUY,
            issue_code="KBT1",
            price=Decimal(1000),
            quantity=500,
            amount=Decimal(500_000),
        )
        sealed = seal(exchange, completed, recipient="bob", now=datetime.now(UTC))
        await refusal_kit.expect_dead_letter(
            settings, investor, sealed.body, sealed.headers, Reason.UNSOLICITED, routing_key="bob"
        )
        kept = await support.rows(investor, "SELECT status, name_transfer_number FROM executions")
        assert kept == [{"status": "executed", "name_transfer_number": None}]
