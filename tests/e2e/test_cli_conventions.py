"""The ``kabuto`` command's conventions (issue 10, docs/cli.md): every group is listed and has its
own ``--help``; exit codes mean the same everywhere — 0 done or accepted, 1 refused or failed,
2 a usage error, 3 timed out waiting; shell completion works; progress is drawn only for a person
at a terminal, so scripts reading stdout or stderr see what they saw before."""

from __future__ import annotations

import asyncio
import os
import pty
import select
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest
import typer

from agents import cli
from broker import logs
from broker.db import agent_pool
from broker.settings import AGENT_IDS, Settings
from tests import support
from tests.e2e.test_cli import kabuto, ok

TOP_LEVEL = ["migrate", "run", "demo", "status", "health", "dead-letters", "catalogue", "reconcile"]
ORDER = ("--account", "bob-cash", "--name", "Bob", "--address", "Tokyo")
BROKER_ORDER = ("investor", "broker-order", "--as", "a", "IM-1", "buy", "KBT", "1", "--pin", "1", "--company", "c")
MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"


def _commands(group: typer.Typer) -> list[str]:
    command = typer.main.get_command(group)
    assert isinstance(command, typer.core.TyperGroup)
    return sorted(command.commands)


@pytest.fixture
def in_process(monkeypatch: pytest.MonkeyPatch) -> Callable[[list[str]], int]:
    """``cli.main`` in this process, leaving the test run's logging as it was."""
    monkeypatch.setattr(logs, "configure", lambda *args, **kwargs: None)
    return cli.main


async def test_kabuto_help_lists_every_group_and_top_level_command(settings: Settings) -> None:
    code, out, _ = await kabuto(settings, "--help")
    assert code == 0 and "Usage: kabuto [OPTIONS] COMMAND [ARGS]..." in out
    for name in [*TOP_LEVEL, *cli.GROUPS]:
        assert f"│ {name} " in out, name
    assert set(_commands(cli.app)) == {*TOP_LEVEL, *cli.GROUPS}


@pytest.mark.parametrize("group", sorted(cli.GROUPS))
def test_each_group_has_its_own_help_listing_its_commands(
    group: str, in_process: Callable[[list[str]], int], capsys: pytest.CaptureFixture[str]
) -> None:
    assert in_process([group, "--help"]) == 0
    out = capsys.readouterr().out
    assert f"Usage: kabuto {group} [OPTIONS] COMMAND [ARGS]..." in out
    for name in _commands(cli.GROUPS[group]):
        assert f"│ {name} " in out, name
        assert in_process([group, name, "--help"]) == 0
        assert f"Usage: kabuto {group} {name} " in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["nope"], "No such command 'nope'"),
        (["investor", "nope"], "No such command 'nope'"),
        (["investor", "order", "buy", "KBT", "100", *ORDER], "Missing option '--as'"),
        (["health", "nobody"], "'nobody' is not one of"),
        (["investor", "order", "--as", "bob", "hold", "KBT", "100", *ORDER], "'hold' is not one of"),
        (["investor", "order", "--as", "bob", "buy", "KBT", "many", *ORDER], "Invalid value for 'quantity'"),
        (["settlement", "deposit", "bob-cash", "12,000", "--reference", "r"], "not a number"),
        (["settlement", "withdraw", "bob-cash", "NaN", "--reference", "r"], "not a finite number"),
        (["settlement", "deposit", "bob-cash", "-5", "--reference", "r", "--wait"], "unexpected extra argument"),
        (["credit", "haircut", "--band", "0:0.8"], "expected MIN:MAX:RATE"),
        (["brokerage", "fees", "--band", "100"], "expected CONSIDERATION_UP_TO:COMMISSION"),
        (["ca", "revoke", "alice", "--serial", "xyz"], "not a hexadecimal serial number"),
        (["ca", "revoke", "alice", "--serial", "1f", "--superseded"], "exclude each other"),
        (
            [*BROKER_ORDER, "--fund", "acct:lots:1"],
            "expected ACCOUNT:AMOUNT:PRIORITY",
        ),
    ],
)
def test_a_usage_error_exits_2_and_names_the_problem_before_anything_runs(
    argv: list[str], says: str, in_process: Callable[[list[str]], int], capsys: pytest.CaptureFixture[str]
) -> None:
    assert in_process(argv) == 2
    captured = capsys.readouterr()
    assert says in " ".join(captured.err.replace("│", " ").split()), captured.err
    assert captured.out == ""


async def test_exit_codes_accepted_0_refused_1_usage_2_timed_out_3(settings: Settings) -> None:
    code, out, _ = await kabuto(settings, "investor", "order", "--as", "bob", "buy", "KBT", "100", *ORDER, "--wait")
    assert code == 2  # no such option: a usage error, and nothing queued
    code, out, _ = await kabuto(
        settings, "investor", "order", "--as", "bob", "buy", "KBT", "100", "--limit", "1000", *ORDER, "--timeout", "0.5"
    )
    assert code == 3 and out.startswith("timed out: ") and "`kabuto run investor`" in out
    async with support.agents(settings, "investor", "exchange", "settlement") as rt:
        await support.list_issue(rt["exchange"])
        await support.fund(rt["settlement"], "bob", Decimal(1_000_000))
        code, out, _ = await kabuto(
            settings, "investor", "order", "--as", "bob", "buy", "KBT", "100", "--limit", "1000", *ORDER, "--id", "ok-1"
        )
        assert code == 0 and out.startswith("accepted: order ok-1 accepted")
        code, out, _ = await kabuto(
            settings, "investor", "order", "--as", "bob", "buy", "KBT", "100", "--limit", "1000.5", *ORDER
        )
        assert code == 1 and out.startswith("refused: ") and "invalid_tick" in out


async def test_a_setting_kabuto_cannot_use_is_a_usage_error(settings: Settings) -> None:
    process = await _run_with(settings, {"KABUTO_METRICS_PORT": "eighty"}, "status")
    assert process.returncode == 2 and "KABUTO_METRICS_PORT" in process.stderr


async def test_a_failure_exits_1_with_the_reason_on_stderr(settings: Settings) -> None:
    code, out, err = await kabuto(settings, "settlement", "cancel", "424242")
    assert code == 1 and (out + err).strip()
    code, _, err = await kabuto(settings, "ca", "show", "nobody-enrolled")
    assert code == 1 and err.startswith("kabuto: ") and "nobody-enrolled" in err


async def test_a_split_names_each_part_with_a_repeated_into(settings: Settings) -> None:
    """The one argv change from argparse (docs/cli.md): `--into` once per part of the split."""
    cert_id = "0b9f7e1c-4d2a-4c56-9a7e-3f1d2b6c8a90"
    out = await ok(
        settings,
        "investor",
        "reissue",
        "--no-wait",
        "--as",
        "alice",
        "split",
        cert_id,
        "--into",
        "300",
        "--into",
        "200",
    )
    assert out.startswith("reissue request ") and "queued" in out
    async with agent_pool(settings.database_url, "investor", max_size=1) as pool:
        body = await pool.fetchval("SELECT body FROM outbox_messages WHERE message_type LIKE '%reissue%'")
    assert b'"split_into":[300,200]' in body.replace(b" ", b"") and cert_id.encode() in body


def test_shell_completion_prints_a_script_and_completes_groups_commands_and_choices() -> None:
    script = _run([sys.executable, "-m", "agents.cli", "--show-completion", "bash"])
    assert "_KABUTO_COMPLETE=complete_bash" in script and "complete -o default -F _kabuto_completion kabuto" in script
    assert _complete("kabuto inv", 1) == ["investor"]
    assert _complete("kabuto investor order --as bob ", 5) == ["buy", "sell"]
    assert _complete("kabuto health ", 2) == list(AGENT_IDS)


def _complete(words: str, index: int) -> list[str]:
    env = {**os.environ, "_KABUTO_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": str(index)}
    return _run([sys.executable, "-m", "agents.cli"], env).split()


def _run(argv: list[str], env: dict[str, str] | None = None) -> str:
    """Its output; a failure says what the command wrote to stderr (it failed once in a full run
    with nothing else to go on)."""
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{argv[2:]} exited {done.returncode}: {done.stderr[-2000:]}"
    return done.stdout


async def test_enrol_all_draws_progress_on_a_terminal_and_nothing_when_piped(
    settings: Settings, tmp_path: Path
) -> None:
    env = {"KABUTO_KEY_DIR": str(tmp_path / "keys"), "KABUTO_INVESTORS": "alice,bob"}
    assert (await _run_with(settings, env, "ca", "init")).returncode == 0
    piped = await _run_with(settings, env, "ca", "enrol-all")
    assert piped.returncode == 0 and piped.stderr == ""
    assert piped.stdout.splitlines()[-1].startswith("enrolled bob (investor) ")
    code, screen = await asyncio.to_thread(_on_a_terminal, support.environment(settings) | env, "ca", "enrol-all")
    assert code == 0 and "enrolment" in screen and "kept bob (investor)" in screen
    assert "\x1b[" in screen  # drawn: the bar's cursor and colour codes


async def test_migrate_draws_progress_per_file_on_a_terminal(settings: Settings, tmp_path: Path) -> None:
    folder = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS, folder)
    (folder / "9999_progress_probe.sql").write_text("CREATE TABLE kabuto_meta.progress_probe (id int);\n")
    code, screen = await asyncio.to_thread(
        _on_a_terminal, support.environment(settings), "migrate", "--dir", str(folder)
    )
    assert code == 0 and "migrations: 9999_progress_probe.sql" in screen
    assert "applied 1 migration(s): 9999_progress_probe.sql" in screen


async def _run_with(settings: Settings, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agents.cli",
        *args,
        env=support.environment(settings) | {"KABUTO_LOG_LEVEL": "warning"} | env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await process.communicate()
    assert process.returncode is not None
    return subprocess.CompletedProcess(args, process.returncode, out.decode(), err.decode())


def _on_a_terminal(env: dict[str, str], *args: str) -> tuple[int, str]:
    """Run ``kabuto ARGS`` with stdout and stderr on a pseudo-terminal; its exit code and all it drew."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "agents.cli", *args],
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=follower,
        env=env | {"TERM": "xterm-256color", "COLUMNS": "120", "KABUTO_LOG_LEVEL": "warning"},
    )
    os.close(follower)
    screen = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], deadline - time.monotonic())
        try:
            chunk = os.read(leader, 65536) if ready else b""
        except OSError:  # the terminal closed: the process has exited
            chunk = b""
        if not chunk:
            break
        screen += chunk
    os.close(leader)
    return process.wait(timeout=10), screen.decode(errors="replace")
