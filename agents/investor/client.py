"""The investor agent's local operator API: act for an investor the investor agent hosts.

Not for external systems: it writes into the investor agent's tables and needs its database.
An external participant uses ``kabuto_client``, which talks only to RabbitMQ (docs/client.md).

    async with InvestorClient.connect(settings, "alice") as alice:
        await alice.place_order(OrderTicket("o-1", "KBT", Side.BUY, 100, "alice-cash", Decimal("1000"),
                                            holder_name="Alice", holder_address="Tokyo"))
        print(await alice.orders())

Each call signs as the investor and writes to the investor agent's outbox in one transaction;
the running investor agent publishes it and records the answers, which the query methods read.
Needs PostgreSQL and the investor's key, not RabbitMQ.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeVar
from uuid import UUID

import asyncpg

from agents.investor import (
    brokered,
    brokered_repo,
    instructions,
    lifecycle,
    lifecycle_repo,
    order_repo,
    repo,
    standing,
    standing_repo,
)
from agents.investor.app import IssuanceOrder, request_certificates, verified_wallet
from agents.investor.domain import Dividend
from agents.investor.trading import (
    OrderTicket,
    ask_order_status,
    cancel_order,
    inquire_account,
    place_order,
    place_orders,
    replace_order,
)
from broker.access import agent_urls
from broker.awaiting import Answer, Sent, outcome
from broker.context import Context
from broker.db import agent_pool
from broker.pki import Identity, KeyStore
from broker.runtime import execute
from broker.settings import Settings
from broker.stock_certificates import CertificateInvalid
from broker.trust import TrustStore
from schemas.brokerage import CustomerView, FundingLeg, MismatchRule, SettlementType
from schemas.certificates import ElectronicStockCertificate
from schemas.lifecycle import HoldingsStatement, ReissueKind
from schemas.settlement import AccountStatement
from schemas.trading import Side

T = TypeVar("T")


class InvestorClient:
    def __init__(
        self, pool: asyncpg.Pool, identity: Identity, trust: TrustStore, settings: Settings | None = None
    ) -> None:
        self._pool = pool
        self._identity = identity
        self._trust = trust
        self._settings = settings

    @classmethod
    @asynccontextmanager
    async def connect(cls, settings: Settings, user_id: str) -> AsyncIterator[InvestorClient]:
        keys = KeyStore(settings.key_dir)
        identity = keys.load_identity(user_id)
        trust = TrustStore(keys.ca_certificate(), keys.certificates())
        async with agent_pool(agent_urls(settings, "investor").database, "investor", max_size=2) as pool:
            yield cls(pool, identity, trust, settings)

    @property
    def user_id(self) -> str:
        return self._identity.user_id

    async def _run(self, action: Callable[[Context], Awaitable[T]]) -> T:
        return await execute(self._pool, self._identity, self._trust, action, datetime.now(UTC))

    async def answer(self, sent: Sent, timeout: float = 30.0) -> Answer:
        """Wait for what became of a message this client sent (``broker.awaiting``)."""
        if self._settings is None:
            raise ValueError("a client made without settings cannot wait for answers; use InvestorClient.connect")
        return await outcome(self._settings, self._pool, sent, timeout)

    async def request_certificates(self, order: IssuanceOrder) -> UUID:
        return await self._run(request_certificates(order))

    async def place_order(self, ticket: OrderTicket) -> UUID:
        return await self._run(place_order(ticket))

    async def place_orders(self, tickets: Sequence[OrderTicket]) -> list[UUID]:
        """Several orders in one transaction, all or none (``trading.place_orders``): their message ids."""
        return await self._run(place_orders(tickets))

    async def cancel_order(self, client_order_id: str) -> UUID:
        return await self._run(cancel_order(client_order_id))

    async def replace_order(
        self, client_order_id: str, new_client_order_id: str, quantity: int, price: Decimal | None
    ) -> UUID:
        return await self._run(replace_order(client_order_id, new_client_order_id, quantity, price))

    async def ask_order_status(self, acceptance_number: int) -> UUID:
        return await self._run(ask_order_status(acceptance_number))

    async def inquire_account(self, account: str) -> UUID:
        return await self._run(inquire_account(account))

    async def open_standing_cover(self, account: str, amount: Decimal) -> UUID:
        """Set ``amount`` aside on ``account`` for buy orders (docs/dvp.md, "Standing cover"); the cover id."""
        return await self._run(standing.open_standing_cover(account, amount))

    async def close_standing_cover(self, cover_id: UUID) -> UUID:
        return await self._run(standing.close_standing_cover(cover_id))

    async def standing_cover(self, cover_id: UUID) -> standing_repo.StandingCover | None:
        async with self._pool.acquire() as connection:
            return await standing_repo.find(connection, self.user_id, cover_id)

    async def standing_covers(self) -> list[standing_repo.StandingCover]:
        async with self._pool.acquire() as connection:
            return await standing_repo.covers(connection, self.user_id)

    async def hand_over(self, cert_id: UUID, transferee: str, note: str = "") -> UUID:
        return await self._run(lifecycle.hand_over(cert_id, transferee, note))

    async def claim_handover(
        self, handover_id: UUID, holder_name: str, holder_address: str, dividend: Dividend
    ) -> UUID:
        return await self._run(lifecycle.claim_handover(handover_id, holder_name, holder_address, dividend))

    async def inquire_holdings(self, issue_code: str | None = None) -> UUID:
        return await self._run(lifecycle.inquire_holdings(issue_code))

    async def reissue(self, kind: ReissueKind, cert_ids: tuple[UUID, ...], split_into: tuple[int, ...] = ()) -> UUID:
        return await self._run(lifecycle.reissue(kind, cert_ids, split_into))

    async def handovers(self) -> list[lifecycle_repo.Handover]:
        async with self._pool.acquire() as connection:
            return await lifecycle_repo.handovers(connection, self.user_id)

    async def holdings(self) -> HoldingsStatement | None:
        """The latest holdings statement the issuer sent, if any."""
        async with self._pool.acquire() as connection:
            text = await lifecycle_repo.holdings(connection, self.user_id)
        return HoldingsStatement.model_validate_json(text) if text else None

    async def identify(self, customer_id: str, pin: str) -> UUID:
        return await self._run(brokered.identify(customer_id, pin))

    async def broker_order(
        self,
        client_order_id: str,
        customer_id: str,
        pin: str,
        company: str,
        issue_code: str,
        side: Side,
        quantity: int,
        funding: list[FundingLeg],
        price: Decimal | None = None,
        rule: MismatchRule | None = None,
        settlement_type: SettlementType = SettlementType.IMMEDIATE,
    ) -> UUID:
        return await self._run(
            brokered.brokered_order(
                client_order_id,
                customer_id,
                pin,
                company,
                issue_code,
                side,
                quantity,
                funding,
                price,
                rule,
                settlement_type,
            )
        )

    async def customer_view(self) -> CustomerView | None:
        async with self._pool.acquire() as connection:
            return await brokered.view(connection, self.user_id)

    async def brokered_orders(self) -> list[dict[str, Any]]:
        async with self._pool.acquire() as connection:
            return await brokered_repo.orders(connection, self.user_id)

    async def wallet(self) -> list[ElectronicStockCertificate | CertificateInvalid]:
        return await self._run(verified_wallet)

    async def orders(self) -> list[order_repo.OrderRecord]:
        async with self._pool.acquire() as connection:
            return await order_repo.orders(connection, self.user_id)

    async def executions(self) -> list[dict[str, Any]]:
        async with self._pool.acquire() as connection:
            return await order_repo.executions(connection, self.user_id)

    async def requests(self) -> list[repo.Request]:
        async with self._pool.acquire() as connection:
            return await repo.requests(connection, self.user_id)

    async def present_notice(self, matching_number: int) -> UUID:
        """R-001-42: present this trade's completion notice to settlement."""
        return await self._run(instructions.present_notice(matching_number))

    async def cancel_instruction(self, matching_number: int) -> UUID:
        return await self._run(instructions.cancel_instruction(matching_number))

    async def mandate(self, account: str, agent: str, *, revoke: bool = False) -> UUID:
        return await self._run(instructions.mandate(account, agent, revoke=revoke))

    async def settlement_messages(self) -> list[dict[str, Any]]:
        """What settlement said about this investor's instructions, notices and mandates."""
        async with self._pool.acquire() as connection:
            return await instructions.received(connection, self.user_id)

    async def statement(self, account: str) -> AccountStatement | None:
        """The latest statement settlement sent for ``account``, if any."""
        async with self._pool.acquire() as connection:
            text = await order_repo.statement(connection, self.user_id, account)
        return AccountStatement.model_validate_json(text) if text else None
