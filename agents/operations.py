"""``kabuto`` commands for running and operating Kabuto: migrate, ca, run, demo, status,
dead letters and the message catalogue."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from pathlib import Path

import aio_pika
from rich.console import Console

from agents import access_commands, ca_commands, reconcile, render, status_view
from agents import demo as demo_scenario
from agents.registry import AGENTS, institutions
from broker import enrolment, logs, ops
from broker.catalogue import asyncapi, release
from broker.migrate import migrate as apply_migrations
from broker.participants import ensure_reply_queue, is_external
from broker.pki import KeyStore, default_participant
from broker.provenance import Provenance
from broker.runtime import serve
from broker.settings import AGENT_IDS, Settings
from broker.supervisor import Child, supervise
from broker.trust import TrustStore
from schemas.identity import Participant, Role

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
log = logs.get("kabuto.run")


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
    enrol.add_argument(
        "--no-reply-queue", action="store_true", help="an external participant: do not declare its reply queue now"
    )
    ca.add_parser("enrol-all", help="enrol the seven agents and the configured investors")
    show = ca.add_parser("show", help="print a participant's identity certificate")
    show.add_argument("user_id")
    ca_commands.add_ca_parsers(ca)

    run = sub.add_parser("run", help="run agents until SIGINT/SIGTERM")
    run.add_argument("agent", choices=["all", *AGENT_IDS])
    run.add_argument(
        "--in-process", action="store_true", help="run all agents in this one process, not one process each"
    )
    sub.add_parser("demo", help="run the agents and the demo scenario")
    st = sub.add_parser("status", help="depth, consumers, rates, dead letters, outbox lag and last error per agent")
    st.add_argument("--watch", action="store_true", help="redraw in place until Ctrl-C")
    st.add_argument("--interval", type=float, default=2.0, help="seconds between redraws (--watch)")
    st.add_argument("--iterations", type=int, help="stop after this many redraws (--watch)")
    hp = sub.add_parser("health", help="exit 0 if the agent's database, inbox and consumer are fine")
    hp.add_argument("agent", choices=AGENT_IDS)
    dead = sub.add_parser("dead-letters", help="list, show or replay an agent's dead letters")
    dead.add_argument("agent", choices=AGENT_IDS)
    dead.add_argument("--replay", metavar="MESSAGE_ID")
    dead.add_argument("--show", metavar="MESSAGE_ID", help="print one dead letter in full")
    dead.add_argument("--offset", type=int, default=0, help="skip this many (oldest first)")
    dead.add_argument("--limit", type=int, default=100, help="list at most this many")
    cat = sub.add_parser("catalogue", help="print the AsyncAPI 3 document of every message")
    cat.add_argument(
        "--release", type=Path, metavar="FILE", help="add the versions not yet released to FILE (released.json)"
    )
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
            if args.ca_command == "enrol" and is_external(settings, args.user_id) and not args.no_reply_queue:
                return await _reply_queue(settings, args.user_id)
        case "run":
            await _serve(settings, args.agent, in_process=args.in_process)
        case "demo":
            await demo_scenario.run(settings)
        case "status":
            await _status(settings, args.watch, args.interval, args.iterations)
        case "health":
            problems = await ops.health(settings, args.agent)
            print("healthy" if not problems else "; ".join(problems))
            return 1 if problems else 0
        case "dead-letters":
            return await _dead_letters(args, settings)
        case "catalogue" if args.release:
            return _release(args.release)
        case "catalogue":
            print(json.dumps(asyncapi(settings.namespace, settings.amqp_url), indent=2))
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
            for institution in institutions():
                _enrol(keys, institution)
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


async def _reply_queue(settings: Settings, user_id: str) -> int:
    """An external participant's reply queue, so that no reply to it is parked (docs/client.md)."""
    try:
        queue = await ensure_reply_queue(settings, user_id)
    except (OSError, aio_pika.exceptions.AMQPError) as exc:
        print(
            f"kabuto: {user_id} is enrolled, but its reply queue could not be declared ({exc!r}); run this again "
            "when RabbitMQ answers (the certificate is kept), or let the client declare it on connect"
        )
        return 1
    print(f"reply queue {queue} bound to {settings.namespace}.messages by {user_id}")
    return 0


def _enrol(keys: KeyStore, participant: Participant, *, renew: bool = False) -> None:
    enrolment.examine(keys, participant)  # R-001-02: the CA examines the requester first
    identity, created = keys.enrol(participant, renew=renew)
    print(
        f"{'enrolled' if created else 'kept'} {identity.user_id} ({participant.role.value}) "
        f"{identity.fingerprint[:16]}…"
    )


async def _serve(settings: Settings, agent: str, *, in_process: bool = False) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if agent == "all" and not in_process:  # one OS process per agent, so every core works
        children = [Child(a, (sys.executable, "-m", "agents.cli", "run", a)) for a in AGENTS]
        async with asyncio.TaskGroup() as tasks:
            supervising = tasks.create_task(supervise(children, stop))
            tasks.create_task(_announce_ready(settings, list(AGENTS), supervising))
        return
    definitions = list(AGENTS.values()) if agent == "all" else [AGENTS[agent]]
    await serve(definitions, settings, stop)


async def _status(settings: Settings, watch: bool, interval: float, iterations: int | None) -> None:
    console = Console()
    if watch:
        await status_view.watch(settings, AGENT_IDS, console, interval, iterations)
    else:
        await status_view.show(settings, AGENT_IDS, console)


async def _announce_ready(settings: Settings, agents: list[str], supervising: asyncio.Task[None]) -> None:
    """Log ``agents_ready`` once every agent's inbox has its consumer, as one-process ``run all`` does."""
    while not supervising.done():
        try:
            status = await ops.status(settings, agents)
        # Any failure to ask is "not ready yet" (queues not declared, a slow broker at start-up).
        except Exception as exc:  # noqa: BLE001
            log.debug("agents_not_ready", error=repr(exc))
            status = []
        if status and all(s.consumers for s in status):
            log.info("agents_ready", agents=agents, processes=True)
            return
        await asyncio.sleep(0.5)  # polling the broker at start-up only


async def _dead_letters(args: argparse.Namespace, settings: Settings) -> int:
    if args.replay:
        found = await ops.replay(settings, args.agent, args.replay)
        print("replayed" if found else f"no dead letter {args.replay} for {args.agent}")
        return 0 if found else 1
    trust = TrustStore(KeyStore(settings.key_dir).ca_certificate())
    if args.show:
        page = await ops.dead_letter_page(settings, args.agent, trust, limit=SHOW_SEARCH_LIMIT)
        shown = [(d, p) for d, p in page.letters if args.show in (d.message_id, p.message_id)]
        if not shown:
            print(f"no dead letter {args.show} for {args.agent}")
            return 1
        letter, proof = shown[0]
        headers = {k: str(v) for k, v in letter.headers.items()}
        verified = {
            "message_id": proof.message_id,
            "type": proof.type,
            "sender": proof.sender,
            "problem": proof.problem,
        }
        print(
            json.dumps(
                {"verified": verified, "headers": headers, "body": letter.body.decode(errors="replace")}, indent=2
            )
        )
        return 0
    page = await ops.dead_letter_page(settings, args.agent, trust, offset=args.offset, limit=args.limit)
    print(render.table(DEAD_LETTER_COLUMNS, [_dead_letter_row(d, p) for d, p in page.letters], indent=""))
    shown_to = page.offset + len(page.letters)
    print(f"{page.offset + 1 if page.letters else page.offset}–{shown_to} of {page.total} dead letter(s)", end="")
    print(f"; {page.remaining} more: --offset {shown_to}" if page.remaining else "")
    return 0


SHOW_SEARCH_LIMIT = 100_000
DEAD_LETTER_COLUMNS = ["message id", "type", "sender", "verified", "kind", "reason", "detail", "when"]


def _dead_letter_row(letter: ops.DeadLetter, proof: Provenance) -> list[object]:
    """The envelope's own id and type when its signature holds; the unproven AMQP properties otherwise."""
    if proof.verified:
        return [
            proof.message_id,
            proof.type,
            proof.sender,
            "yes",
            letter.kind,
            letter.reason,
            letter.detail[:60],
            letter.dead_lettered_at,
        ]
    return [
        f"{letter.message_id} (claimed)",
        f"{letter.type} (claimed)",
        "?",
        f"NO — {proof.problem}"[:60],
        letter.kind,
        letter.reason,
        letter.detail[:60],
        letter.dead_lettered_at,
    ]


def _release(path: Path) -> int:
    snapshot = json.loads(path.read_text()) if path.exists() else {}
    updated, added = release(snapshot)
    path.write_text(json.dumps(updated, indent=1, sort_keys=True) + "\n")
    print(f"released {', '.join(added)}" if added else "every message version is already released")
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
