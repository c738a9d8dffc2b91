"""A released message version never changes incompatibly (issue 9).

``docs/catalogue/released.json`` keeps the payload schema of every released (type, version);
the rules are in ``schemas/compatibility.py`` and ``docs/catalogue/README.md``.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from broker.catalogue import release, released_schemas
from schemas.compatibility import breaking_changes

RELEASED = Path(__file__).resolve().parents[2] / "docs" / "catalogue" / "released.json"


def released() -> dict[str, Any]:
    snapshot: dict[str, Any] = json.loads(RELEASED.read_text())
    return snapshot


def test_no_released_message_version_has_a_breaking_change() -> None:
    current = released_schemas()
    problems = {
        key: breaking_changes(schema, current[key]) if key in current else ["removed"]
        for key, schema in released().items()
    }
    assert {k: v for k, v in problems.items() if v} == {}


def test_every_message_version_in_the_catalogue_is_released() -> None:
    assert set(released_schemas()) <= set(released()), "run `kabuto catalogue --release docs/catalogue/released.json`"


def submit() -> dict[str, Any]:
    return copy.deepcopy(released()["order.submit.v1"])


def terms(schema: dict[str, Any]) -> dict[str, Any]:
    terms: dict[str, Any] = schema["$defs"]["OrderTerms"]
    return terms


def remove_field(s: dict[str, Any]) -> None:
    del s["properties"]["holder_name"]


def rename_field(s: dict[str, Any]) -> None:
    s["properties"]["account"] = s["properties"].pop("settlement_account")
    s["required"] = [("account" if r == "settlement_account" else r) for r in s["required"]]


def optional_made_required(s: dict[str, Any]) -> None:
    s["required"].append("holder_address")


def new_required_field(s: dict[str, Any]) -> None:
    s["properties"]["venue"] = {"type": "string"}
    s["required"].append("venue")


def enum_narrowed(s: dict[str, Any]) -> None:
    s["$defs"]["TimeInForce"]["enum"].remove("fok")


def type_narrowed(s: dict[str, Any]) -> None:
    terms(s)["properties"]["quantity"]["type"] = "string"


def bound_raised(s: dict[str, Any]) -> None:
    terms(s)["properties"]["quantity"]["exclusiveMinimum"] = 100


def pattern_changed(s: dict[str, Any]) -> None:
    s["properties"]["client_order_id"]["pattern"] = "^[0-9]{1,8}$"


def null_no_longer_allowed(s: dict[str, Any]) -> None:
    s["properties"]["holder_name"] = {"type": "string", "maxLength": 200}


@pytest.mark.parametrize(
    "change",
    [
        remove_field,
        rename_field,
        optional_made_required,
        new_required_field,
        enum_narrowed,
        type_narrowed,
        bound_raised,
        pattern_changed,
        null_no_longer_allowed,
    ],
)
def test_each_breaking_change_is_caught(change: Any) -> None:
    old, new = submit(), submit()
    change(new)
    assert breaking_changes(old, new), change.__name__


def test_compatible_changes_pass() -> None:
    old, new = submit(), submit()
    new["properties"]["note"] = {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None}
    new["$defs"]["TimeInForce"]["enum"].append("gtd")
    new["properties"]["holder_name"]["description"] = "who will hold the shares"
    assert breaking_changes(old, new) == []


def test_release_refuses_to_rewrite_a_released_version_that_broke() -> None:
    snapshot = released()
    snapshot["order.submit.v1"]["properties"]["legacy_field"] = {"type": "string"}
    with pytest.raises(ValueError, match=r"order.submit.v1: .legacy_field: field removed"):
        release(snapshot)
    unchanged, added = release(released())
    assert added == [] and unchanged == released()
