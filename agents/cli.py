"""The ``kabuto`` command: the composition root that mounts every group's commands on one Typer app.

Each command is one typed function in its group's module (``agents/<agent>/commands``, the
``ca``, ``access`` and ``outbox`` modules, and ``agents/operations.py`` for the top-level ones);
``agents.cli_runtime`` reads the settings once per command and maps what happened to the exit
codes. Run ``kabuto --help`` for the commands; docs/cli.md and the README explain them.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import typer

from agents import access_commands, ca_commands, operations, outbox_commands
from agents.brokerage import commands as brokerage_commands
from agents.credit import commands as credit_commands
from agents.custody import commands as custody_commands
from agents.exchange import commands as exchange_commands
from agents.investor import commands as investor_commands
from agents.issuer import commands as issuer_commands
from agents.settlement import commands as settlement_commands

GROUPS: dict[str, typer.Typer] = {
    "ca": ca_commands.app,
    "access": access_commands.app,
    "outbox": outbox_commands.app,
    "issuer": issuer_commands.app,
    "investor": investor_commands.app,
    "exchange": exchange_commands.app,
    "settlement": settlement_commands.app,
    "brokerage": brokerage_commands.app,
    "custody": custody_commands.app,
    "credit": credit_commands.app,
}

app = typer.Typer(
    name="kabuto",
    help="Kabuto: market infrastructure in a box.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_show_locals=False,  # locals would print the settings' passwords
)
app.add_typer(operations.app)
for _name, _group in GROUPS.items():
    app.add_typer(_group, name=_name)


def main(argv: Sequence[str] | None = None) -> int:
    """The console script: run the command ``argv`` names (default ``sys.argv[1:]``); return its exit code."""
    try:
        typer.main.get_command(app).main(args=argv, prog_name="kabuto")
    except SystemExit as exc:
        if isinstance(exc.code, str):  # `raise SystemExit("why")`: say why, as the interpreter would
            print(f"kabuto: {exc.code}", file=sys.stderr)
            return 1
        return exc.code or 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
