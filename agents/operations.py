"""``kabuto`` commands for running and operating Kabuto: migrate, run, demo, status, health,
dead letters, the message catalogue and reconciliation. The ``ca``, ``access`` and ``outbox``
groups live in their own modules."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.console import Console

from agents import demo as demo_scenario
from agents import progress, reconcile, render, status_view
from agents.cli_runtime import run as run_command
from agents.registry import AGENTS, PARTICIPANT_SIDE
from broker import logs, ops
from broker.catalogue import asyncapi, release
from broker.migrate import migrate as apply_migrations
from broker.pki import KeyStore
from broker.provenance import Provenance
from broker.runtime import serve
from broker.settings import AGENT_IDS, AgentId, Settings
from broker.supervision import INFRASTRUCTURE, is_infrastructure
from broker.supervisor import Child, supervise
from broker.trust import TrustStore

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
log = logs.get("kabuto.run")

app = typer.Typer()
Agent = Annotated[AgentId, typer.Argument(help="the agent", show_default=False)]


@app.command()
def migrate(folder: Annotated[Path, typer.Option("--dir", help="the migrations folder")] = MIGRATIONS) -> None:
    """Apply the SQL migrations (creates the database if missing)."""

    async def body(settings: Settings) -> None:
        with progress.steps("migrations") as steps:
            applied = await apply_migrations(settings.database_url, folder, steps)
        print(f"applied {len(applied)} migration(s)" + (f": {', '.join(applied)}" if applied else ""))

    run_command(body)


@app.command("run")
def run_agents(
    agent: Annotated[Literal["all", AgentId], typer.Argument(help="all, or one agent", show_default=False)],
    in_process: Annotated[
        bool, typer.Option("--in-process", help="run all agents in this one process, not one process each")
    ] = False,
) -> None:
    """Run agents until SIGINT/SIGTERM."""
    run_command(lambda settings: _serve(settings, agent, in_process=in_process))


@app.command()
def demo() -> None:
    """Run the agents and the demo scenario."""

    async def body(settings: Settings) -> None:
        with progress.steps("demo") as steps:
            await demo_scenario.run(settings, steps=steps)

    run_command(body)


@app.command()
def status(
    watch: Annotated[bool, typer.Option("--watch", help="redraw in place until Ctrl-C")] = False,
    interval: Annotated[float, typer.Option(help="seconds between redraws (--watch)")] = 2.0,
    iterations: Annotated[int | None, typer.Option(help="stop after this many redraws (--watch)")] = None,
) -> None:
    """Depth, consumers, rates, dead letters, outbox lag and last error per agent."""
    run_command(lambda settings: _status(settings, watch, interval, iterations))


@app.command()
def health(agent: Agent) -> None:
    """Exit 0 if the agent's database, inbox and consumer are fine."""

    async def body(settings: Settings) -> int:
        problems = await ops.health(settings, agent)
        print("healthy" if not problems else "; ".join(problems))
        return 1 if problems else 0

    run_command(body)


@app.command("dead-letters")
def dead_letters(
    agent: Agent,
    replay: Annotated[str | None, typer.Option(metavar="MESSAGE_ID", help="send one back unchanged")] = None,
    show: Annotated[str | None, typer.Option(metavar="MESSAGE_ID", help="print one dead letter in full")] = None,
    offset: Annotated[int, typer.Option(help="skip this many (oldest first)")] = 0,
    limit: Annotated[int, typer.Option(help="list at most this many")] = 100,
) -> None:
    """List, show or replay an agent's dead letters."""
    if replay:
        run_command(lambda settings: _replay(settings, agent, replay))
    elif show:
        run_command(lambda settings: _show_dead_letter(settings, agent, show))
    else:
        run_command(lambda settings: _dead_letters(settings, agent, offset, limit))


@app.command()
def catalogue(
    release_to: Annotated[
        Path | None,
        typer.Option("--release", metavar="FILE", help="add the versions not yet released to FILE (released.json)"),
    ] = None,
) -> None:
    """Print the AsyncAPI 3 document of every message."""

    async def body(settings: Settings) -> None:
        if release_to:
            _release(release_to)
        else:
            print(json.dumps(asyncapi(settings.namespace, settings.amqp_url), indent=2))

    run_command(body)


@app.command("reconcile")
def reconcile_lists(issue_code: Annotated[str | None, typer.Argument(help="one issue (default: all)")] = None) -> None:
    """Compare the exchange's CertID list with the issuer's register."""
    run_command(lambda settings: _reconcile(settings, issue_code))


async def _serve(settings: Settings, agent: str, *, in_process: bool = False) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if agent == "all" and not in_process:  # one OS process per agent, so every core works
        await _none_running(settings)
        children = [Child(a, (sys.executable, "-m", "agents.cli", "run", a), _niceness(settings, a)) for a in AGENTS]
        async with asyncio.TaskGroup() as tasks:
            supervising = tasks.create_task(supervise(children, stop))
            tasks.create_task(_announce_ready(settings, list(AGENTS), supervising))
        return
    definitions = list(AGENTS.values()) if agent == "all" else [AGENTS[agent]]
    await serve(definitions, settings, stop)


def _niceness(settings: Settings, agent: str) -> int:
    return settings.participant_niceness if agent in PARTICIPANT_SIDE else 0


async def _none_running(settings: Settings) -> None:
    """A second `kabuto run all` starts no child: each would wait for its lease, stop and be
    restarted for ever, while the first's consumers made this one look ready (found by review).
    If the broker cannot be asked yet (it is starting too), the children start: each takes its
    agent's lease itself, and waits for the broker as any agent does."""
    try:
        await ops.none_running(settings, list(AGENTS))
    except INFRASTRUCTURE as exc:
        if not is_infrastructure(exc):  # a refused login or permission: no waiting mends it
            raise
        log.warning("instances_not_looked_at", error=repr(exc)[:300], action="starting the agents")


async def _status(settings: Settings, watch: bool, interval: float, iterations: int | None) -> None:
    # Piped (a script, a log, `watch -n`), Rich drew the table 80 columns wide and folded each
    # row over several lines; there it is as wide as its rows, unless COLUMNS says otherwise.
    piped = not sys.stdout.isatty() and "COLUMNS" not in os.environ
    console = Console(width=render.UNLIMITED_WIDTH) if piped else Console()
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


async def _replay(settings: Settings, agent: str, message_id: str) -> int:
    found = await ops.replay(settings, agent, message_id)
    print("replayed" if found else f"no dead letter {message_id} for {agent}")
    return 0 if found else 1


async def _show_dead_letter(settings: Settings, agent: str, message_id: str) -> int:
    trust = TrustStore(KeyStore(settings.key_dir).ca_certificate())
    page = await ops.dead_letter_page(settings, agent, trust, limit=SHOW_SEARCH_LIMIT)
    shown = [(d, p) for d, p in page.letters if message_id in (d.message_id, p.message_id)]
    if not shown:
        print(f"no dead letter {message_id} for {agent}")
        return 1
    letter, proof = shown[0]
    headers = {k: str(v) for k, v in letter.headers.items()}
    verified = {"message_id": proof.message_id, "type": proof.type, "sender": proof.sender, "problem": proof.problem}
    print(
        json.dumps({"verified": verified, "headers": headers, "body": letter.body.decode(errors="replace")}, indent=2)
    )
    return 0


async def _dead_letters(settings: Settings, agent: str, offset: int, limit: int) -> None:
    trust = TrustStore(KeyStore(settings.key_dir).ca_certificate())
    page = await ops.dead_letter_page(settings, agent, trust, offset=offset, limit=limit)
    print(render.table(DEAD_LETTER_COLUMNS, [_dead_letter_row(d, p) for d, p in page.letters], indent=""))
    shown_to = page.offset + len(page.letters)
    print(f"{page.offset + 1 if page.letters else page.offset}–{shown_to} of {page.total} dead letter(s)", end="")
    print(f"; {page.remaining} more: --offset {shown_to}" if page.remaining else "")


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


def _release(path: Path) -> None:
    snapshot = json.loads(path.read_text()) if path.exists() else {}
    updated, added = release(snapshot)
    path.write_text(json.dumps(updated, indent=1, sort_keys=True) + "\n")
    print(f"released {', '.join(added)}" if added else "every message version is already released")


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
