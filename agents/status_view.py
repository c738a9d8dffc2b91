"""``kabuto status`` for people: one Rich table of every agent, drawn once or live with ``--watch``.

``table`` is a pure function of the figures ``broker.watch`` read; ``watch`` redraws it in
place every ``interval`` until interrupted, or ``iterations`` times (for scripts and tests).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from broker.settings import Settings
from broker.watch import AgentView, Watcher

COLUMNS = (
    "agent",
    "inbox",
    "answers",
    "consumers",
    "publish/s",
    "deliver/s",
    "dead letters",
    "outbox pending",
    "parked",
    "outbox lag",
    "last error",
)


def table(views: Sequence[AgentView], at: datetime) -> Table:
    """Every agent's figures; what needs attention (no consumer, dead letters, parked rows) in red."""
    grid = Table(title=f"Kabuto agents — {at:%Y-%m-%d %H:%M:%S} UTC", title_justify="left")
    for name in COLUMNS:
        grid.add_column(name, justify="left" if name in ("agent", "last error") else "right", overflow="fold")
    for v in views:
        grid.add_row(
            v.agent,
            _count(v.inbox_depth, "never started"),
            _count(v.answers_depth, "—"),
            _count(v.consumers, "—", alarm=v.consumers == 0),
            f"{v.published_per_second:.2f}",
            f"{v.delivered_per_second:.2f}",
            _count(v.dead_letters, "—", alarm=bool(v.dead_letters)),
            str(v.outbox.pending),
            _count(v.outbox.parked, "", alarm=v.outbox.parked > 0),
            _lag(v.outbox.lag),
            Text(f"{v.last_error.at[:19]} {v.last_error.what[:80]}" if v.last_error else "", style="red"),
        )
    return grid


def _count(value: int | None, missing: str, *, alarm: bool = False) -> Text:
    return Text(missing if value is None else str(value), style="bold red" if alarm else "")


def _lag(lag: timedelta | None) -> str:
    return "0s" if lag is None else f"{lag.total_seconds():.1f}s"


async def show(settings: Settings, agents: Sequence[str], console: Console) -> None:
    async with Watcher.open(settings, agents) as watcher:
        console.print(table(await watcher.snapshot(), datetime.now(UTC)))


async def watch(
    settings: Settings, agents: Sequence[str], console: Console, interval: float, iterations: int | None = None
) -> int:
    """Redraw the table every ``interval`` seconds; return how many times it was drawn."""
    drawn = 0
    async with Watcher.open(settings, agents) as watcher:
        with Live(console=console, auto_refresh=False, transient=False) as live:
            while iterations is None or drawn < iterations:
                if drawn:
                    await asyncio.sleep(interval)  # the refresh period, not a wait for something
                live.update(table(await watcher.snapshot(), datetime.now(UTC)), refresh=True)
                drawn += 1
    return drawn
