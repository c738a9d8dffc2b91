"""The ``kabuto`` command: the composition root that reads settings once and wires agents.

Run ``kabuto --help`` for the commands; the README explains each.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from decimal import Decimal, InvalidOperation
from pathlib import Path

import aio_pika
import asyncpg

from agents import commands
from agents.registry import AGENTS
from broker import logs
from broker.errors import KabutoError
from broker.pki import PkiError
from broker.settings import AGENT_IDS, Settings, SettingsError, load
from schemas.identity import Role

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def _decimal(text: str) -> Decimal:
    try:
        return Decimal(text)
    except InvalidOperation as exc:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from exc


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kabuto", description=__doc__.split("\n")[0] if __doc__ else None)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    m = sub.add_parser("migrate", help="apply the SQL migrations (creates the database if missing)")
    m.add_argument("--dir", type=Path, default=MIGRATIONS)

    ca = sub.add_parser("ca", help="the Kabuto certificate authority").add_subparsers(
        dest="ca_command", required=True, metavar="CA_COMMAND"
    )
    ca.add_parser("init", help="create the CA (keeps an existing one)")
    enrol = ca.add_parser("enrol", help="issue an identity certificate")
    enrol.add_argument("user_id")
    enrol.add_argument("--role", required=True, choices=[r.value for r in Role])
    enrol.add_argument("--limit", type=int, help="investor's account usage limit (JPY)")
    enrol.add_argument("--allow-short-selling", action="store_true")
    enrol.add_argument("--renew", action="store_true", help="replace a usable certificate")
    ca.add_parser("enrol-all", help="enrol the seven agents and the configured investors")
    show = ca.add_parser("show", help="print a participant's identity certificate")
    show.add_argument("user_id")

    run = sub.add_parser("run", help="run agents until SIGINT/SIGTERM")
    run.add_argument("agent", choices=["all", *AGENT_IDS])

    sub.add_parser("demo", help="run the agents and the demo scenario")
    sub.add_parser("status", help="queue depth, consumers, dead letters and outbox lag per agent")

    dead = sub.add_parser("dead-letters", help="list or replay an agent's dead letters")
    dead.add_argument("agent", choices=AGENT_IDS)
    dead.add_argument("--replay", metavar="MESSAGE_ID")
    dead.add_argument("--show", metavar="MESSAGE_ID", help="print one dead letter in full")

    sub.add_parser("catalogue", help="print the AsyncAPI document of every message")

    issuer = sub.add_parser("issuer", help="the issuing agent's books").add_subparsers(
        dest="issuer_command", required=True, metavar="ISSUER_COMMAND"
    )
    offer = issuer.add_parser("offer", help="open a new-share offering")
    offer.add_argument("issue_code")
    offer.add_argument("--company", required=True)
    offer.add_argument("--incorporated", required=True, help="YYYY-MM-DD")
    offer.add_argument("--shares", type=int, required=True)
    offer.add_argument("--price", type=_decimal, required=True)
    offer.add_argument("--lot", type=int, default=100)
    offer.add_argument("--par-value", type=_decimal)
    offer.add_argument("--class", dest="share_class", default="common")
    reg = issuer.add_parser("register", help="the shareholder register of an issue")
    reg.add_argument("issue_code")
    issuer.add_parser("offerings", help="every offering")
    issuer.add_parser("publish-certid-list", help="send the exchange every issue's CertID list")

    inv = sub.add_parser("investor", help="an investor's wallet and requests").add_subparsers(
        dest="investor_command", required=True, metavar="INVESTOR_COMMAND"
    )
    req = inv.add_parser("request-certificates", help="subscribe to a new issue")
    req.add_argument("--as", dest="user", required=True)
    req.add_argument("issue_code")
    req.add_argument("--shares", type=int, required=True)
    req.add_argument("--class", dest="share_class", default="common")
    req.add_argument("--name", required=True, help="holder of record")
    req.add_argument("--address", required=True)
    req.add_argument("--dividend-account", required=True)
    wallet = inv.add_parser("wallet", help="the certificates held, verified again")
    wallet.add_argument("--as", dest="user", required=True)
    reqs = inv.add_parser("requests", help="requests sent and their outcome")
    reqs.add_argument("--as", dest="user", required=True)

    ex = sub.add_parser("exchange", help="the exchange's books").add_subparsers(
        dest="exchange_command", required=True, metavar="EXCHANGE_COMMAND"
    )
    cl = ex.add_parser("certid-list", help="the CertID list")
    cl.add_argument("issue_code", nargs="?")
    return p


async def serve(settings: Settings, agent: str) -> None:
    from broker.runtime import serve as serve_agents

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    definitions = list(AGENTS.values()) if agent == "all" else [AGENTS[agent]]
    await serve_agents(definitions, settings, stop)


def dispatch(args: argparse.Namespace, settings: Settings) -> Awaitable[int | None]:
    table: dict[str, Callable[[argparse.Namespace, Settings], Awaitable[int | None]]] = {
        "migrate": commands.migrate,
        "ca": commands.ca,
        "demo": commands.demo,
        "status": commands.status,
        "dead-letters": commands.dead_letters,
        "catalogue": commands.catalogue,
        "issuer": commands.issuer,
        "investor": commands.investor,
        "exchange": commands.exchange,
    }
    if args.command == "run":
        return _none(serve(settings, args.agent))
    return table[args.command](args, settings)


async def _none(work: Awaitable[None]) -> None:
    await work


async def _checked(work: Awaitable[int | None]) -> int | None:
    return await work


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        settings = load()
    except SettingsError as exc:
        print(f"kabuto: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level, settings.log_format)
    try:
        return asyncio.run(_checked(dispatch(args, settings))) or 0
    except (
        asyncpg.InvalidCatalogNameError,
        asyncpg.UndefinedTableError,
        asyncpg.InvalidSchemaNameError,
    ) as exc:
        print(f"kabuto: {exc} — run `kabuto migrate` (or `make setup`) first", file=sys.stderr)
        return 1
    except (KabutoError, PkiError, asyncpg.PostgresError, aio_pika.exceptions.AMQPError, OSError) as exc:
        print(f"kabuto: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
