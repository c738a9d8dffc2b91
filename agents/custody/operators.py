"""What custody's operators do and see: open safekeeping accounts, and read accounts,
positions, locks, deposits and withdrawals. Each runs as the custody participant in one
transaction (``broker.runtime.run_as``); deposits and withdrawals are in their own modules."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from pydantic import TypeAdapter, ValidationError

from agents.custody import repo, vault_repo
from agents.custody.domain import Account
from agents.custody.vault_repo import Deposit, Withdrawal
from broker.context import Context
from schemas.custody import PositionView
from schemas.identity import is_participant_id
from schemas.money import AccountId

T = TypeVar("T")
Command = Callable[[Context], Awaitable[T]]
_ACCOUNT_ID: TypeAdapter[str] = TypeAdapter(AccountId)


class AccountError(ValueError):
    """A safekeeping account custody will not open, and why."""


def open_account(account_id: str, client: str, custodian: str = "custody") -> Command[Account]:
    async def action(ctx: Context) -> Account:
        try:
            _ACCOUNT_ID.validate_python(account_id)
        except ValidationError as exc:
            raise AccountError(f"{account_id!r} is not an account id (a-z, 0-9, ':._-', 2–64 characters)") from exc
        for label, value in (("client", client), ("custodian", custodian)):
            if not is_participant_id(value):
                raise AccountError(f"{label} {value!r} is not a participant id")
        if not await repo.open_account(ctx.connection, account_id, client, custodian):
            raise AccountError(f"account {account_id} already exists")
        return Account(account_id, client, custodian, "open")

    return action


def accounts(client: str | None = None) -> Command[list[Account]]:
    return lambda ctx: repo.accounts(ctx.connection, client)


def positions(client: str | None = None, custodian: str | None = None) -> Command[list[PositionView]]:
    return lambda ctx: repo.positions(ctx.connection, client, custodian)


@dataclass(frozen=True, slots=True)
class Statement:
    client: str
    cursor: int
    positions: list[PositionView]


def statement(client: str) -> Command[Statement]:
    async def action(ctx: Context) -> Statement:
        await repo.lock_clients(ctx.connection, [client])
        return Statement(
            client, await repo.last_sequence(ctx.connection, client), await repo.positions(ctx.connection, client)
        )

    return action


def deposits() -> Command[list[Deposit]]:
    return lambda ctx: vault_repo.deposits(ctx.connection)


def withdrawals() -> Command[list[Withdrawal]]:
    return lambda ctx: vault_repo.withdrawals(ctx.connection)
