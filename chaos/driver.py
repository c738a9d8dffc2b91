"""How the fault suite acts as the operators and participants: commands run in the agents'
schemas as the CLI would, again after an outage, and waits on the agents' books."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TypeVar

import asyncpg

from agents.investor.app import IssuanceOrder, request_certificates
from agents.investor.domain import Dividend
from agents.investor.lifecycle import hand_over
from agents.investor.trading import OrderError
from broker.context import Context
from broker.pki import Identity, KeyStore
from broker.runtime import execute
from broker.settings import Settings
from broker.supervision import INFRASTRUCTURE, PERMANENT
from broker.trust import TrustStore
from chaos.invariants import CASH_ACCOUNT, ISSUE
from schemas.certificates import ShareClass
from schemas.issuance import DividendMethod

T = TypeVar("T")
# What the services being away raises: aiormq raises a bare RuntimeError when a channel is
# asked of a connection that just closed.
OUTAGE: tuple[type[BaseException], ...] = (*INFRASTRUCTURE, RuntimeError)


class Driver:
    """Places the suite's commands in the agents' schemas, as the CLI would, through outages."""

    def __init__(self, settings: Settings, keys: KeyStore) -> None:
        self.settings = settings
        self.trust = TrustStore(keys.ca_certificate(), keys.certificates())
        self.identities: dict[str, Identity] = {}
        self.keys = keys
        self.pools: dict[str, asyncpg.Pool] = {}
        self._books: asyncpg.Pool | None = None

    async def books(self) -> asyncpg.Pool:
        """A pool for reading every agent's books (as the administrator), for the suite's waits."""
        if self._books is None:
            self._books = await asyncpg.create_pool(self.settings.database_url, min_size=1, max_size=2)
        return self._books

    async def command(self, agent: str, user: str, action: Callable[[Context], Awaitable[T]]) -> T | None:
        """Run one command, again after an outage; None if it had committed before the outage."""
        if user not in self.identities:
            self.identities[user] = self.keys.load_identity(user)
        retried = False
        for _ in range(600):
            try:
                if agent not in self.pools:
                    self.pools[agent] = await asyncpg.create_pool(
                        self.settings.database_url,
                        min_size=1,
                        max_size=4,
                        server_settings={"search_path": agent, "role": f"kabuto_{agent}"},
                    )
                now = datetime.now(UTC)
                return await execute(self.pools[agent], self.identities[user], self.trust, action, now)
            except (asyncpg.UniqueViolationError, OrderError):
                if retried:
                    return None  # it committed before the connection dropped; the retry found it
                raise
            except INFRASTRUCTURE as exc:
                if isinstance(exc, PERMANENT):
                    raise
                retried = True
                await asyncio.sleep(0.5)  # the database is away; the suite waits like an agent
        raise RuntimeError(f"{agent} command could not be run for 5 minutes")

    async def close(self) -> None:
        for pool in [*self.pools.values(), *([self._books] if self._books else [])]:
            pool.terminate()


async def until(check: Callable[[], Awaitable[bool]], deadline: float, what: str) -> None:
    """Look every 0.5 s until ``check`` holds (a look that meets an outage is a no), or raise
    ``TimeoutError`` at ``deadline``."""
    while not await _holds(check):
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.5)  # polling the agents' books, bounded by the deadline


async def _holds(check: Callable[[], Awaitable[bool]]) -> bool:
    try:
        return await check()
    except INFRASTRUCTURE as exc:
        if isinstance(exc, PERMANENT):
            raise
        return False


def issuance(user: str, shares: int) -> IssuanceOrder:
    """A certificate of ``shares`` for ``user``, dividends to the user's settlement account."""
    delivery = Dividend(method=DividendMethod.SETTLEMENT_ACCOUNT, account=CASH_ACCOUNT[user])
    return IssuanceOrder(ISSUE, ShareClass.COMMON, shares, user, "Tokyo", delivery)


async def deposit_at_custody(driver: Driver, db: asyncpg.Connection, user: str, account: str, shares: int) -> None:
    """One certificate of ``shares`` issued to ``user`` (who holds none yet) and handed over to
    custody for ``account``; waits until custody's position shows them."""
    await driver.command("investor", user, request_certificates(issuance(user, shares)))

    async def issued() -> bool:
        return bool(await db.fetchval("SELECT count(*) FROM investor.wallet WHERE holder_user_id = $1", user))

    await until(issued, time.monotonic() + 120, f"the certificate {user} deposits at custody issued")
    cert_id = await db.fetchval("SELECT cert_id FROM investor.wallet WHERE holder_user_id = $1", user)
    await driver.command("investor", user, hand_over(cert_id, "custody", f"account:{account}"))

    async def deposited() -> bool:
        held = await db.fetchval(
            "SELECT available FROM custody.positions WHERE account_id = $1 AND issue_code = $2", account, ISSUE
        )
        return bool(held == shares)

    await until(deposited, time.monotonic() + 120, f"{user}'s shares deposited at custody")
