"""The ``kabuto`` command: the composition root that reads settings once and wires agents.

Run ``kabuto --help`` for the commands; the README explains each.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import aio_pika
import asyncpg

from agents import operations, outbox_commands
from agents.brokerage import commands as brokerage_commands
from agents.credit import commands as credit_commands
from agents.custody import commands as custody_commands
from agents.exchange import commands as exchange_commands
from agents.investor import commands as investor_commands
from agents.issuer import commands as issuer_commands
from agents.settlement import commands as settlement_commands
from broker import logs
from broker.errors import KabutoError
from broker.pki import PkiError
from broker.settings import Settings, SettingsError, load

Run = Callable[[argparse.Namespace, Settings], Coroutine[Any, Any, int]]
GROUPS: dict[str, Run] = {
    "issuer": issuer_commands.run,
    "investor": investor_commands.run,
    "exchange": exchange_commands.run,
    "settlement": settlement_commands.run,
    "brokerage": brokerage_commands.run,
    "outbox": outbox_commands.run,
    "custody": custody_commands.run,
    "credit": credit_commands.run,
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kabuto", description="Kabuto: market infrastructure in a box.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    operations.add_parsers(sub)
    for group in (issuer_commands, investor_commands, exchange_commands, settlement_commands, brokerage_commands):
        group.add_parser(sub)
    outbox_commands.add_parser(sub)
    credit_commands.add_parser(sub)
    custody_commands.add_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        settings = load()
    except SettingsError as exc:
        print(f"kabuto: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level, settings.log_format)
    command = GROUPS.get(args.command, operations.run)
    try:
        return asyncio.run(command(args, settings))
    except (
        asyncpg.InvalidCatalogNameError,
        asyncpg.UndefinedTableError,
        asyncpg.InvalidSchemaNameError,
    ) as exc:
        print(f"kabuto: {exc} — run `kabuto migrate` (or `make setup`) first", file=sys.stderr)
        return 1
    except (
        KabutoError,
        PkiError,
        ValueError,
        asyncpg.PostgresError,
        aio_pika.exceptions.AMQPError,
        OSError,
    ) as exc:
        print(f"kabuto: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
