"""Parameter types shared by the ``kabuto`` commands: what a value on the command line may be.

A value that is not one is a usage error (``typer.BadParameter``, exit 2) that names it, before
any command runs.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal, InvalidOperation
from typing import Annotated

import typer

# The participant a command acts as (`--as alice`): the investor commands all take it.
As = Annotated[str, typer.Option("--as", help="the investor's user id", show_default=False)]


def decimal(text: str) -> Decimal:
    """A finite decimal number; money and prices are never floats."""
    try:
        value = Decimal(text)
    except InvalidOperation as exc:
        raise typer.BadParameter(f"not a number: {text!r}") from exc
    if not value.is_finite():
        raise typer.BadParameter(f"not a finite number: {text!r}")
    return value


def split(text: str, parts: int, shape: str) -> list[str]:
    """``text`` cut at ``:`` into exactly ``parts`` fields, or a usage error showing ``shape``."""
    fields = text.split(":")
    if len(fields) != parts:
        raise typer.BadParameter(f"expected {shape}, got {text!r}")
    return fields


def seconds(value: str | timedelta) -> timedelta:
    """A duration given in seconds (Typer passes a default, already a ``timedelta``, through here too)."""
    if isinstance(value, timedelta):
        return value
    try:
        return timedelta(seconds=float(value))
    except ValueError as exc:
        raise typer.BadParameter(f"not a number of seconds: {value!r}") from exc


# For a command with a number among its arguments: a negative one (`settlement deposit ACC -5`) reaches the command,
# which refuses it with its reason (exit 1) as it would any other bad amount, instead of being taken for an unknown
# option. A mistyped option is still a usage error there ("Got unexpected extra argument").
SIGNED_ARGUMENTS = {"ignore_unknown_options": True}
