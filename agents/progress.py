"""Progress on long work (issue 10): ``kabuto migrate`` per file, ``kabuto ca enrol-all`` per
identity, ``kabuto demo`` per flow and the benchmark per phase.

A Rich bar is drawn on stderr only when a person watches — stdout and stderr both terminals — and
what the work prints meanwhile scrolls above it. When either is redirected nothing is drawn, so a
script or test reading stdout gets exactly the lines it got before, and stderr only errors.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

from broker.steps import SILENT, Steps


class _Bar:
    def __init__(self, progress: Progress, task: TaskID, title: str) -> None:
        self._progress, self._task, self._title = progress, task, title

    def expect(self, total: int) -> None:
        self._progress.update(self._task, total=total)

    def doing(self, step: str) -> None:
        self._progress.update(self._task, description=f"{self._title}: {step}")

    def done(self, step: str) -> None:
        self._progress.update(self._task, advance=1, description=f"{self._title}: {step} done")


def watched() -> bool:
    """A person at a terminal sees both what the command prints and its progress."""
    return sys.stdout.isatty() and sys.stderr.isatty()


@contextmanager
def steps(title: str, total: int | None = None) -> Iterator[Steps]:
    """A bar titled ``title`` for the duration of the block, or ``SILENT`` when no one watches."""
    if not watched():
        yield SILENT
        return
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        yield _Bar(progress, progress.add_task(title, total=total), title)
