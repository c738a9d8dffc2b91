"""Least privilege on the real broker and database (issue 13; docs/security.md §5).

The issue's findings from outside: with the shared ``guest`` login an investor read another
investor's statement from the broker and published a forged event. Every agent of this suite
already runs under its own broker user and database login (``tests/conftest.py``); here each
agent and each external participant gets one made for this test under the test's namespace,
with the topic permission a production user has, and deleted afterwards: the agent works with
its own logins and publishes only its role's events; a participant reads only its own reply
queue — not another participant's, not an agent's — cannot bind itself to another's messages
and cannot publish events; and an agent's database login reaches no other schema.
"""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from uuid import uuid4

import aio_pika
import aiormq
import asyncpg
import pytest
from aio_pika.abc import AbstractChannel

from broker import access, provisioning
from broker.consumer import Outcome
from broker.participants import reply_queue_name
from broker.pki import KeyStore
from broker.settings import AGENT_IDS, Settings
from broker.topology import Names
from schemas.identity import Role
from tests import support

REFUSED = (aiormq.exceptions.ChannelAccessRefused, aio_pika.exceptions.ChannelClosed)


@dataclass(frozen=True)
class World:
    settings: Settings
    names: Names
    made: provisioning.Provisioned

    @property
    def participant(self) -> str:
        return next(iter(self.made.participants))

    @property
    def other_participant(self) -> str:
        return list(self.made.participants)[1]

    def url_of_participant(self) -> str:
        user, password = self.made.participants[self.participant]
        return access.with_login(self.settings.amqp_url, user, password)

    def url_of_agent(self, agent: str) -> str:
        credentials = self.made.agents[agent]
        return access.with_login(self.settings.amqp_url, credentials.amqp_user, credentials.amqp_password)


@asynccontextmanager
async def provisioned(
    settings: Settings, agents: bool, participants: int, broker: bool = True, save: bool = False
) -> AsyncIterator[World]:
    """Users and logins made for this test under its namespace, and deleted after it; ``save``
    writes the agents' credentials into the settings' key directory (a copy of the session's)."""
    made = await provisioning.provision(
        settings,
        [("issuer", Role.ISSUER)] if agents else [],
        [f"zed{uuid4().hex[:6]}" for _ in range(participants)],
        broker=broker,
        save=save,
    )
    try:
        yield World(settings, Names(settings.namespace), made)
    finally:
        await provisioning.delete_users(made.amqp_users)
        await provisioning.drop_logins(settings.database_url, made.database_logins)
        for pid in made.participants:
            await _delete_queue(settings, reply_queue_name(Names(settings.namespace), pid))


async def _delete_queue(settings: Settings, name: str) -> None:
    connection = await aio_pika.connect(settings.amqp_url)
    try:
        await (await connection.channel()).queue_delete(name)
    finally:
        await connection.close()


async def _watch_events(world: World, routing_key: str) -> str:
    """A queue of the test's own (as the administrator) that receives one event type."""
    name = f"{world.names.namespace}.watch"
    connection = await aio_pika.connect(world.settings.amqp_url)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(name)
        await queue.bind(world.names.events, routing_key=routing_key)
    finally:
        await connection.close()
    return name


Attempt = Callable[[AbstractChannel, World], Awaitable[object]]


async def _as(url: str, attempt: Attempt, world: World) -> object:
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        async with asyncio.timeout(10):
            return await attempt(channel, world)
    finally:
        await connection.close()


async def consume_issuer_inbox(channel: AbstractChannel, world: World) -> object:
    queue = await channel.get_queue(world.names.inbox("issuer"), ensure=False)
    return await queue.get(fail=False)


async def consume_own_queue(channel: AbstractChannel, world: World) -> object:
    queue = await channel.get_queue(reply_queue_name(world.names, world.participant), ensure=False)
    return await queue.get(timeout=5)


async def consume_another_participants_queue(channel: AbstractChannel, world: World) -> object:
    queue = await channel.get_queue(reply_queue_name(world.names, world.other_participant), ensure=False)
    return await queue.get(fail=False)


async def publish_settlement_event(channel: AbstractChannel, world: World) -> object:
    events = await channel.get_exchange(world.names.events, ensure=False)
    return await events.publish(aio_pika.Message(b"{}"), routing_key="settlement.completed")


async def publish_to_messages(channel: AbstractChannel, world: World) -> object:
    messages = await channel.get_exchange(world.names.messages, ensure=False)
    return await messages.publish(aio_pika.Message(b"for me"), routing_key=world.participant)


async def bind_to_anothers_messages(channel: AbstractChannel, world: World) -> object:
    own = await channel.get_queue(reply_queue_name(world.names, world.participant), ensure=False)
    return await own.bind(world.names.messages, routing_key="issuer")


async def declare_a_queue(channel: AbstractChannel, world: World) -> object:
    return await channel.declare_queue(f"{world.names.namespace}.sneaky", auto_delete=True)


async def publish_trade_executed(channel: AbstractChannel, world: World) -> object:
    events = await channel.get_exchange(world.names.events, ensure=False)
    return await events.publish(aio_pika.Message(b"{}"), routing_key="trade.executed")


async def test_a_participant_reads_only_its_own_queue_and_cannot_publish_events(settings: Settings) -> None:
    async with provisioned(settings, agents=False, participants=2) as world, support.agents(settings, "issuer"):
        refusals = (
            consume_issuer_inbox,
            consume_another_participants_queue,
            publish_settlement_event,
            bind_to_anothers_messages,
            declare_a_queue,
        )
        for refused in refusals:
            with pytest.raises(REFUSED):
                await _as(world.url_of_participant(), refused, world)
        # What it may do: send to the messages exchange, and read what is addressed to it.
        await _as(world.url_of_participant(), publish_to_messages, world)
        received = await _as(world.url_of_participant(), consume_own_queue, world)
        assert isinstance(received, aio_pika.abc.AbstractIncomingMessage) and received.body == b"for me"


async def test_the_agent_works_with_its_own_logins_and_publishes_only_its_roles_events(
    settings: Settings, keys: KeyStore, tmp_path: Path
) -> None:
    shutil.copytree(keys.root, tmp_path / "keys")
    own = settings.with_(key_dir=tmp_path / "keys")  # this test's credentials, not the session's
    async with provisioned(own, agents=True, participants=0, save=True) as world, support.agents(own, "issuer") as rt:
        watch = await _watch_events(world, "certificate.issuance.completed")
        issuer = rt["issuer"]
        await support.open_offering(issuer)
        sealed = support.sealed_request(keys.load_identity("alice"))
        await support.publish_sealed(world.settings, sealed)
        assert (await issuer.outcomes.wait_for(sealed.envelope.message_id)).outcome is Outcome.PROCESSED
        # Its relay publishes the event its role sends, certificate.issuance.completed, as itself.
        event = await support.next_message(world.settings, watch, timeout=15)
        assert event.routing_key == "certificate.issuance.completed"
        await _delete_queue(world.settings, watch)
        [login] = await support.rows(issuer, "SELECT session_user AS login, current_user AS acting")
        assert login == {"login": world.made.agents["issuer"].database_user, "acting": "kabuto_issuer"}
        with pytest.raises(REFUSED):
            await _as(world.url_of_agent("issuer"), publish_trade_executed, world)


async def test_an_agents_database_login_reaches_no_other_schema_even_after_reset_role(
    settings: Settings, database: str
) -> None:
    async with provisioned(settings, agents=True, participants=0, broker=False) as world:
        await _only_its_schema(world, database)


async def _only_its_schema(world: World, database: str) -> None:
    credentials = world.made.agents["issuer"]
    url = access.with_login(database, credentials.database_user, credentials.database_password)
    connection = await asyncpg.connect(url, server_settings={"role": "kabuto_issuer", "search_path": "issuer"})
    try:
        assert await connection.fetchval("SELECT count(*) FROM inbox") == 0
        # what it sent, packed bundles unpacked (migration 0080): its own, and no other agent's
        assert await connection.fetchval("SELECT count(*) FROM outbox_messages") == 0
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await connection.fetch("SELECT * FROM settlement.outbox_messages")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await connection.fetch("SELECT * FROM settlement.inbox")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await connection.execute("SET ROLE kabuto_settlement")
        await connection.execute("RESET ROLE")  # back to the session's role: still the agent's
        assert await connection.fetchval("SELECT current_user") == "kabuto_issuer"
        await connection.execute("SET ROLE NONE")  # the bare login, NOINHERIT: no rights at all
        assert await connection.fetchval("SELECT current_user") == credentials.database_user
        for schema in ("issuer", "settlement"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await connection.fetch(f"SELECT * FROM {schema}.inbox")
    finally:
        await connection.close()


def test_grants_follow_the_catalogue_and_the_namespace() -> None:
    names = Names("kabuto")
    issuer = access.agent_grant(names, "issuer", Role.ISSUER, "kabuto-issuer")
    assert issuer.publishes_events == r"^(certificate\.issuance\.completed)$"
    assert access.agent_grant(names, "investor", Role.INVESTOR, "u").publishes_events == "^$"
    zed = access.participant_grant(names, "zed", "kabuto-zed")
    assert (zed.configure, zed.write, zed.read) == ("^$", r"^(kabuto\.messages)$", r"^(kabuto\.participant\.zed)$")
    assert re.fullmatch(issuer.read, "kabuto.issuer.retry.500") and not re.fullmatch(issuer.read, "kabuto.investor")
    assert not re.fullmatch(issuer.read, "kabuto.issuerx") and re.fullmatch(issuer.write, "kabuto.events")


def test_definitions_carry_rabbitmqs_salted_sha256_hash_never_the_password() -> None:
    import base64
    import hashlib
    import json

    names = Names("kabuto")
    grant = access.participant_grant(names, "zed", "kabuto-zed")
    document = access.definitions([(grant, "s3cret-pass")], names)
    assert "s3cret-pass" not in json.dumps(document)
    [user] = document["users"]
    raw = base64.b64decode(user["password_hash"])
    assert raw[4:] == hashlib.sha256(raw[:4] + b"s3cret-pass").digest()
    assert document["topic_permissions"] == [
        {"user": "kabuto-zed", "vhost": "/", "exchange": "kabuto.events", "write": "^$", "read": ".*"}
    ]


async def test_every_agent_of_the_suite_runs_under_its_own_logins(
    settings: Settings, agent_logins: provisioning.Provisioned
) -> None:
    """Least privilege by default: the agents of every test connect as themselves, and an agent's
    broker user cannot read another agent's inbox."""
    async with support.agents(settings, *AGENT_IDS) as rt:
        for agent in AGENT_IDS:
            [who] = await support.rows(rt[agent], "SELECT session_user AS login, current_user AS acting")
            own = agent_logins.agents[agent]
            assert who == {"login": own.database_user, "acting": f"kabuto_{agent}"}
            assert rt[agent].urls.amqp.startswith(f"amqp://{own.amqp_user}:")
        world = World(settings, Names(settings.namespace), agent_logins)
        with pytest.raises(REFUSED):
            await _as(world.url_of_agent("exchange"), consume_issuer_inbox, world)


async def test_provisioning_again_keeps_every_password_on_file(
    settings: Settings, keys: KeyStore, tmp_path: Path
) -> None:
    """`make setup` provisions on every run: agents already connected keep working."""
    shutil.copytree(keys.root, tmp_path / "keys")
    own = settings.with_(key_dir=tmp_path / "keys")
    async with provisioned(own, agents=True, participants=1, save=True) as first:
        again = await provisioning.provision(own, [("issuer", Role.ISSUER)], list(first.made.participants))
        assert again.agents == first.made.agents and again.participants == first.made.participants
        assert access.load_credentials(own.key_dir, "issuer") == first.made.agents["issuer"]
        await _only_its_schema(first, own.database_url)  # the login still opens with the kept password
        await _as(first.url_of_participant(), publish_to_messages, first)


def test_a_namespace_pattern_grants_an_agent_its_own_queues_in_every_test_namespace() -> None:
    pattern = r"t[0-9a-f]{10}"
    grant = access.agent_grant(Names("t"), "exchange", Role.EXCHANGE, "kt1-exchange", namespace_pattern=pattern)
    for allowed in ("t0123456789.exchange", "tabcdef0123.exchange.retry.50", "t0123456789.messages"):
        assert re.fullmatch(grant.read, allowed), allowed
    for refused in ("t0123456789.issuer", "kabuto.exchange", "t0123456789.exchangex", "t01234567.exchange"):
        assert not re.fullmatch(grant.read, refused), refused
    assert re.fullmatch(grant.write, "t0123456789.events.journal")
