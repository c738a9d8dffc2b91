"""Provisioning least privilege on the local services (issue 13; ``broker.access`` says what).

Run by the administrator with the administrator's URLs: RabbitMQ users are made with
``rabbitmqctl`` (synchronous, the password on standard input, never on a command line;
the management plugin is not needed), an external participant's queue is declared and bound
under its own id, and PostgreSQL logins are created as members of their agent's schema role.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable
from dataclasses import dataclass

import aio_pika
import asyncpg

from broker.access import (
    AccessError,
    Credentials,
    Grant,
    agent_grant,
    database_login,
    new_password,
    participant_grant,
    save_credentials,
)
from broker.settings import Settings
from broker.topology import Names, declare_exchanges
from schemas.identity import Role


async def rabbitmqctl(*args: str, stdin: bytes | None = None) -> str:
    process = await asyncio.create_subprocess_exec(
        "rabbitmqctl",
        *args,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate(stdin)
    if process.returncode != 0:
        raise AccessError(f"rabbitmqctl {args[0]} failed: {err.decode(errors='replace').strip()[:500]}")
    return out.decode()


async def create_user(grant: Grant, password: str, names: Names, vhost: str = "/") -> None:
    """Create the user on the local broker with rabbitmqctl, synchronously (an imported
    definitions document is applied asynchronously); the password goes on standard input,
    never on a command line."""
    await rabbitmqctl("add_user", grant.user, stdin=password.encode() + b"\n")
    await rabbitmqctl("set_permissions", "-p", vhost, grant.user, grant.configure, grant.write, grant.read)
    await rabbitmqctl("set_topic_permissions", "-p", vhost, grant.user, names.events, grant.publishes_events, ".*")


async def delete_users(users: Iterable[str]) -> None:
    for user in users:
        await rabbitmqctl("delete_user", user)


_SAFE = re.compile(r"^[A-Za-z0-9_-]+$")


def create_login_sql(login: str, agent: str, password: str) -> list[str]:
    """A login that may only become the agent's schema role (NOINHERIT: nothing without it)."""
    if not (_SAFE.fullmatch(login) and _SAFE.fullmatch(agent) and _SAFE.fullmatch(password)):
        raise AccessError("logins, agents and passwords are plain [A-Za-z0-9_-] here")
    return [
        f'DROP ROLE IF EXISTS "{login}"',
        f'CREATE ROLE "{login}" LOGIN NOINHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE '
        f"PASSWORD '{password}' IN ROLE \"kabuto_{agent}\"",
    ]


@dataclass(frozen=True, slots=True)
class Provisioned:
    agents: dict[str, Credentials]
    participants: dict[str, tuple[str, str]]  # participant id → (amqp user, password)

    broker: bool = True

    @property
    def amqp_users(self) -> list[str]:
        if not self.broker:
            return []
        return [c.amqp_user for c in self.agents.values()] + [u for u, _ in self.participants.values()]

    @property
    def database_logins(self) -> list[str]:
        return [c.database_user for c in self.agents.values()]


async def provision(
    settings: Settings,
    agents: Iterable[tuple[str, Role]],
    participants: Iterable[str] = (),
    *,
    prefix: str | None = None,
    save: bool = True,
    broker: bool = True,
) -> Provisioned:
    """Create a broker user and a database login per agent, and a broker user and queue per
    external participant; run as the administrator (``KABUTO_AMQP_URL``/``KABUTO_DATABASE_URL``)."""
    names = Names(settings.namespace)
    prefix = prefix or settings.namespace
    made: dict[str, Credentials] = {}
    grants: list[tuple[Grant, str]] = []
    for agent, role in agents:
        credentials = Credentials(f"{prefix}-{agent}", new_password(), database_login(agent, prefix), new_password())
        grants.append((agent_grant(names, agent, role, credentials.amqp_user), credentials.amqp_password))
        made[agent] = credentials
    outside = {pid: (f"{prefix}-{pid}", new_password()) for pid in participants}
    grants += [(participant_grant(names, pid, user), password) for pid, (user, password) in outside.items()]
    if broker:
        for grant, password in grants:
            await create_user(grant, password, names)
        await _declare_participant_queues(settings.amqp_url, names, outside)
    await _create_logins(settings.database_url, made)
    if save:
        for agent, credentials in made.items():
            save_credentials(settings.key_dir, agent, credentials)
    return Provisioned(made, outside, broker)


async def _create_logins(database_url: str, made: dict[str, Credentials]) -> None:
    connection = await asyncpg.connect(database_url)
    try:
        for agent, credentials in made.items():
            for statement in create_login_sql(credentials.database_user, agent, credentials.database_password):
                await connection.execute(statement)
    finally:
        await connection.close()


async def drop_logins(database_url: str, logins: Iterable[str]) -> None:
    connection = await asyncpg.connect(database_url)
    try:
        for login in logins:
            if not _SAFE.fullmatch(login):
                raise AccessError(f"not a Kabuto login: {login!r}")
            await connection.execute(f'DROP ROLE IF EXISTS "{login}"')
    finally:
        await connection.close()


async def _declare_participant_queues(amqp_url: str, names: Names, outside: dict[str, tuple[str, str]]) -> None:
    """The participant's queue, bound under its own id: it may read it but never bind or declare."""
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        exchanges = await declare_exchanges(channel, names)
        for pid in outside:
            queue = await channel.declare_queue(names.inbox(pid), durable=True, arguments={"x-queue-type": "quorum"})
            await queue.bind(exchanges.messages, routing_key=pid)
    finally:
        await connection.close()
