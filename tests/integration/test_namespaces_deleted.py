"""The suite's own plumbing: tests/conftest.py deletes each test's RabbitMQ namespace in a thread
behind it. Found by review: a first failed deletion ended the thread, so every later test failed
in its teardown and no namespace was deleted any more; and the thread's wait for the next name
ran in a worker the interpreter joins at exit, so a session that never closed it never ended."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Awaitable, Callable

import aio_pika
import pytest

from broker.topology import Names
from tests import support
from tests.conftest import AMQP_URL, NamespacesDeleted


async def _exists(namespace: str) -> bool:
    connection = await aio_pika.connect(AMQP_URL)
    try:
        channel = await connection.channel()
        await channel.declare_exchange(Names(namespace).messages, passive=True)
        return True
    except aio_pika.exceptions.ChannelClosed:
        return False
    finally:
        await connection.close()


async def test_a_failed_deletion_is_raised_once_and_the_next_namespaces_are_still_deleted() -> None:
    # Its own broker address, not conftest's patched: the session's own deleting thread reads that
    # one, and a namespace it still had to delete failed at another test's end (review, -n 2).
    deleted = NamespacesDeleted()
    try:
        deleted.amqp_url = "amqp://guest:guest@127.0.0.1:1/"  # the broker unreachable
        deleted.delete("tfa11ed0000")
        await support.eventually(lambda: not deleted._failures.empty())
        deleted.amqp_url = AMQP_URL  # and back

        with pytest.raises(RuntimeError, match="tfa11ed0000"):  # the next test to end is told
            deleted.delete("tfa11ed0001")
        kept = "tfa11ed0002"
        connection = await aio_pika.connect(AMQP_URL)
        try:
            await (await connection.channel()).declare_exchange(Names(kept).messages, durable=True)
        finally:
            await connection.close()
        assert await _exists(kept)
        deleted.delete(kept)  # and no later one: the thread goes on and deletes it
        await support.eventually(_gone(kept))
    finally:
        await deleted.close()


def _gone(namespace: str) -> Callable[[], Awaitable[bool]]:
    async def gone() -> bool:
        return not await _exists(namespace)

    return gone


def test_an_interpreter_that_never_closed_it_still_exits() -> None:
    script = "from tests.conftest import NamespacesDeleted; NamespacesDeleted(); print('done', flush=True)"
    try:
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired as hung:
        pytest.fail(f"the interpreter did not exit after its last statement (stdout {hung.stdout!r})")
    assert done.returncode == 0 and "done" in done.stdout, done.stderr
