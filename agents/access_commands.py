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
    prov = acc.add_parser("provision", help="create the logins on the local broker (rabbitmqctl) and database")
    prov.add_argument("--participant", action="append", default=[], help="an external participant (repeatable)")
    defs = acc.add_parser("definitions", help="write the broker users as a definitions file (compose)")
    defs.add_argument("--out", type=Path, required=True)
    defs.add_argument("--participant", action="append", default=[])


async def run(args: argparse.Namespace, settings: Settings) -> int:
    agents = [(a, Role(a)) for a in AGENT_IDS]
    match args.access_command:
        case "provision":
            made = await provisioning.provision(settings, agents, args.participant)
            for agent, credentials in made.agents.items():
                print(f"{agent}: broker user {credentials.amqp_user}, database login {credentials.database_user}")
            for pid, (user, _) in made.participants.items():
                print(f"{pid}: broker user {user} (password shown once): {made.participants[pid][1]}")
            print(
                f"agent credentials in {settings.key_dir / 'credentials'}; run agents with KABUTO_AGENT_CREDENTIALS=1"
            )
        case "definitions":
            _write_definitions(settings, agents, args.participant, args.out)
    return 0


def _write_definitions(settings: Settings, agents: list[tuple[str, Role]], participants: list[str], out: Path) -> None:
    """Users for a broker that loads them at start; each agent's credentials file is written too."""
    names = Names(settings.namespace)
    grants: list[tuple[access.Grant, str]] = []
    for agent, role in agents:
        user, password = f"{settings.namespace}-{agent}", access.new_password()
        grants.append((access.agent_grant(names, agent, role, user), password))
        previous = access.credentials_path(settings.key_dir, agent)
        database = access.load_credentials(settings.key_dir, agent) if previous.exists() else None
        access.save_credentials(
            settings.key_dir,
            agent,
            access.Credentials(
                user,
                password,
                database.database_user if database else access.database_login(agent, settings.namespace),
                database.database_password if database else access.new_password(),
            ),
        )
    for pid in participants:
        user, password = f"{settings.namespace}-{pid}", access.new_password()
        grants.append((access.participant_grant(names, pid, user), password))
        print(f"{pid}: broker user {user} (password shown once): {password}")
    out.write_text(json.dumps(access.definitions(grants, names), indent=2))
    out.chmod(0o600)
    print(f"wrote {len(grants)} user(s) to {out}; agent credentials in {settings.key_dir / 'credentials'}")
