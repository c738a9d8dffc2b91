"""The README's first screen (issue 10): what Kabuto is, the two commands, then what the demo shows
with the flows numbered 1–6, in that order; and every setting the code reads is documented."""

from __future__ import annotations

import re
from pathlib import Path

import broker.settings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_the_first_screen_says_what_kabuto_is_then_the_two_commands_then_the_flows_1_to_6() -> None:
    headings = re.findall(r"^## (.+)$", README, flags=re.MULTILINE)
    assert headings[:2] == ["Two commands", "What the demo shows"]
    intro = README[: README.index("## Two commands")]
    assert "Market infrastructure in a box" in intro and len(intro.splitlines()) <= 10
    two = README[README.index("## Two commands") : README.index("## What the demo shows")]
    assert "make demo" in two and "make test" in two
    demo = README[README.index("## What the demo shows") :]
    flows = re.findall(r"^(\d)\. \*\*", demo, flags=re.MULTILINE)[:6]
    assert flows == ["1", "2", "3", "4", "5", "6"]
    assert README.index("6. **") < README.index("```\nKabuto demo — 7 agents running") < README.index("\nFlow 1 —")


def test_every_setting_is_in_the_readme_table() -> None:
    read = set(re.findall(r'"(KABUTO_[A-Z_]+)"', Path(broker.settings.__file__).read_text()))
    documented = set(re.findall(r"^\| `(KABUTO_[A-Z_]+)`", README, flags=re.MULTILINE))
    assert read <= documented, read - documented
