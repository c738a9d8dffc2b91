"""What the ``kabuto investor`` commands share: their parameters, declared once, and how a command
acts as ``--as USER`` through the investor client library (``agents.investor.client``)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Annotated
from uuid import UUID

import typer

from agents import waiting
from agents.cli_runtime import run
from agents.cli_types import decimal
from agents.investor.client import InvestorClient
from agents.investor.domain import Dividend
from broker.awaiting import Probe, Sent
from broker.settings import Settings
from schemas.issuance import DividendMethod
from schemas.trading import Side

Act = Callable[[InvestorClient], Awaitable[int | None]]
NoWait = waiting.NoWait
Timeout = waiting.Timeout
WAIT = waiting.DEFAULT_TIMEOUT

Issue = Annotated[str, typer.Argument(help="the issue code", show_default=False)]
Quantity = Annotated[int, typer.Argument(help="shares", show_default=False)]
Limit = Annotated[Decimal | None, typer.Option(parser=decimal, help="limit price; omit for a market order")]
SideArgument = Annotated[Side, typer.Argument(help="buy or sell", show_default=False)]
Number = Annotated[int, typer.Argument(help="the trade's matching number (OMN)", show_default=False)]
HolderName = Annotated[str, typer.Option("--name", help="holder of record", show_default=False)]
Address = Annotated[str, typer.Option(help="the holder's address", show_default=False)]
DividendAccount = Annotated[str, typer.Option(help="where dividends are paid", show_default=False)]
OrderId = Annotated[str | None, typer.Option("--id", help="client order id (default: generated)")]


def acting(user: str, act: Act) -> None:
    """Run ``act`` with the investor client of ``user``."""

    async def body(settings: Settings) -> int | None:
        async with InvestorClient.connect(settings, user) as client:
            return await act(client)

    run(body)


def sent_to(message_id: UUID, recipient: str, probe: Probe) -> Sent:
    """What a sending command waits for: the answer of ``recipient`` to ``message_id``, found by ``probe``."""
    return Sent("investor", message_id, recipient, probe)


def dividend(account: str) -> Dividend:
    """The investor's dividend account as filled in; sealed to settlement when a message carries it."""
    return Dividend(method=DividendMethod.SETTLEMENT_ACCOUNT, account=account)


def order_id(user: str, given: str | None) -> str:
    return given or f"{user}-{uuid.uuid4().hex[:12]}"
