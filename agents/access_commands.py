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
def provision(
    participants: Participants = None,
    no_broker: Annotated[
        bool, typer.Option("--no-broker", help="database logins only (the broker loads the definitions itself)")
    ] = False,
) -> None:
    """Create the logins on the broker (rabbitmqctl) and the database."""

    async def body(settings: Settings) -> None:
        made = await provisioning.provision(settings, AGENTS, participants or [], broker=not no_broker)
        for agent, credentials in made.agents.items():
            print(f"{agent}: broker user {credentials.amqp_user}, database login {credentials.database_user}")
        for pid, (user, _) in made.participants.items():
            path = access.participant_credentials_path(settings.key_dir, pid)
            print(f"{pid}: broker user {user}, its login in {path}")
        print(f"agent credentials in {settings.key_dir / 'credentials'} (used while KABUTO_AGENT_CREDENTIALS=1)")

    run(body)


@app.command()
def definitions(
    out: Annotated[Path, typer.Option(help="the definitions file to write", show_default=False)],
    participants: Participants = None,
) -> None:
    """Write the broker users as a definitions file (compose)."""

    async def body(settings: Settings) -> None:
        _write_definitions(settings, participants or [], out)

    run(body)


def _write_definitions(settings: Settings, participants: list[str], out: Path) -> None:
    """Users for a broker that imports them itself; the credentials on file are kept, new ones saved.
    The file holds salted hashes only, so the broker's own user may read it (0644)."""
    names = Names(settings.namespace)
    grants: list[tuple[access.Grant, str]] = []
    for agent, role in AGENTS:
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
