"""``kabuto access …``: one broker user and database login per agent and per external participant
(issue 13, least privilege). Run by the administrator, with the administrator's URLs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from agents.cli_runtime import run
from broker import access, provisioning
from broker.settings import AGENT_IDS, Settings
from broker.topology import Names
from schemas.identity import Role

app = typer.Typer(help="Least privilege: per-agent and per-participant logins.", no_args_is_help=True)
Participants = Annotated[list[str] | None, typer.Option("--participant", help="an external participant (repeat)")]
AGENTS = [(a, Role(a)) for a in AGENT_IDS]


@app.command()
def provision(participants: Participants = None) -> None:
    """Create the logins on the local broker (rabbitmqctl) and database."""

    async def body(settings: Settings) -> None:
        made = await provisioning.provision(settings, AGENTS, participants or [])
        for agent, credentials in made.agents.items():
            print(f"{agent}: broker user {credentials.amqp_user}, database login {credentials.database_user}")
        for pid, (user, password) in made.participants.items():
            print(f"{pid}: broker user {user} (password shown once): {password}")
        print(f"agent credentials in {settings.key_dir / 'credentials'}; run agents with KABUTO_AGENT_CREDENTIALS=1")

    run(body)


@app.command()
def definitions(
    out: Annotated[Path, typer.Option(help="the definitions file to write", show_default=False)],
    participants: Participants = None,
) -> None:
    """Write the broker users as a definitions file (compose)."""

    async def body(settings: Settings) -> None:
        _write_definitions(settings, AGENTS, participants or [], out)

    run(body)


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
