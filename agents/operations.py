"""``kabuto`` commands for running and operating Kabuto: migrate, ca, run, demo, status,
dead letters and the message catalogue."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from pathlib import Path

from agents import access_commands, ca_commands, reconcile, render
from agents import demo as demo_scenario
from agents.registry import AGENTS
from broker import enrolment, ops
from broker.catalogue import asyncapi
from broker.migrate import migrate as apply_migrations
from broker.pki import KeyStore, default_participant
from broker.runtime import serve
from broker.settings import AGENT_IDS, Settings
from schemas.identity import Participant, Role

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
    ca_commands.add_ca_parsers(ca)

    run = sub.add_parser("run", help="run agents until SIGINT/SIGTERM")
    run.add_argument("agent", choices=["all", *AGENT_IDS])
    sub.add_parser("demo", help="run the agents and the demo scenario")
    sub.add_parser("status", help="queue depth, consumers, dead letters and outbox lag per agent")
    hp = sub.add_parser("health", help="exit 0 if the agent's database, inbox and consumer are fine")
    hp.add_argument("agent", choices=AGENT_IDS)
    dead = sub.add_parser("dead-letters", help="list, show or replay an agent's dead letters")
    dead.add_argument("agent", choices=AGENT_IDS)
    dead.add_argument("--replay", metavar="MESSAGE_ID")
    dead.add_argument("--show", metavar="MESSAGE_ID", help="print one dead letter in full")
    sub.add_parser("catalogue", help="print the AsyncAPI document of every message")
    access_commands.add_parsers(sub)
    rec = sub.add_parser("reconcile", help="compare the exchange's CertID list with the issuer's register")
    rec.add_argument("issue_code", nargs="?")


async def run(args: argparse.Namespace, settings: Settings) -> int:
    match args.command:
        case "migrate":
            applied = await apply_migrations(settings.database_url, args.dir)
            print(f"applied {len(applied)} migration(s)" + (f": {', '.join(applied)}" if applied else ""))
        case "ca":
            _ca(args, KeyStore(settings.key_dir), settings)
        case "run":
            await _serve(settings, args.agent)
        case "demo":
            await demo_scenario.run(settings)
        case "status":
            _print_status(await ops.status(settings, AGENT_IDS))
        case "health":
            problems = await ops.health(settings, args.agent)
            print("healthy" if not problems else "; ".join(problems))
            return 1 if problems else 0
        case "dead-letters":
            return await _dead_letters(args, settings)
        case "catalogue":
            print(json.dumps(asyncapi(settings.namespace), indent=2))
        case "reconcile":
            return await _reconcile(settings, args.issue_code)
        case "access":
            return await access_commands.run(args, settings)
    return 0


def _ca(args: argparse.Namespace, keys: KeyStore, settings: Settings) -> None:
    match args.ca_command:
        case "init":
            authority, created = keys.init_ca()
            subject = authority.certificate.subject.rfc4514_string()
            print(f"{'created' if created else 'kept existing'} CA {subject} in {keys.root}")
        case "enrol":
            participant = ca_commands.participant_for(args.user_id, args.role, args.limit, args.allow_short_selling)
            _enrol(keys, participant, renew=args.renew)
        case "enrol-all":
            for agent in AGENT_IDS:
                if agent != "investor":
                    _enrol(keys, default_participant(agent, Role(agent)))
            for investor in settings.investors:
                _enrol(keys, default_participant(investor, Role.INVESTOR))
        case "revoke" | "sign-csr" | "request":
            ca_commands.run_ca(args, keys)
        case "show":
            identity = keys.load_identity(args.user_id)
            cert = identity.certificate
            print(
                f"subject      {cert.subject.rfc4514_string()}\nissuer       {cert.issuer.rfc4514_string()}"
                f"\nserial       {cert.serial_number:x}\nvalid        {cert.not_valid_before_utc} → "
                f"{cert.not_valid_after_utc}\nfingerprint  {identity.fingerprint}"
                f"\nparticipant  {identity.participant.model_dump_json()}"
            )


def _enrol(keys: KeyStore, participant: Participant, *, renew: bool = False) -> None:
    enrolment.examine(keys, participant)  # R-001-02: the CA examines the requester first
    identity, created = keys.enrol(participant, renew=renew)
    print(
        f"{'enrolled' if created else 'kept'} {identity.user_id} ({participant.role.value}) "
        f"{identity.fingerprint[:16]}…"
    )


async def _serve(settings: Settings, agent: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    definitions = list(AGENTS.values()) if agent == "all" else [AGENTS[agent]]
    await serve(definitions, settings, stop)


def _print_status(rows: list[ops.AgentStatus]) -> None:
    print(
        render.table(
            ["agent", "inbox", "consumers", "dead letters", "outbox pending", "outbox failed", "outbox lag"],
            [
                [
                    s.agent,
                    s.inbox_messages,
                    s.consumers,
                    s.dead_letters,
                    s.outbox_pending,
                    s.outbox_failed,
                    s.outbox_lag,
                ]
                for s in rows
            ],
            indent="",
        )
    )


async def _dead_letters(args: argparse.Namespace, settings: Settings) -> int:
    if args.replay:
        found = await ops.replay(settings, args.agent, args.replay)
        print("replayed" if found else f"no dead letter {args.replay} for {args.agent}")
        return 0 if found else 1
    letters = await ops.dead_letters(settings, args.agent)
    if args.show:
        shown = [d for d in letters if d.message_id == args.show]
        if not shown:
            print(f"no dead letter {args.show} for {args.agent}")
            return 1
        headers = {k: str(v) for k, v in shown[0].headers.items()}
        print(json.dumps({"headers": headers, "body": shown[0].body.decode(errors="replace")}, indent=2))
        return 0
    print(
        render.table(
            ["message id", "type", "kind", "reason", "detail", "when"],
            [[d.message_id, d.type, d.kind, d.reason, d.detail[:60], d.dead_lettered_at] for d in letters],
            indent="",
        )
    )
    return 0


async def _reconcile(settings: Settings, issue_code: str | None) -> int:
    found = await reconcile.differences(settings, issue_code)
    if not found:
        print("the exchange's CertID list equals the issuer's register")
        return 0
    print(
        render.table(
            ["issue", "CertID", "difference", "issuer register", "exchange list"],
            [[d.issue_code, d.cert_id, d.kind, d.issuer, d.exchange] for d in found],
            indent="",
        )
    )
    return 1
