"""Provisioning least privilege on the local services (issue 13; ``broker.access`` says what).

Run by the administrator with the administrator's URLs: every RabbitMQ user of one run is
written into one definitions document and imported with a single ``rabbitmqctl
import_definitions`` (the document on standard input, never on a command line; the
management plugin is not needed; ``KABUTO_RABBITMQCTL`` names another command, e.g. one that
runs it in the broker's container). The import is applied asynchronously, so provisioning
returns only once each new user can log in. An external participant's reply queue is declared
and bound under its own id by the administrator, and PostgreSQL logins are created (or their
password set again) as members of their agent's schema role. Running it again keeps every
password on file, so set-up can run while agents are connected.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import aio_pika
import asyncpg

from broker import link
from broker.access import (
    AccessError,
    Credentials,
    Grant,
    agent_grant,
    database_login,
    definitions,
    kept_or_new,
    new_password,
    participant_grant,
    participant_login,
    save_credentials,
    save_participant_login,
    with_login,
)
from broker.participants import declare_reply_queue
from broker.settings import Settings
from broker.topology import Names
from schemas.identity import Role

# How long a freshly imported user may take to be able to log in.
LOGIN_WAIT_S = 30.0


async def rabbitmqctl(command: Sequence[str], *args: str, stdin: bytes | None = None) -> str:
    try:
        process = await asyncio.create_subprocess_exec(
            *command,
            *args,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except FileNotFoundError as exc:
        raise AccessError(
            f"{command[0]} not found: run this where RabbitMQ's rabbitmqctl works, or set KABUTO_RABBITMQCTL "
            "(e.g. `docker compose exec -T rabbitmq rabbitmqctl`)"
        ) from exc
    out, err = await process.communicate(stdin)
    if process.returncode != 0:
        raise AccessError(f"rabbitmqctl {args[0]} failed: {err.decode(errors='replace').strip()[:500]}")
    return out.decode()


async def import_users(settings: Settings, grants: Sequence[tuple[Grant, str]], names: Names | None) -> None:
    """Create or update the users with one import, then wait until each can log in."""
    if not grants:
        return
    document = json.dumps(definitions(grants, names)).encode()
    await rabbitmqctl(settings.rabbitmqctl, "import_definitions", "--format", "json", stdin=document)
    for grant, password in grants:
        await _await_login(with_login(settings.amqp_url, grant.user, password), grant.user)


async def _await_login(url: str, user: str) -> None:
    """A connection to the vhost succeeds only once the user and its permissions are there."""
    delay, waited = 0.05, 0.0
    while True:
        try:
            connection = await link.connect(url, timeout=5)
        except (aio_pika.exceptions.AMQPConnectionError, ConnectionError) as exc:
            if waited >= LOGIN_WAIT_S:
                raise AccessError(f"the broker did not let {user} log in after importing it: {exc!r}") from exc
            await asyncio.sleep(delay)  # polling the broker's asynchronous import, not synchronising a test
            waited, delay = waited + delay, min(delay * 2, 1.0)
            continue
        await connection.close()
        return


async def delete_users(users: Iterable[str], command: Sequence[str] = ("rabbitmqctl",)) -> None:
    await asyncio.gather(*(rabbitmqctl(command, "delete_user", user) for user in users))


_SAFE = re.compile(r"^[A-Za-z0-9_-]+$")


def create_login_sql(login: str, agent: str, password: str) -> list[str]:
    """A login that may only become the agent's schema role (NOINHERIT: nothing without it);
    made once, its password set again on every run."""
    if not (_SAFE.fullmatch(login) and _SAFE.fullmatch(agent) and _SAFE.fullmatch(password)):
        raise AccessError("logins, agents and passwords are plain [A-Za-z0-9_-] here")
    return [
        f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{login}') "
        f'THEN CREATE ROLE "{login}" LOGIN; END IF; END $$',
        f"ALTER ROLE \"{login}\" LOGIN NOINHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD '{password}'",
        f'GRANT "kabuto_{agent}" TO "{login}"',
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
    namespace_pattern: str | None = None,
) -> Provisioned:
    """Create a broker user and a database login per agent, and a broker user and reply queue per
    external participant; run as the administrator (``KABUTO_AMQP_URL``/``KABUTO_DATABASE_URL``).
    ``save`` keeps the credentials on file (and reuses those already there); ``namespace_pattern``
    makes agent users for every namespace it matches, without topic permissions (the tests)."""
    names = Names(settings.namespace)
    prefix = prefix or settings.namespace
    roles = dict(agents)
    made = {agent: _agent_credentials(settings, agent, prefix, save) for agent in roles}
    grants = [
        (agent_grant(names, agent, roles[agent], c.amqp_user, namespace_pattern), c.amqp_password)
        for agent, c in made.items()
    ]
    outside = {pid: _participant_login(settings, pid, prefix, save) for pid in participants}
    grants += [(participant_grant(names, pid, user), password) for pid, (user, password) in outside.items()]
    if broker:
        await import_users(settings, grants, None if namespace_pattern else names)
        await _declare_participant_queues(settings.amqp_url, names, outside)
    await _create_logins(settings.database_url, made)
    if save:
        for agent, credentials in made.items():
            save_credentials(settings.key_dir, agent, credentials)
        for pid, (user, password) in outside.items():
            save_participant_login(settings.key_dir, pid, user, password)
    return Provisioned(made, outside, broker)


def _agent_credentials(settings: Settings, agent: str, prefix: str, save: bool) -> Credentials:
    user, login = f"{prefix}-{agent}", database_login(agent, prefix)
    if save:
        return kept_or_new(settings.key_dir, agent, user, login)
    return Credentials(user, new_password(), login, new_password())


def _participant_login(settings: Settings, participant_id: str, prefix: str, save: bool) -> tuple[str, str]:
    user = f"{prefix}-{participant_id}"
    kept = participant_login(settings.key_dir, participant_id) if save else None
    return kept if kept is not None and kept[0] == user else (user, new_password())


async def _create_logins(database_url: str, made: dict[str, Credentials]) -> None:
    if not made:
        return
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


async def _declare_participant_queues(amqp_url: str, names: Names, outside: dict[str, Any]) -> None:
    """The participant's reply queue, bound under its own id: it may read it but never bind or declare."""
    if not outside:
        return
    connection = await link.connect(amqp_url)
    try:
        channel = await connection.channel()
        for pid in outside:
            await declare_reply_queue(channel, names, pid)
    finally:
        await connection.close()
