"""Readable text for people: certificates, registers and lists as the CLI and demo print them."""

from __future__ import annotations

import io
import sys
from collections.abc import Iterable, Sequence

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from schemas.certificates import ElectronicStockCertificate

_FIELDS = (
    ("1  Company name", "company_name"),
    ("2  Incorporated on", "incorporated_on"),
    ("3  Certificate number", "certificate_number"),
    ("4  CertID", "cert_id"),
    ("5  Number of shares", "shares"),
    ("6  Par value per share", "par_value_per_share"),
    ("7  Issued on", "issued_on"),
    ("8  Expires on", "expires_on"),
    ("9  Holder of record", "holder_name"),
    ("10 Holder user id", "holder_user_id"),
    ("11 Class of shares", "share_class"),
    ("12 Convertible details", "convertible_details"),
    ("13 Transfer restriction", "transfer_restriction"),
    ("14 Signature algorithm", "signature_algorithm"),
    ("15 Issuing agent", "issuing_agent_name"),
    ("16 Issuing agent address", "issuing_agent_address"),
)


def certificate(esc: ElectronicStockCertificate, *, indent: str = "  ") -> str:
    """Every field of seed 001 Fig. 6, numbered as in the figure."""
    lines = [f"{indent}Electronic stock certificate — issue {esc.issue_code}"]
    for label, name in _FIELDS:
        value = getattr(esc, name)
        if name == "par_value_per_share":
            value = "no par value" if value is None else f"{value:,} {esc.currency}"
        elif name == "shares":
            value = f"{value:,}"
        elif value is None:
            value = "—"
        lines.append(f"{indent}  {label:<26} {getattr(value, 'value', value)}")
    return "\n".join(lines)


def table(headers: Sequence[str], rows: Iterable[Sequence[object]], *, indent: str = "  ") -> str:
    """A Rich table as text, never wrapped or cut (scripts and tests find every value whole), in bold
    and colour only when stdout is a terminal."""
    grid = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold", expand=False)
    for heading in headers:
        grid.add_column(Text(heading), no_wrap=True, overflow="ignore")
    for row in rows:
        grid.add_row(*(Text(_cell(v)) for v in row))
    styled = sys.stdout.isatty()
    console = Console(width=UNLIMITED_WIDTH, file=io.StringIO(), record=True, force_terminal=styled, highlight=False)
    console.print(grid)
    lines = console.export_text(styles=styled).splitlines()
    if not grid.rows:
        lines.append("(none)")
    return "\n".join(indent + line.rstrip() for line in lines)


UNLIMITED_WIDTH = 100_000  # a table is as wide as its widest row; the terminal may scroll it sideways


def _cell(value: object) -> str:
    if value is None:
        return "—"
    return str(getattr(value, "value", value))
