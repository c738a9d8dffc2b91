"""One place maps what a ``kabuto`` command's body did to its exit code (agents/cli_runtime.py,
docs/cli.md): its own code, 1 with the reason for a failure, a hint to migrate for a missing
table, 2 for a setting Kabuto cannot use, 130 for Ctrl-C. And tables print every value whole."""

from __future__ import annotations

import asyncpg
import pytest
import typer

from agents import cli_runtime, render
from broker import logs
from broker.errors import KabutoError
from broker.settings import Settings


@pytest.fixture(autouse=True)
def quiet_logs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Leave the test run's logging as it was (the runtime would configure structlog)."""
    monkeypatch.setattr(logs, "configure", lambda *args, **kwargs: None)


def _exit_code(body: cli_runtime.Body) -> int:
    with pytest.raises(typer.Exit) as exited:
        cli_runtime.run(body)
    return exited.value.exit_code


def test_the_body_s_own_code_is_the_exit_code_and_none_is_0() -> None:
    async def done(settings: Settings) -> None:
        assert settings.namespace

    async def timed_out(_: Settings) -> int:
        return 3

    assert _exit_code(done) == 0
    assert _exit_code(timed_out) == 3


def test_a_kabuto_error_exits_1_with_its_type_and_message_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    async def refused(_: Settings) -> None:
        raise KabutoError("the ledger refused it")

    assert _exit_code(refused) == 1
    assert capsys.readouterr().err == "kabuto: KabutoError: the ledger refused it\n"


def test_a_missing_table_exits_1_and_says_to_run_the_migrations(capsys: pytest.CaptureFixture[str]) -> None:
    async def unmigrated(_: Settings) -> None:
        raise asyncpg.UndefinedTableError('relation "orders" does not exist')

    assert _exit_code(unmigrated) == 1
    assert "run `kabuto migrate`" in capsys.readouterr().err


def test_ctrl_c_exits_130() -> None:
    async def interrupted(_: Settings) -> None:
        raise KeyboardInterrupt

    assert _exit_code(interrupted) == 130


def test_a_setting_kabuto_cannot_use_exits_2_before_the_body_runs(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ran: list[bool] = []

    async def body(_: Settings) -> None:
        ran.append(True)

    monkeypatch.setenv("KABUTO_METRICS_PORT", "eighty")
    assert _exit_code(body) == 2 and not ran
    assert "KABUTO_METRICS_PORT" in capsys.readouterr().err


def test_an_unexpected_error_is_not_swallowed() -> None:
    async def bug(_: Settings) -> None:
        raise RuntimeError("a bug shows its traceback")

    with pytest.raises(RuntimeError, match="a bug"):
        cli_runtime.run(bug)


def test_a_table_prints_every_value_whole_and_literally() -> None:
    long = "x" * 300
    text = render.table(["id", "note"], [[long, "[bold]not markup[/bold]"], [None, 7]], indent="")
    lines = text.splitlines()
    assert lines[0].split() == ["id", "note"]
    assert long in lines[2] and "[bold]not markup[/bold]" in lines[2]
    assert lines[3].split() == ["—", "7"]
    assert render.table(["a"], []).splitlines()[-1] == "  (none)"
