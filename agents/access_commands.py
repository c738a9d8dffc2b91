"""``kabuto access …``: one broker user and database login per agent and per external participant
(issue 13, least privilege). Run by the administrator, with the administrator's URLs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from broker import access, provisioning
from broker.settings import AGENT_IDS, Settings
from broker.topology import Names
from schemas.identity import Role


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    acc = sub.add_parser("access", help="least privilege: per-agent and per-participant logins").add_subparsers(
        dest="access_command", required=True, metavar="ACCESS_COMMAND"
    )
    prov = acc.add_parser("provision", help="create the logins on the broker (rabbitmqctl) and the database")
    prov.add_argument("--participant", action="append", default=[], help="an external participant (repeatable)")
    prov.add_argument(
        "--no-broker", action="store_true", help="database logins only (the broker loads the definitions itself)"
    )
    defs = acc.add_parser("definitions", help="write the broker users as a definitions file (compose)")
    defs.add_argument("--out", type=Path, required=True)
    defs.add_argument("--participant", action="append", default=[])


def _agents() -> list[tuple[str, Role]]:
    return [(a, Role(a)) for a in AGENT_IDS]


async def run(args: argparse.Namespace, settings: Settings) -> int:
    match args.access_command:
        case "provision":
            made = await provisioning.provision(settings, _agents(), args.participant, broker=not args.no_broker)
            for agent, credentials in made.agents.items():
                print(f"{agent}: broker user {credentials.amqp_user}, database login {credentials.database_user}")
            for pid, (user, _) in made.participants.items():
                path = access.participant_credentials_path(settings.key_dir, pid)
                print(f"{pid}: broker user {user}, its login in {path}")
            print(f"agent credentials in {settings.key_dir / 'credentials'} (used while KABUTO_AGENT_CREDENTIALS=1)")
        case "definitions":
            _write_definitions(settings, args.participant, args.out)
    return 0


def _write_definitions(settings: Settings, participants: list[str], out: Path) -> None:
    """Users for a broker that imports them itself; the credentials on file are kept, new ones saved.
    The file holds salted hashes only, so the broker's own user may read it (0644)."""
    names = Names(settings.namespace)
    grants: list[tuple[access.Grant, str]] = []
    for agent, role in _agents():
        user, login = f"{settings.namespace}-{agent}", access.database_login(agent, settings.namespace)
        credentials = access.kept_or_new(settings.key_dir, agent, user, login)
        access.save_credentials(settings.key_dir, agent, credentials)
        grants.append((access.agent_grant(names, agent, role, user), credentials.amqp_password))
    for pid in participants:
        user = f"{settings.namespace}-{pid}"
        kept = access.participant_login(settings.key_dir, pid)
        password = kept[1] if kept and kept[0] == user else access.new_password()
        access.save_participant_login(settings.key_dir, pid, user, password)
        grants.append((access.participant_grant(names, pid, user), password))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(access.definitions(grants, names), indent=2))
    out.chmod(0o644)
    print(f"wrote {len(grants)} user(s) to {out}; agent credentials in {settings.key_dir / 'credentials'}")
