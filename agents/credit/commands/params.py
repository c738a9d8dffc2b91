"""What the ``kabuto credit`` commands share: their parameters, declared once."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

import typer

from agents.cli_types import seconds

Purchaser = Annotated[str | None, typer.Option(help="only this purchaser")]
LedgerAccount = Annotated[str, typer.Option("--account", help="its settlement ledger account", show_default=False)]
Seconds = Annotated[timedelta, typer.Option(parser=seconds, help="seconds")]
