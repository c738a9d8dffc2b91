"""``kabuto investor …``: an investor's requests, orders, wallet and account, from the shell.

Every command acts as ``--as USER`` through the investor client library
(``agents.investor.client``), so the shell and an importing system behave the same. The commands
that send a message wait for its answer unless ``--no-wait`` (``agents.waiting``). One module per
concern; this one puts their commands on the ``investor`` group, and the standing cover's
commands on a group of their own (``kabuto investor standing-cover open|close|list``).
"""

from __future__ import annotations

import typer

from agents.investor.commands import accounts, brokered, certificates, standing, trading

app = typer.Typer(help="An investor's wallet, orders and account.", no_args_is_help=True)
for part in (certificates, trading, accounts, brokered):
    app.add_typer(part.app)
app.add_typer(standing.app, name="standing-cover")  # a group of its own: open, close, list
