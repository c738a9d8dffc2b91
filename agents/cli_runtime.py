"""How one ``kabuto`` command runs (issue 10): settings read once, its body run, and whatever
happened turned into an exit code in this one place.

Exit codes: 0 done or accepted; 1 refused or failed (the reason on stderr); 2 a usage error
(Typer reports those before a command runs, and a setting Kabuto cannot use); 3 timed out
waiting for an answer (``agents.waiting``); 4 another instance of an agent ``kabuto run`` was
to run holds its lease (``broker.instance``); 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from typing import NoReturn

import aio_pika
import asyncpg
import typer

from broker import event_loop, logs
from broker.errors import KabutoError
from broker.instance import InstanceHeld
from broker.pki import PkiError
from broker.settings import Settings, SettingsError, load

Body = Callable[[Settings], Awaitable[int | None]]

USAGE = 2
INSTANCE_HELD = 4
INTERRUPTED = 130
_NOT_MIGRATED = (asyncpg.InvalidCatalogNameError, asyncpg.UndefinedTableError, asyncpg.InvalidSchemaNameError)
_FAILED = (KabutoError, PkiError, ValueError, asyncpg.PostgresError, aio_pika.exceptions.AMQPError, OSError)


def run(body: Body) -> NoReturn:
    """Run ``body`` with the settings; exit with its code (``None`` is 0) or the one its error maps to."""
    raise typer.Exit(_code(_settings(), body))


def _settings() -> Settings:
    try:
        settings = load()
    except SettingsError as exc:
        _fail(str(exc))
        raise typer.Exit(USAGE) from exc
    logs.configure(settings.log_level, settings.log_format)
    return settings


def _code(settings: Settings, body: Body) -> int:
    async def main() -> int | None:
        return await body(settings)

    try:
        return event_loop.run(main(), settings.event_loop) or 0
    except _NOT_MIGRATED as exc:
        _fail(f"{exc} — run `kabuto migrate` (or `make setup`) first")
    except InstanceHeld as exc:
        _fail(f"{type(exc).__name__}: {exc}")
        return INSTANCE_HELD
    except _FAILED as exc:
        _fail(f"{type(exc).__name__}: {exc}")
    except KeyboardInterrupt:
        return INTERRUPTED
    return 1


def _fail(message: str) -> None:
    print(f"kabuto: {message}", file=sys.stderr)
