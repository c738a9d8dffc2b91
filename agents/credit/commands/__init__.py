"""``kabuto credit …``: the card issuer's cards and the line's contracts, rate tables, obligations,
collateral and audit trail, for operators (seed 003). Each command acts as one institution: the
card issuer (``cards``) or the line (``line``); this module puts both on the ``credit`` group."""

from __future__ import annotations

import typer

from agents.credit.commands import cards, line

app = typer.Typer(help="The card issuer and the securities-backed line.", no_args_is_help=True)
app.add_typer(cards.app)
app.add_typer(line.app)
