"""The runnable example, run as a user would: an external participant enrolled with
``kabuto ca enrol`` places a buy and a sell order with the client library alone (issue 9).

Enrolment also makes the participant's own broker user (issue 13), and the client connects with
it: a user that may not declare, bind, or read anything but its reply queue, so the run proves
the client needs nothing more. The orders carry the settlement account sealed to settlement."""

from __future__ import annotations

import asyncio
import sys
from decimal import Decimal
from pathlib import Path

import aio_pika

from broker import access, provisioning
from broker.participants import reply_queue_name
from broker.settings import Settings
from broker.topology import Names
from tests import support

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "place_orders.py"


async def run(settings: Settings, *args: str, timeout: float = 90) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        *args, env=support.environment(settings), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    async with asyncio.timeout(timeout):
        out, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode()


async def delete_queue(settings: Settings, name: str) -> None:
    connection = await aio_pika.connect(settings.amqp_url)
    try:
        channel = await connection.channel()
        await channel.queue_delete(name)
    finally:
        await connection.close()


async def test_example_places_a_buy_and_a_sell_order_through_the_broker(settings: Settings) -> None:
    queue = reply_queue_name(Names(settings.namespace), "trader-1")
    code, out = await run(settings, sys.executable, "-m", "agents.cli", "ca", "enrol", "trader-1", "--role", "investor")
    assert code == 0, out
    assert f"reply queue {queue} bound to {settings.namespace}.messages by trader-1" in out
    user = f"{settings.namespace}-trader-1"
    assert f"broker user {user}" in out
    login = access.participant_login(settings.key_dir, "trader-1")
    try:
        assert login is not None and login[0] == user
        async with support.agents(settings, "issuer", "exchange", "settlement") as rt:
            await support.open_offering(rt["issuer"])
            await support.list_issue(rt["exchange"])
            # A buy is booked only once settlement covers it (issue 11): the operator opens and funds the account.
            await support.fund(rt["settlement"], "trader-1", Decimal(1_000_000))
            code, out = await run(settings, sys.executable, str(EXAMPLE), "trader-1", support.ISSUE)
            assert code == 0, out
            assert "certificate " in out and "500 shares of KBT" in out
            assert "buy 100 KBT at 990: accepted" in out and "sell 100 KBT at 1010: accepted" in out
            assert "(idempotent)" in out
            assert out.count(": order.cancelled") == 2
            orders = await support.rows(
                rt["exchange"], "SELECT side, status FROM orders WHERE user_id = 'trader-1' ORDER BY side"
            )
            assert orders == [{"side": "buy", "status": "cancelled"}, {"side": "sell", "status": "cancelled"}]
            [stored] = await support.rows(rt["exchange"], "SELECT settlement_account FROM orders WHERE side = 'buy'")
            assert stored["settlement_account"].startswith("ks1.")  # sealed by the client library
    finally:
        await delete_queue(settings, queue)
        await provisioning.delete_users([user])
        access.participant_credentials_path(settings.key_dir, "trader-1").unlink(missing_ok=True)
