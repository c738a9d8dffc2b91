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


async def test_operators_open_an_issue_list_it_and_fund_accounts(settings: Settings) -> None:
    assert "opened offering KBT" in await ok(
        settings,
        "issuer",
        "offer",
        "KBT",
        "--company",
        "Kabuto K.K.",
        "--incorporated",
        "2001-04-01",
        "--shares",
        "10000",
        "--price",
        "1000",
    )
    assert "KBT" in await ok(settings, "issuer", "offerings")
    assert "listed KBT" in await ok(settings, "exchange", "list", "KBT", "--reference-price", "1000")
    assert "opened bob-cash" in await ok(settings, "settlement", "open-account", "bob-cash", "--owner", "bob")
    assert "balance 500000" in await ok(settings, "settlement", "deposit", "bob-cash", "500000", "--reference", "r1")
    statement = await ok(settings, "settlement", "statement", "bob-cash")
    assert "deposits 500000" in statement and "r1" in statement


async def test_an_investor_queues_requests_and_orders_without_the_broker(settings: Settings) -> None:
    out = await ok(
        settings,
        "investor",
        "request-certificates",
        "--no-wait",
        "--as",
        "alice",
        "KBT",
        "--shares",
        "500",
        "--name",
        "Alice",
        "--address",
        "Tokyo",
        "--dividend-account",
        "alice-cash",
    )
    assert "queued" in out
    assert "sent" in await ok(settings, "investor", "requests", "--as", "alice")
    out = await ok(
        settings,
        "investor",
        "order",
        "--no-wait",
        "--as",
        "bob",
        "buy",
        "KBT",
        "100",
        "--limit",
        "1000",
        "--account",
        "bob-cash",
        "--name",
        "Bob",
        "--address",
        "Tokyo",
        "--id",
        "b-1",
    )
    assert "order b-1 queued" in out
    assert "b-1" in await ok(settings, "investor", "orders", "--as", "bob")
    assert "(no certificates)" in await ok(settings, "investor", "wallet", "--as", "bob")


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
    code, _, err = await kabuto(settings, "investor", "order-list", "--as", "bob", str(unreadable))
    assert code == 2 and "line 3: quantity 'lots' is not a positive whole number" in err

    used = tmp_path / "used.csv"
    used.write_text(header + "buy,KBT,100,bob-cash,1000,Bob,Tokyo,l-5\nbuy,KBT,100,bob-cash,1000,Bob,Tokyo,l-1\n")
    code, _, err = await kabuto(settings, "investor", "order-list", "--as", "bob", str(used))
    assert code == 1 and "client order id l-1 was used before" in err

    listed = await ok(settings, "investor", "orders", "--as", "bob")
    assert "l-1" in listed and "l-2" in listed
    assert not any(coid in listed for coid in ("l-3", "l-4", "l-5"))


async def test_bad_input_is_refused_with_a_clear_message(settings: Settings) -> None:
    code, _, err = await kabuto(
        settings,
        "investor",
        "order",
        "--as",
        "alice",
        "sell",
        "KBT",
        "100",
        "--account",
        "a-cash",
        "--limit",
        "1000",
    )
    assert code == 1 and "names the certificate it sells from" in err
    code, _, err = await kabuto(settings, "investor", "orders", "--as", "mallory")
    assert code == 1 and "mallory is not enrolled" in err
    code, _, err = await kabuto(settings, "settlement", "deposit", "nobody", "10", "--reference", "x")
    assert code == 1 and "nobody" in err
    code, _, err = await kabuto(settings, "exchange", "list", "KBT", "--reference-price", "abc")
    assert code == 2 and "not a number" in err
