"""Where long work says how far it is: applying migrations, enrolling identities, the demo's flows,
the benchmark's phases. The work reports to ``Steps``; whoever runs it decides whether anyone sees
it (``agents.progress`` draws a Rich bar for a person at a terminal, ``SILENT`` drops it)."""

from __future__ import annotations

from typing import Protocol


class Steps(Protocol):
    def expect(self, total: int) -> None:
        """There are ``total`` steps (when that is known only once the work has started)."""

    def doing(self, step: str) -> None:
        """``step`` has started."""

    def done(self, step: str) -> None:
        """``step`` has finished."""


class Silent:
    """No one is watching: every report is dropped."""

    def expect(self, total: int) -> None:
        pass

    def doing(self, step: str) -> None:
        pass

    def done(self, step: str) -> None:
        pass


SILENT = Silent()
