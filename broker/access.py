"""Least privilege on the broker and the database: one login per agent and per external participant.

RabbitMQ. Each agent gets a user whose permissions (configure, write, read regexes on the
vhost) reach its own queues and the four shared exchanges only, and whose topic permission on
the events exchange lets it publish just the event types its role sends (from the message
catalogue). An external participant gets a user that may publish to the messages exchange
and read its own reply queue ``ns.participant.<id>`` — nothing else: it cannot declare or bind
(so it cannot bind its queue under another participant's routing key), read another queue, or
publish to the events exchange. Every user is written into one RabbitMQ definitions document
(``definitions``), which ``broker.provisioning`` imports with ``rabbitmqctl import_definitions``
and compose imports from its own one-shot service.

PostgreSQL. Each agent gets a login role that is a member of its schema role
``kabuto_<agent>`` (migration 0001) and nothing else, and inherits nothing: without that role
it can read no table at all.

Credentials live in ``<key dir>/credentials/<agent>.json`` (mode 0600), an external
participant's broker login in ``<key dir>/participants/<id>/broker.json``; provisioning again
keeps them, so it can run on every set-up. With ``KABUTO_AGENT_CREDENTIALS=1`` (the default)
an agent connects with its own logins; ``0`` uses the URLs as given (administrative tools,
development against a broker you cannot provision).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from broker.errors import KabutoError
from broker.participants import reply_queue_name
from broker.settings import Settings
from broker.topology import Names
from schemas import catalogue
from schemas.identity import Role


class AccessError(KabutoError):
    """A credential is missing, or the broker or database refused to provision one."""


@dataclass(frozen=True, slots=True)
class Grant:
    """What one RabbitMQ user may do on the vhost (regexes), and on the events exchange by routing key."""

    user: str
    configure: str
    write: str
    read: str
    publishes_events: str  # topic permission (write) on the events exchange


@dataclass(frozen=True, slots=True)
class Credentials:
    amqp_user: str
    amqp_password: str
    database_user: str
    database_password: str


def _any_of(names: Iterable[str]) -> str:
    return "^(" + "|".join(re.escape(n) for n in names) + ")$"


def agent_grant(names: Names, agent: str, role: Role, user: str, namespace_pattern: str | None = None) -> Grant:
    """``namespace_pattern`` (a regex) grants the same in every namespace it matches: the test
    suite's agents, one user per agent for all its per-test namespaces."""
    ns = namespace_pattern or re.escape(names.namespace)
    own = ns + r"\." + re.escape(agent) + r"(\..+)?"
    shared = [ns + r"\." + suffix for suffix in ("messages", "events", "retry", "dead")]
    shared_and_own = "^(" + "|".join([own, *shared, ns + r"\.events\.journal"]) + ")$"
    return Grant(
        user=user,
        configure=shared_and_own,
        write=shared_and_own,
        read="^(" + "|".join([own, *shared]) + ")$",
        publishes_events=_any_of(event_types(role)) if event_types(role) else "^$",
    )


def participant_grant(names: Names, participant_id: str, user: str) -> Grant:
    return Grant(
        user=user,
        configure="^$",
        write=_any_of([names.messages]),
        read=_any_of([reply_queue_name(names, participant_id)]),
        publishes_events="^$",
    )


def event_types(role: Role) -> list[str]:
    return sorted(s.type for s in catalogue.specs() if s.is_event and role in s.senders)


def password_hash(password: str, salt: bytes | None = None) -> str:
    """RabbitMQ's rabbit_password_hashing_sha256: base64(salt + sha256(salt + password))."""
    salt = salt if salt is not None else os.urandom(4)
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def definitions(grants: Iterable[tuple[Grant, str]], names: Names | None, vhost: str = "/") -> dict[str, Any]:
    """A RabbitMQ definitions document creating each user with its password and permissions;
    ``names`` None: no topic permission (users whose namespace is a pattern)."""
    pairs = list(grants)
    return {
        "users": [
            {
                "name": g.user,
                "password_hash": password_hash(password),
                "hashing_algorithm": "rabbit_password_hashing_sha256",
                "tags": "",
            }
            for g, password in pairs
        ],
        "permissions": [
            {"user": g.user, "vhost": vhost, "configure": g.configure, "write": g.write, "read": g.read}
            for g, _ in pairs
        ],
        "topic_permissions": [
            {"user": g.user, "vhost": vhost, "exchange": names.events, "write": g.publishes_events, "read": ".*"}
            for g, _ in pairs
            if names is not None
        ],
    }


def new_password() -> str:
    return secrets.token_urlsafe(24)


def credentials_path(key_dir: Path, agent: str) -> Path:
    return key_dir / "credentials" / f"{agent}.json"


def save_credentials(key_dir: Path, agent: str, credentials: Credentials) -> Path:
    path = credentials_path(key_dir, agent)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(
            {
                "amqp_user": credentials.amqp_user,
                "amqp_password": credentials.amqp_password,
                "database_user": credentials.database_user,
                "database_password": credentials.database_password,
            },
            fh,
        )
    return path


def load_credentials(key_dir: Path, agent: str) -> Credentials:
    path = credentials_path(key_dir, agent)
    try:
        raw = json.loads(path.read_text())
        return Credentials(raw["amqp_user"], raw["amqp_password"], raw["database_user"], raw["database_password"])
    except FileNotFoundError as exc:
        raise AccessError(
            f"no credentials for {agent} at {path}: run `kabuto access provision` (`make setup` does), "
            "or KABUTO_AGENT_CREDENTIALS=0 to connect with the URLs as given"
        ) from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise AccessError(f"{path} is not a Kabuto credentials file") from exc


def kept_or_new(key_dir: Path, agent: str, amqp_user: str, database_user: str) -> Credentials:
    """The agent's credentials on file when they name these logins, else new passwords: set-up
    runs again without changing a running agent's password."""
    if credentials_path(key_dir, agent).exists():
        kept = load_credentials(key_dir, agent)
        if (kept.amqp_user, kept.database_user) == (amqp_user, database_user):
            return kept
    return Credentials(amqp_user, new_password(), database_user, new_password())


def participant_credentials_path(key_dir: Path, participant_id: str) -> Path:
    return key_dir / "participants" / participant_id / "broker.json"


def save_participant_login(key_dir: Path, participant_id: str, user: str, password: str) -> Path:
    """An external participant's broker login, beside its key (0600), for ``Participant.enrolled``."""
    path = participant_credentials_path(key_dir, participant_id)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"amqp_user": user, "amqp_password": password}, fh)
    return path


def participant_login(key_dir: Path, participant_id: str) -> tuple[str, str] | None:
    """The participant's broker login on file, if enrolment made one."""
    path = participant_credentials_path(key_dir, participant_id)
    if not path.exists():
        return None
    try:
        raw = json.loads(path.read_text())
        return str(raw["amqp_user"]), str(raw["amqp_password"])
    except (ValueError, KeyError, TypeError) as exc:
        raise AccessError(f"{path} is not a Kabuto broker login") from exc


def with_login(url: str, user: str, password: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


@dataclass(frozen=True, slots=True)
class AgentUrls:
    amqp: str
    database: str


def agent_urls(settings: Settings, agent: str) -> AgentUrls:
    """The URLs an agent connects with: its own logins when KABUTO_AGENT_CREDENTIALS is on (the default)."""
    if not settings.agent_credentials:
        return AgentUrls(settings.amqp_url, settings.database_url)
    credentials = load_credentials(settings.key_dir, agent)
    return AgentUrls(
        with_login(settings.amqp_url, credentials.amqp_user, credentials.amqp_password),
        with_login(settings.database_url, credentials.database_user, credentials.database_password),
    )


def database_login(agent: str, prefix: str = "kabuto") -> str:
    return f"{prefix}_{agent}_login"
