"""The exchange's prices (design flow 5, R-003-25): last trades and each day's close.

The exchange publishes every last price and every close as events for integrators, and sends
the same facts to the participants that subscribed (the credit holder, the brokerage), so they
value and check orders with the exchange's prices instead of copies of their own.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import Field

from schemas.catalogue import Message, message
from schemas.certificates import IssueCode
from schemas.identity import Role
from schemas.money import Price


class PriceKind(StrEnum):
    LAST_TRADE = "last_trade"
    CLOSE = "close"
    SNAPSHOT = "snapshot"  # what a new subscriber is sent for every listed issue


@message("market.last_price", senders={Role.EXCHANGE})
class LastPrice(Message):
    """Event: an execution set the issue's last price."""

    issue_code: IssueCode
    price: Price
    traded_at: datetime


@message("market.close", senders={Role.EXCHANGE})
class DailyClose(Message):
    """Event: the day closed; tomorrow's reference price is this close."""

    issue_code: IssueCode
    close: Price
    closed_at: datetime
    traded_today: bool = Field(description="False when no trade happened: the close is the old reference price.")


@message("market.subscribe_prices", senders={Role.CREDIT, Role.BROKERAGE}, recipients={Role.EXCHANGE})
class SubscribePrices(Message):
    """Send me every last price and close from now on, and a snapshot of every listed issue."""


@message("market.price_update", senders={Role.EXCHANGE}, recipients={Role.CREDIT, Role.BROKERAGE})
class PriceUpdate(Message):
    """An issue's prices as the exchange knows them after a trade, a close, or on subscribing."""

    kind: PriceKind
    issue_code: IssueCode
    reference_price: Price
    last_price: Price | None = None
    last_traded_at: datetime | None = None
    previous_close: Price | None = None
    closed_at: datetime | None = None
