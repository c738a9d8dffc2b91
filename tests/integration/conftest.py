"""Fixtures for the integration tests: an external participant hosted by no agent."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aio_pika
import pytest

from broker.participants import reply_queue_name
from broker.pki import KeyStore, default_participant
from broker.settings import Settings
from broker.topology import Names
from kabuto_client import Participant
from schemas.identity import Role


async def delete_queue(settings: Settings, participant: str) -> None:
    connection = await aio_pika.connect(settings.amqp_url)
    try:
        channel = await connection.channel()
        await channel.queue_delete(reply_queue_name(Names(settings.namespace), participant))
    finally:
        await connection.close()


def enrol(keys: KeyStore, user_id: str) -> None:
    keys.enrol(default_participant(user_id, Role.INVESTOR, limit=10_000_000))


@pytest.fixture
async def dora(settings: Settings, keys: KeyStore) -> AsyncIterator[Participant]:
    enrol(keys, "dora")
    try:
        async with Participant.enrolled(settings.amqp_url, keys.root, "dora", namespace=settings.namespace) as me:
            yield me
    finally:
        await delete_queue(settings, "dora")
