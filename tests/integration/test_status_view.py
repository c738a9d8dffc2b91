"""``kabuto status`` and ``--watch`` (issue 10): the figures of running agents, read from the real
broker and the agents' own tables, drawn by Rich, redrawn on every refresh."""

from __future__ import annotations

import asyncio
import io
import sys

from rich.console import Console

from agents import status_view
from broker.consumer import Outcome
from broker.runtime import AgentRuntime
from broker.settings import AGENT_IDS, Settings
from broker.watch import Watcher
from tests import support


def text_of(views: list, width: int = 260) -> str:  # type: ignore[type-arg]
    console = Console(record=True, width=width, file=io.StringIO())
    console.print(status_view.table(views, support.datetime.now(support.UTC)))
    return console.export_text()


def row(text: str, agent: str) -> list[str]:
    line = next(line for line in text.splitlines() if line.startswith(f"│ {agent} "))
    return [cell.strip() for cell in line.strip("│").split("│")]


async def test_status_shows_depth_consumers_rates_dead_letters_and_the_last_error(settings: Settings) -> None:
    async with support.agents(settings, "investor", "issuer") as rt:
        await support.open_offering(rt["issuer"])
        request_id = await support.request(rt["investor"], "alice")
        await rt["investor"].outcomes.reply("certificate.issued", request_id)
        parked = "SELECT count(*) AS n FROM outbox WHERE failed_at IS NOT NULL"
        # Its CertID list for an exchange that never started is parked first: the dead letter is the last error.
        await support.eventually(lambda: _counted(rt["issuer"], parked))
        # The relay marks a row published after its confirm, asynchronously (broker.outbox): the
        # rates read the marks, and under a full suite's load a mark came after the snapshot.
        published = "SELECT count(*) AS n FROM outbox WHERE published_at IS NOT NULL"
        await support.eventually(lambda: _counted(rt["investor"], published))
        await support.eventually(lambda: _counted(rt["issuer"], published))
        await support.publish(settings, b"not signed", {}, "issuer", "garbage-1")
        await rt["issuer"].outcomes.wait(lambda s: s.outcome is Outcome.DEAD_LETTERED)
        async with Watcher.open(settings, AGENT_IDS) as watcher:
            views = {v.agent: v for v in await watcher.snapshot()}
            text = text_of(list(views.values()))
    issuer, investor, credit = views["issuer"], views["investor"], views["credit"]
    assert (issuer.inbox_depth, issuer.answers_depth, issuer.consumers, issuer.dead_letters) == (0, 0, 1, 1)
    assert issuer.delivered_per_second > 0 and investor.published_per_second > 0 and issuer.published_per_second > 0
    assert issuer.last_error is not None and issuer.last_error.what.startswith("unsigned:")
    assert issuer.outbox.parked == 1  # its CertID list for an exchange that never started
    assert investor.last_error is None and investor.outbox.pending == 0
    assert credit.inbox_depth is None and credit.answers_depth is None and credit.consumers is None
    cells = row(text, "issuer")
    assert cells[:4] == ["issuer", "0", "0", "1"] and cells[6] == "1" and "unsigned" in cells[-1]
    assert row(text, "credit")[1:4] == ["never started", "—", "—"]
    assert float(row(text, "investor")[4]) > 0  # publish/s


async def test_watch_redraws_the_table_as_often_as_asked(settings: Settings) -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=200)
    async with support.agents(settings, "issuer"):
        drawn = await status_view.watch(settings, ["issuer"], console, interval=0.05, iterations=3)
    # three refreshes, each read again from the services, and Live's last redraw as it stops
    assert drawn == 3 and out.getvalue().count("Kabuto agents —") == drawn + 1


async def test_kabuto_status_watch_runs_bounded_from_the_shell(settings: Settings) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agents.cli",
        "status",
        "--watch",
        "--interval",
        "0.05",
        "--iterations",
        "2",
        env=support.environment(settings) | {"FORCE_COLOR": "1", "COLUMNS": "200"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    assert out.decode().count("Kabuto agents —") == 2 + 1 and "never started" in out.decode()


async def test_kabuto_status_without_watch_prints_the_table_once(settings: Settings) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agents.cli",
        "status",
        env=support.environment(settings) | {"COLUMNS": "200"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    text = out.decode()
    assert text.count("Kabuto agents —") == 1 and all(f"│ {agent} " in text for agent in AGENT_IDS)


async def _counted(runtime: AgentRuntime, sql: str) -> bool:
    """Whether ``sql``'s count is above 0 (rows parked, or published)."""
    rows = await support.rows(runtime, sql)
    return bool(rows[0]["n"])


async def test_kabuto_status_piped_prints_each_agent_on_one_line(settings: Settings) -> None:
    """Piped with no COLUMNS, Rich took 80 columns and folded every row of the table over
    several lines: a script reading the output found no agent's figures whole."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agents.cli",
        "status",
        env={k: v for k, v in support.environment(settings).items() if k != "COLUMNS"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    rows = [line for line in out.decode().splitlines() if line.startswith("│ ")]
    assert [line.split("│")[1].strip() for line in rows] == list(AGENT_IDS), out.decode()
    assert all(line.count("│") == len(status_view.COLUMNS) + 1 for line in rows)
