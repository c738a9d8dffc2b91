"""Argument types shared by the ``kabuto`` sub-commands."""

from __future__ import annotations

import argparse
from decimal import Decimal, InvalidOperation


def decimal(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation as exc:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from exc
    if not value.is_finite():
        raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
    return value
