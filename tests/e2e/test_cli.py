"""The ``kabuto`` command as a user types it: each sub-command runs, says what it did, and
fails with a clear message on bad input."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from broker.settings import Settings
from tests import support


async def kabuto(settings: Settings, *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agents.cli",
        *args,
        env=support.environment(settings) | {"KABUTO_LOG_LEVEL": "warning"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def ok(settings: Settings, *args: str) -> str:
    code, out, err = await kabuto(settings, *args)
    assert code == 0, f"kabuto {' '.join(args)} failed: {err}"
    return out


async def together(settings: Settings, *commands: tuple[str, ...]) -> list[tuple[int, str, str]]:
    """Commands that change nothing another reads, run at once. Each is a process of its own that
    spends about a second of CPU importing; one at a time left the machine's other core idle."""
    return list(await asyncio.gather(*(kabuto(settings, *command) for command in commands)))


async def all_ok(settings: Settings, *commands: tuple[str, ...]) -> list[str]:
    """``ok`` of each of ``commands``, run ``together``."""
    answers = await together(settings, *commands)
    for command, (code, _, err) in zip(commands, answers, strict=True):
        assert code == 0, f"kabuto {' '.join(command)} failed: {err}"
    return [out for _, out, _ in answers]


async def test_operators_open_an_issue_list_it_and_fund_accounts(settings: Settings) -> None:
    offered, listed, opened = await all_ok(
        settings,
        ("issuer", "offer", "KBT", "--company", "Kabuto K.K.", "--incorporated", "2001-04-01", "--shares", "10000",
         "--price", "1000"),
        ("exchange", "list", "KBT", "--reference-price", "1000"),
        ("settlement", "open-account", "bob-cash", "--owner", "bob"),
    )  # fmt: skip
    assert "opened offering KBT" in offered and "listed KBT" in listed and "opened bob-cash" in opened
    offerings, deposited = await all_ok(
        settings, ("issuer", "offerings"), ("settlement", "deposit", "bob-cash", "500000", "--reference", "r1")
    )
    assert "KBT" in offerings and "balance 500000" in deposited
    statement = await ok(settings, "settlement", "statement", "bob-cash")
    assert "deposits 500000" in statement and "r1" in statement


async def test_an_investor_queues_requests_and_orders_without_the_broker(settings: Settings) -> None:
    requested, ordered = await all_ok(
        settings,
        ("investor", "request-certificates", "--no-wait", "--as", "alice", "KBT", "--shares", "500", "--name", "Alice",
         "--address", "Tokyo", "--dividend-account", "alice-cash"),
        ("investor", "order", "--no-wait", "--as", "bob", "buy", "KBT", "100", "--limit", "1000", "--account",
         "bob-cash", "--name", "Bob", "--address", "Tokyo", "--id", "b-1"),
    )  # fmt: skip
    assert "queued" in requested and "order b-1 queued" in ordered
    requests, orders, wallet = await all_ok(
        settings,
        ("investor", "requests", "--as", "alice"),
        ("investor", "orders", "--as", "bob"),
        ("investor", "wallet", "--as", "bob"),
    )
    assert "sent" in requests and "b-1" in orders and "(no certificates)" in wallet


async def test_an_investor_places_a_list_of_orders_from_a_file_all_or_none(settings: Settings, tmp_path: Path) -> None:
    """``kabuto investor order-list``: every order of the file queued in one transaction; a file
    with a line at fault is refused naming the line (exit 2), and one with an order the agent will
    not send is refused whole (exit 1): neither records anything."""
    header = "side,issue,quantity,account,limit,name,address,id\n"
    good = tmp_path / "orders.csv"
    good.write_text(header + "buy,KBT,100,bob-cash,1000,Bob,Tokyo,l-1\nbuy,KBT,200,bob-cash,990,Bob,Tokyo,l-2\n")
    out = await ok(settings, "investor", "order-list", "--as", "bob", str(good))
    assert "l-1" in out and "l-2" in out and "2 orders queued" in out

    unreadable = tmp_path / "unreadable.csv"
    unreadable.write_text(header + "buy,KBT,100,bob-cash,1000,Bob,Tokyo,l-3\nbuy,KBT,lots,bob-cash,990,Bob,Tokyo,l-4\n")
    used = tmp_path / "used.csv"
    used.write_text(header + "buy,KBT,100,bob-cash,1000,Bob,Tokyo,l-5\nbuy,KBT,100,bob-cash,1000,Bob,Tokyo,l-1\n")
    (code, _, err), (used_code, _, used_err) = await together(
        settings,
        ("investor", "order-list", "--as", "bob", str(unreadable)),
        ("investor", "order-list", "--as", "bob", str(used)),
    )
    assert code == 2 and "line 3: quantity 'lots' is not a positive whole number" in err
    assert used_code == 1 and "client order id l-1 was used before" in used_err

    listed = await ok(settings, "investor", "orders", "--as", "bob")
    assert "l-1" in listed and "l-2" in listed
    assert not any(coid in listed for coid in ("l-3", "l-4", "l-5"))


async def test_bad_input_is_refused_with_a_clear_message(settings: Settings) -> None:
    no_certificate, not_enrolled, no_account, not_a_number = await together(
        settings,
        ("investor", "order", "--as", "alice", "sell", "KBT", "100", "--account", "a-cash", "--limit", "1000"),
        ("investor", "orders", "--as", "mallory"),
        ("settlement", "deposit", "nobody", "10", "--reference", "x"),
        ("exchange", "list", "KBT", "--reference-price", "abc"),
    )
    assert no_certificate[0] == 1 and "names the certificate it sells from" in no_certificate[2]
    assert not_enrolled[0] == 1 and "mallory is not enrolled" in not_enrolled[2]
    assert no_account[0] == 1 and "nobody" in no_account[2]
    assert not_a_number[0] == 2 and "not a number" in not_a_number[2]
