"""The catalogue is a valid AsyncAPI 3 document, by the AsyncAPI project's own parser (issue 9).

The parser is the npm package ``@asyncapi/parser``, pinned in ``tests/asyncapi/package-lock.json``
and installed by ``make test`` (or by the fixture below when it is missing).
"""

from __future__ import annotations

import fcntl
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from broker.catalogue import asyncapi, message_key
from schemas import catalogue
from schemas.envelope import CERTIFICATE_HEADER, SIGNATURE_HEADER, SIGNER_HEADER

PARSER_DIR = Path(__file__).resolve().parents[1] / "asyncapi"


@pytest.fixture(scope="session")
def validator() -> Path:
    npm, node = shutil.which("npm"), shutil.which("node")
    if npm is None or node is None:
        pytest.fail("Node.js 20 and npm are needed to validate the AsyncAPI document", pytrace=False)
    # One install at a time: each test process (pytest -n) has this session fixture, and `npm ci`
    # deletes node_modules before it installs.
    with open(PARSER_DIR / "package-lock.json") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (PARSER_DIR / "node_modules" / "@asyncapi" / "parser").exists():
            subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=PARSER_DIR, check=True, capture_output=True)
    return PARSER_DIR / "validate.mjs"


def validate(validator: Path, document: dict[str, Any], tmp_path: Path) -> tuple[int, list[dict[str, Any]]]:
    path = tmp_path / "asyncapi.json"
    path.write_text(json.dumps(document))
    done = subprocess.run(["node", str(validator), str(path)], capture_output=True, text=True, timeout=120)
    assert done.stderr == "" or done.returncode != 0, done.stderr
    return done.returncode, [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def refs(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item)


def pointer(document: dict[str, Any], ref: str) -> object:
    assert ref.startswith("#/"), ref
    node: object = document
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and part in node, f"{ref} does not resolve at {part}"
        node = node[part]
    return node


def test_catalogue_is_a_valid_asyncapi_3_document(validator: Path, tmp_path: Path) -> None:
    specs = list(catalogue.specs())
    code, lines = validate(validator, asyncapi("kabuto", "amqp://guest:guest@rabbit.example:5672/"), tmp_path)
    errors = [line for line in lines if line.get("severity") == "error"]
    assert code == 0 and not errors, errors
    summary = lines[-1]
    assert summary["result"] == "valid" and summary["version"] == "3.0.0"
    assert summary["messages"] == len(specs)
    assert summary["channels"] == len(specs) + 2  # plus the events journal and the reply queue
    assert summary["operations"] == 2 * len(specs) + 2


def test_the_parser_check_fails_on_a_dangling_ref(validator: Path, tmp_path: Path) -> None:
    document = asyncapi()
    del document["components"]["schemas"]["SubmitOrder"]
    code, lines = validate(validator, document, tmp_path)
    assert code == 1
    assert any(line.get("severity") == "error" for line in lines)


def test_every_ref_resolves_inside_the_document() -> None:
    document = asyncapi()
    found = list(refs(document))
    assert len(found) > 300
    for ref in found:
        pointer(document, ref)


def test_every_message_has_its_channel_operations_headers_and_servers() -> None:
    document = asyncapi("ns", "amqp://u:p@broker.example:5673/vh")
    assert document["servers"]["rabbitmq"]["host"] == "broker.example:5673"
    assert "u:p" not in json.dumps(document)
    headers = document["components"]["schemas"]["SignatureHeaders"]
    assert set(headers["properties"]) == {SIGNATURE_HEADER, SIGNER_HEADER, CERTIFICATE_HEADER}
    assert set(document["components"]["securitySchemes"]) == {"amqpLogin", "kabutoSignature"}
    for spec in catalogue.specs():
        key = message_key(spec)
        message = document["components"]["messages"][key]
        assert message["headers"] == {"$ref": "#/components/schemas/SignatureHeaders"}
        exchange = document["channels"][key]["bindings"]["amqp"]["exchange"]
        assert exchange["name"] == ("ns.events" if spec.is_event else "ns.messages")
        assert document["operations"][f"send.{key}"]["x-kabuto-roles"] == sorted(r.value for r in spec.senders)
        assert document["operations"][f"receive.{key}"]["action"] == "receive"
        fixed = message["payload"]["allOf"][1]["properties"]
        assert fixed["type"] == {"const": spec.type} and fixed["version"] == {"const": spec.version}


def test_a_version_with_accounts_in_clear_is_documented_as_retired_and_its_successor_is_not() -> None:
    messages = asyncapi("ns")["components"]["messages"]
    assert "clear_account_refused" in messages["order.submit.v1"]["x-kabuto-retired"]
    assert "x-kabuto-retired" not in messages["order.submit.v2"]
    retired = {key for key, message in messages.items() if "x-kabuto-retired" in message}
    assert retired == {message_key(s) for s in catalogue.specs() if s.clear_accounts}
