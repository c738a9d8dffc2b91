"""Review of dc1acc6 (``trading.place_orders``, ``kabuto investor order-list``): a list of orders
is all or none, each order its own signed order.submit in the list's order, single orders keep
their old behaviour, racing commands get an OrderError, and the CLI's exit codes."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
import pytest

from agents.investor.trading import OrderError, OrderTicket, place_order, place_orders
from broker.access import agent_urls
from broker.context import Context
from broker.db import agent_pool
from broker.runtime import AgentRuntime, execute
from broker.settings import Settings
from schemas.money import MAX_QUANTITY
from tests import support
from tests.e2e.test_cli import kabuto, ok
from tests.integration.test_investor_order_lists import committed, recorded, sent
from tests.integration.test_investor_standing_cover import opened
from tests.integration.test_trading_paths import AGENTS, answer_to, buy, issue, market, sell

Rt = dict[str, AgentRuntime]


async def state(rt: Rt, *certs: UUID) -> tuple[Any, ...]:
    return (await sent(rt), await recorded(rt), [await committed(rt, c) for c in certs])


# --- all or none ---------------------------------------------------------------------------


async def test_an_order_the_contract_cannot_carry_third_in_the_list_leaves_nothing(settings: Settings) -> None:
    async with support.agents(settings, *AGENTS) as rt:
        await market(rt)
        cert = await issue(rt, "alice", 100)
        before = await state(rt, cert)
        bad_price = dataclasses.replace(buy("a3", 1, user="alice"), price=Decimal("1000.00001"))
        with pytest.raises(OrderError, match=r"order 3 of the list \(a3\) cannot be sent: price: .*4 decimal places"):
            await rt["investor"].command(
                "alice", place_orders([buy("a1", 100, user="alice"), sell("a2", 100, cert), bad_price])
            )
        bad_issue = dataclasses.replace(buy("a6", 1, user="alice"), issue_code="kbt lower")
        with pytest.raises(OrderError, match=r"order 3 of the list \(a6\) cannot be sent: issue_code: "):
            await rt["investor"].command(
                "alice", place_orders([sell("a4", 100, cert), buy("a5", 1, user="alice"), bad_issue])
            )
        assert await state(rt, cert) == before
        # nothing left behind: the same ids and certificate go through afterwards
        await rt["investor"].command("alice", place_orders([buy("a1", 100, user="alice"), sell("a2", 100, cert)]))
        assert await committed(rt, cert) == "a2"


async def test_a_late_sell_without_its_certificate_or_with_one_not_in_the_wallet_refuses_the_buys_before_it(
    settings: Settings,
) -> None:
    async with support.agents(settings, *AGENTS) as rt:
        await market(rt)
        cert = await issue(rt, "alice", 100)
        before = await state(rt, cert)
        no_cert = dataclasses.replace(sell("s9", 100, cert), cert_id=None)
        with pytest.raises(OrderError, match="names the certificate it sells from"):
            await rt["investor"].command(
                "alice", place_orders([sell("s1", 100, cert), buy("b1", 1, user="alice"), no_cert])
            )
        with pytest.raises(OrderError, match=f"certificate {UUID(int=9)} is not in the wallet"):
            await rt["investor"].command(
                "alice", place_orders([buy("b1", 1, user="alice"), sell("s1", 100, cert), sell("s2", 1, UUID(int=9))])
            )
        assert await state(rt, cert) == before


async def test_a_covered_buy_in_a_refused_list_draws_nothing_and_sends_nothing(settings: Settings) -> None:
    async with support.agents(settings, *AGENTS) as rt:
        await market(rt)
        await opened(rt, "300000")
        before = await state(rt)
        other = dataclasses.replace(buy("c2", 100, "990"), settlement_account="bob-savings")
        with pytest.raises(OrderError, match="not in the wallet"):
            await rt["investor"].command(
                "bob", place_orders([buy("c1", 100, "990"), other, sell("c3", 100, UUID(int=3), user="bob")])
            )
        assert await state(rt) == before
        # the same list without the bad sell goes through, and the covered buy is booked on the cover
        ids = await rt["investor"].command("bob", place_orders([buy("c1", 100, "990"), other]))
        await rt["investor"].outcomes.wait(answer_to(ids[0], "order.accepted"))
        booked = await support.rows(rt["exchange"], "SELECT client_order_id FROM orders")
        assert "c1" in {r["client_order_id"] for r in booked}


async def test_a_buy_ticket_naming_someone_elses_certificate_does_not_commit_it(settings: Settings) -> None:
    """A CSV line may fill ``certificate`` on a buy; the buy carries no certificate, so nothing of
    the wallet may be committed for it, least of all another holder's certificate."""
    async with support.agents(settings, *AGENTS) as rt:
        await market(rt)
        cert = await issue(rt, "alice", 100)
        bobs = dataclasses.replace(buy("b1", 100, "900"), cert_id=cert)
        try:
            await rt["investor"].command("bob", place_orders([bobs]))
        except OrderError:
            pass  # refusing the ticket is fine too
        assert await committed(rt, cert) is None
        await rt["investor"].command("alice", place_order(sell("s1", 100, cert, price="1100")))
        assert await committed(rt, cert) == "s1"


# --- each order its own message, in the list's order -------------------------------------


async def test_a_long_list_is_one_signed_submit_each_accepted_in_the_lists_order(settings: Settings) -> None:
    async with support.agents(settings, *AGENTS) as rt:
        await market(rt)
        certs = [await issue(rt, "alice", 100) for _ in range(3)]
        sells = [sell(f"s{i:03}", 100, c, price="1300") for i, c in enumerate(certs)]
        buys = [buy(f"b{i:03}", 100, price=str(700 + i)) for i in range(57)]
        message_ids = await rt["investor"].command("alice", place_orders(sells))
        buy_ids = await rt["investor"].command("bob", place_orders(buys))
        every = message_ids + buy_ids
        assert len(set(every)) == len(every) == 60
        rows = await sent(rt)
        assert [r["message_id"] for r in rows] == every
        assert {r["message_type"] for r in rows} == {"order.submit"}
        for message_id in every:
            answer = await rt["investor"].outcomes.wait(answer_to(message_id, "order.accepted", "order.rejected"))
            assert answer.type == "order.accepted"
        numbers = await support.rows(rt["exchange"], "SELECT client_order_id FROM orders ORDER BY acceptance_number")
        assert [r["client_order_id"] for r in numbers] == [t.client_order_id for t in sells + buys]


# --- single place_order keeps its behaviour ------------------------------------------------


async def test_single_orders_keep_their_messages(settings: Settings) -> None:
    async with support.agents(settings, *AGENTS) as rt:
        await market(rt)
        cert, other = await issue(rt, "alice", 100), await issue(rt, "alice", 100)
        await rt["investor"].command("alice", place_order(sell("s1", 100, cert, price="1100")))
        await rt["investor"].command("alice", place_order(buy("b1", 1, user="alice")))
        before = await state(rt, cert, other)
        with pytest.raises(OrderError, match="client order id s1 was used before"):
            await rt["investor"].command("alice", place_order(sell("s1", 100, cert, price="1100")))
        with pytest.raises(OrderError, match="client order id s1 was used before"):
            await rt["investor"].command("alice", place_order(sell("s1", 100, other, price="1100")))
        with pytest.raises(OrderError, match=r"client order id b1 was used before$"):
            await rt["investor"].command("alice", place_order(buy("b1", 1, user="alice")))
        with pytest.raises(OrderError, match=f"certificate {cert} is not in the wallet, or already backs an order"):
            await rt["investor"].command("alice", place_order(sell("s2", 100, cert, price="1100")))
        with pytest.raises(OrderError, match="a sell order names the certificate it sells from"):
            await rt["investor"].command("alice", place_order(dataclasses.replace(sell("s3", 1, cert), cert_id=None)))
        with pytest.raises(OrderError, match=f"certificate {other} is not in the wallet"):
            await rt["investor"].command("bob", place_order(sell("s4", 100, other, user="bob")))
        assert await state(rt, cert, other) == before
        message_id = await rt["investor"].command("alice", place_order(sell("s5", 100, other, price="1100")))
        assert isinstance(message_id, UUID)
        await rt["investor"].outcomes.wait(answer_to(message_id, "order.accepted"))


# --- concurrency -----------------------------------------------------------------------------


@asynccontextmanager
async def pools(settings: Settings, n: int) -> AsyncIterator[list[asyncpg.Pool]]:
    """``n`` separate one-connection pools on the investor's database, as ``n`` CLI commands have."""
    url = agent_urls(settings, "investor").database
    async with AsyncExitStack() as stack:
        yield [await stack.enter_async_context(agent_pool(url, "investor", max_size=1)) for _ in range(n)]


async def waiting_on_locks(settings: Settings, n: int) -> None:
    """Until ``n`` sessions of the test's database wait on a lock (read as the database's owner)."""
    pool = await asyncpg.connect(settings.database_url)

    async def check() -> bool:
        count = await pool.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return bool(count >= n)

    try:
        await support.eventually(check)
    finally:
        await pool.close()


def run(rt: Rt, pool: asyncpg.Pool, user: str, tickets: list[OrderTicket]) -> asyncio.Task[Any]:
    investor = rt["investor"]
    return asyncio.create_task(
        execute(pool, investor.identities[user], investor.trust, place_orders(tickets), datetime.now(UTC))
    )


def one_wins(results: list[Any]) -> tuple[Any, BaseException]:
    won = [r for r in results if not isinstance(r, BaseException)]
    lost = [r for r in results if isinstance(r, BaseException)]
    assert len(won) == 1 and len(lost) == 1, results
    assert isinstance(lost[0], OrderError), f"{type(lost[0]).__name__}: {lost[0]}"
    return won[0], lost[0]


@asynccontextmanager
async def placed_meanwhile(rt: Rt, blocker: asyncpg.Pool, tickets: list[OrderTicket]) -> AsyncIterator[None]:
    """bob's ``tickets`` placed by a third command whose transaction stays open (its rows locked)
    for the block, then rolls back."""
    investor = rt["investor"]
    async with blocker.acquire() as connection:
        transaction = connection.transaction()
        await transaction.start()
        ctx = Context(connection, investor.identities["bob"], investor.trust, datetime.now(UTC))
        await place_orders(tickets)(ctx)
        yield
        await transaction.rollback()


async def test_two_commands_racing_on_one_client_order_id_one_wins_the_other_gets_order_error(
    settings: Settings,
) -> None:
    async with support.agents(settings, *AGENTS) as rt, pools(settings, 3) as (p1, p2, blocker):
        await market(rt)
        async with placed_meanwhile(rt, blocker, [buy("r1", 100)]):
            t1, t2 = run(rt, p1, "bob", [buy("r1", 100)]), run(rt, p2, "bob", [buy("x2", 1), buy("r1", 100)])
            await waiting_on_locks(settings, 2)
        _, lost = one_wins(list(await asyncio.gather(t1, t2, return_exceptions=True)))
        assert "r1 was used before" in str(lost)
        assert "r1" in await recorded(rt) and len(await sent(rt)) == len(await recorded(rt))


async def test_two_lists_racing_on_the_same_ids_in_opposite_orders_one_wins_the_other_gets_order_error(
    settings: Settings,
) -> None:
    """Lists [a, m, b] and [b, m, a] placed at once (m held a moment by a third command that
    rolls back): one is placed, the other is refused as used before, not a deadlock."""
    async with support.agents(settings, *AGENTS) as rt, pools(settings, 3) as (p1, p2, blocker):
        await market(rt)
        async with placed_meanwhile(rt, blocker, [buy("m", 100)]):
            t1 = run(rt, p1, "bob", [buy("a", 1), buy("m", 1), buy("b", 1)])
            t2 = run(rt, p2, "bob", [buy("b", 1), buy("m", 1), buy("a", 1)])
            await waiting_on_locks(settings, 2)
        one_wins(list(await asyncio.gather(t1, t2, return_exceptions=True)))
        assert await recorded(rt) == ["a", "b", "m"]


async def test_two_sell_lists_racing_on_the_same_certificates_in_opposite_orders_one_wins(
    settings: Settings,
) -> None:
    async with support.agents(settings, *AGENTS) as rt, pools(settings, 3) as (p1, p2, blocker):
        await market(rt)
        c1, c2, c3 = [await issue(rt, "alice", 100) for _ in range(3)]
        async with blocker.acquire() as connection:
            transaction = connection.transaction()
            await transaction.start()
            await connection.execute("SELECT 1 FROM wallet WHERE cert_id = $1 FOR UPDATE", c3)
            t1 = run(rt, p1, "alice", [sell("a1", 100, c1), sell("a2", 100, c3), sell("a3", 100, c2)])
            t2 = run(rt, p2, "alice", [sell("b1", 100, c2), sell("b2", 100, c3), sell("b3", 100, c1)])
            await waiting_on_locks(settings, 2)
            await transaction.rollback()
        _, lost = one_wins(list(await asyncio.gather(t1, t2, return_exceptions=True)))
        assert "already backs an order" in str(lost)


# --- the CLI -------------------------------------------------------------------------------

HEADER = "side,issue,quantity,account,limit,name,address,id\n"


async def order_list(settings: Settings, file: str) -> tuple[int, str]:
    """The command's exit code and its stderr as one line (Typer's box drawn around it taken off)."""
    code, _, err = await kabuto(settings, "investor", "order-list", "--as", "bob", file)
    return code, " ".join(err.translate({ord(c): " " for c in "│╭╮╰╯─"}).split())


async def test_cli_a_file_with_crlf_quotes_blank_lines_and_a_spaced_header_is_placed(
    settings: Settings, tmp_path: Path
) -> None:
    body = (
        " side , issue , quantity , account , limit , name , address , id \r\n"
        'buy,KBT,100,bob-cash,1000,"Bob, Jr.","1-2, Kabuto-cho",q-1\r\n'
        "\r\n"
        'buy,KBT,200,bob-cash,990,Bob,"Tokyo, Japan",q-2\r\n'
    )
    file = tmp_path / "excel.csv"
    file.write_bytes(body.encode("utf-8"))
    code, err = await order_list(settings, str(file))
    assert code == 0, err
    listed = await ok(settings, "investor", "orders", "--as", "bob")
    assert "q-1" in listed and "q-2" in listed


async def test_cli_a_utf8_file_saved_with_a_byte_order_mark_is_placed(settings: Settings, tmp_path: Path) -> None:
    """Excel's "CSV UTF-8" and Notepad write a BOM before the header."""
    file = tmp_path / "bom.csv"
    file.write_bytes(("\ufeff" + HEADER + "buy,KBT,100,bob-cash,1000,Bob,Tokyo,bom-1\n").encode("utf-8"))
    code, err = await order_list(settings, str(file))
    assert code == 0, err


async def test_cli_exit_codes(settings: Settings, tmp_path: Path) -> None:
    def write(name: str, text: str | bytes) -> str:
        path = tmp_path / name
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        return str(path)

    sell = f"side,issue,quantity,account,limit,certificate,id\nsell,KBT,1,bob-cash,1000,{UUID(int=1)},e-2\n"
    many = "".join(f"buy,KBT,1,bob-cash,1000,Bob,Tokyo,m-{i}\n" for i in range(1000))
    files = (
        write("latin1.csv", (HEADER + "buy,KBT,1,bob-cash,1000,Bj\xf6rk,Tokyo,e-1\n").encode("latin-1")),
        write("header.csv", HEADER),
        write("empty.csv", ""),
        str(tmp_path / "missing.csv"),
        write("sell.csv", sell),
        write("toomany.csv", HEADER + many + "buy,KBT,1,bob-cash,1000,Bob,Tokyo,m-x\n"),
    )
    # Each file is refused whole, so none changes what another reads: they run at once, and the
    # 1,000 orders of many.csv beside them.
    answers = await asyncio.gather(
        *(order_list(settings, file) for file in files),
        kabuto(settings, "investor", "order-list", "--as", "bob", write("many.csv", HEADER + many)),
    )
    latin1, header, empty, missing, not_held, too_many, (placed, out, placed_err) = answers
    assert latin1[0] == 2 and "latin1.csv" in latin1[1]
    assert header[0] == 2 and "holds no order" in header[1]
    assert empty[0] == 2 and "empty" in empty[1]
    assert missing[0] == 2
    assert not_held[0] == 1 and "is not in the wallet" in not_held[1]
    assert too_many[0] == 2 and "line 1002" in too_many[1]
    assert placed == 0 and "1000 orders queued" in out, placed_err
    listed = await ok(settings, "investor", "orders", "--as", "bob")
    assert "e-1" not in listed and "e-2" not in listed and "m-x" not in listed


async def test_cli_a_line_the_parser_cannot_read_is_a_usage_error_naming_it(settings: Settings, tmp_path: Path) -> None:
    """A quantity of Unicode digits the parser lets through and ``int`` cannot read."""
    file = tmp_path / "super.csv"
    file.write_text(HEADER + "buy,KBT,1,bob-cash,1000,Bob,Tokyo,u-1\nbuy,KBT,\u00b2,bob-cash,1000,Bob,Tokyo,u-2\n")
    code, err = await order_list(settings, str(file))
    assert code == 2 and "line 3" in err, (code, err[-400:])


@pytest.mark.parametrize(
    "line",
    [f"buy,KBT,{MAX_QUANTITY + 1},bob-cash,1000,Bob,Tokyo,v-2", "buy,KBT,1,bob-cash,1000.00001,Bob,Tokyo,v-2"],
    ids=["quantity over the maximum", "limit with five decimals"],
)
async def test_cli_a_line_no_order_can_carry_is_a_usage_error_naming_it(
    settings: Settings, tmp_path: Path, line: str
) -> None:
    file = tmp_path / "big.csv"
    file.write_text(HEADER + "buy,KBT,1,bob-cash,1000,Bob,Tokyo,v-1\n" + line + "\n")
    code, err = await order_list(settings, str(file))
    assert code == 2 and "line 3" in err, (code, err[-400:])
    assert "v-1" not in await ok(settings, "investor", "orders", "--as", "bob")
