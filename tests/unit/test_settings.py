"""Settings are read once from KABUTO_* variables; a bad value fails at startup, naming the variable."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import broker.settings
from broker import event_loop
from broker.settings import Settings, SettingsError, load

ENV = {
    "KABUTO_AMQP_URL": "amqp://u:p@mq:5672/v",
    "KABUTO_DATABASE_URL": "postgresql://u@db:5432/k",
    "KABUTO_KEY_DIR": "/srv/keys",
    "KABUTO_LOG_LEVEL": "DEBUG",
    "KABUTO_LOG_FORMAT": "console",
    "KABUTO_NAMESPACE": "staging",
    "KABUTO_INVESTORS": " dave , erin ",
    "KABUTO_MAX_MESSAGE_AGE": "60",
    "KABUTO_MAX_CLOCK_SKEW": "1.5",
    "KABUTO_RETRY_DELAYS_MS": "100,100,400",
    "KABUTO_DELIVERY_LIMIT": "3",
    "KABUTO_PREFETCH": "7",
    "KABUTO_BATCH_SIZE": "5",
    "KABUTO_PARTICIPANT_NICENESS": "3",
    "KABUTO_OUTBOX_BATCH": "50",
    "KABUTO_OUTBOX_BUNDLE": "8",
    "KABUTO_OUTBOX_PACK": "0",
    "KABUTO_OUTBOX_IDLE_POLL": "0.25",
    "KABUTO_CERTID_LIST_INTERVAL": "90",
    "KABUTO_PRICE_INTERVAL": "0.5",
    "KABUTO_STALL_AFTER": "20",
    "KABUTO_INBOX_PRUNE_INTERVAL": "300",
    "KABUTO_OUTBOX_RETENTION": "172800",
    "KABUTO_PARKED_RETRY_INTERVAL": "12",
    "KABUTO_INSTANCE_WAIT": "0",
    "KABUTO_SETTLEMENT_RECYCLE_INTERVAL": "15",
    "KABUTO_SETTLEMENT_RECYCLE_DAYS": "4",
    "KABUTO_METRICS_PORT": "9100",
    "KABUTO_METRICS_ADDRESS": "0.0.0.0",
    "KABUTO_METRICS_INTERVAL": "2",
    "KABUTO_STATEMENT_CENSUS": "1",
    "KABUTO_MAX_MESSAGE_BYTES": "65536",
    "KABUTO_AGENT_CREDENTIALS": "1",
    "KABUTO_CLEAR_ACCOUNTS_UNTIL": "2027-04-01T00:00:00+09:00",
    "KABUTO_RABBITMQCTL": "docker compose exec -T rabbitmq rabbitmqctl",
    "KABUTO_EVENT_LOOP": "asyncio",
}


def test_no_variables_give_the_defaults() -> None:
    assert load({}) == Settings()


def test_every_variable_is_read() -> None:
    source = Path(broker.settings.__file__).read_text()
    assert set(re.findall(r'"(KABUTO_[A-Z_]+)"', source)) == set(ENV)
    assert load(ENV) == Settings(
        amqp_url="amqp://u:p@mq:5672/v",
        database_url="postgresql://u@db:5432/k",
        key_dir=Path("/srv/keys"),
        log_level="debug",
        log_format="console",
        namespace="staging",
        investors=("dave", "erin"),
        max_message_age=timedelta(seconds=60),
        max_clock_skew=timedelta(seconds=1.5),
        retry_delays_ms=(100, 100, 400),
        delivery_limit=3,
        prefetch=7,
        batch_size=5,
        participant_niceness=3,
        outbox_batch=50,
        outbox_bundle=8,
        outbox_pack=False,
        outbox_idle_poll=timedelta(seconds=0.25),
        certid_list_interval=timedelta(seconds=90),
        price_interval=timedelta(seconds=0.5),
        stall_after=timedelta(seconds=20),
        inbox_prune_interval=timedelta(seconds=300),
        outbox_retention=timedelta(days=2),
        parked_retry_interval=timedelta(seconds=12),
        instance_wait=timedelta(0),
        settlement_recycle_interval=timedelta(seconds=15),
        settlement_recycle_days=4,
        metrics_port=9100,
        metrics_address="0.0.0.0",
        metrics_interval=timedelta(seconds=2),
        statement_census=True,
        max_message_bytes=65536,
        agent_credentials=True,
        clear_accounts_until=datetime(2027, 3, 31, 15, tzinfo=UTC),
        rabbitmqctl=("docker", "compose", "exec", "-T", "rabbitmq", "rabbitmqctl"),
        event_loop="asyncio",
    )


def test_a_clear_accounts_cut_over_without_a_zone_is_utc() -> None:
    assert load({"KABUTO_CLEAR_ACCOUNTS_UNTIL": "2027-04-01"}).clear_accounts_until == datetime(2027, 4, 1, tzinfo=UTC)


def test_a_price_interval_of_zero_announces_every_batch() -> None:
    """0 is the off value of a duration only where it means off: the price interval's."""
    assert load({"KABUTO_PRICE_INTERVAL": "0"}).price_interval == timedelta(0)
    with pytest.raises(SettingsError, match="KABUTO_STALL_AFTER must be positive"):
        load({"KABUTO_STALL_AFTER": "0"})


def test_heartbeats_are_written_well_within_the_stall_window() -> None:
    assert Settings().heartbeat_interval == timedelta(seconds=5)
    assert Settings(stall_after=timedelta(seconds=2)).heartbeat_interval == timedelta(seconds=0.5)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("KABUTO_MAX_MESSAGE_AGE", "abc"),
        ("KABUTO_MAX_MESSAGE_AGE", "0"),
        ("KABUTO_RETRY_DELAYS_MS", "500,100"),
        ("KABUTO_RETRY_DELAYS_MS", "x"),
        ("KABUTO_LOG_FORMAT", "xml"),
        ("KABUTO_INVESTORS", ","),
        ("KABUTO_PREFETCH", "-1"),
        ("KABUTO_PARTICIPANT_NICENESS", "-1"),  # a higher priority than the core's: not what it is for
        ("KABUTO_PARTICIPANT_NICENESS", "20"),
        ("KABUTO_PARTICIPANT_NICENESS", "low"),
        ("KABUTO_STALL_AFTER", "0"),
        ("KABUTO_INBOX_PRUNE_INTERVAL", "soon"),
        ("KABUTO_OUTBOX_RETENTION", "a week"),
        ("KABUTO_OUTBOX_RETENTION", "0"),
        ("KABUTO_OUTBOX_RETENTION", "-604800"),
        ("KABUTO_OUTBOX_RETENTION", "86459"),  # a second short of the default inbox horizon
        ("KABUTO_CLEAR_ACCOUNTS_UNTIL", "next spring"),
        ("KABUTO_EVENT_LOOP", "trio"),
        ("KABUTO_OUTBOX_BUNDLE", "0"),
        ("KABUTO_OUTBOX_BUNDLE", "1025"),
        ("KABUTO_OUTBOX_PACK", "sometimes"),
        ("KABUTO_PRICE_INTERVAL", "-0.1"),
        ("KABUTO_PRICE_INTERVAL", "nan"),
        ("KABUTO_MAX_MESSAGE_AGE", "inf"),
        ("KABUTO_MAX_MESSAGE_AGE", "nan"),
        ("KABUTO_STALL_AFTER", "1e300"),  # more than a duration holds: refused, not an OverflowError
    ],
)
def test_a_bad_value_is_refused_naming_its_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        load({name: value})


def test_participant_side_agents_may_run_at_the_cores_priority() -> None:
    assert load({"KABUTO_PARTICIPANT_NICENESS": "0"}).participant_niceness == 0
    assert load({"KABUTO_PARTICIPANT_NICENESS": "19"}).participant_niceness == 19


def test_the_outbox_retention_may_not_be_shorter_than_the_inbox_horizon() -> None:
    freshness = {"KABUTO_MAX_MESSAGE_AGE": "3600", "KABUTO_MAX_CLOCK_SKEW": "30"}
    horizon = load(freshness).inbox_horizon
    assert horizon == timedelta(seconds=3660)
    assert load({**freshness, "KABUTO_OUTBOX_RETENTION": "3660"}).outbox_retention == horizon
    expected = (
        "KABUTO_OUTBOX_RETENTION must be at least the inbox horizon, "
        "KABUTO_MAX_MESSAGE_AGE + 2 × KABUTO_MAX_CLOCK_SKEW = 3660 seconds, got '3659'"
    )
    with pytest.raises(SettingsError, match=re.escape(expected)):
        load({**freshness, "KABUTO_OUTBOX_RETENTION": "3659"})


def test_a_freshness_window_longer_than_the_default_retention_asks_for_a_longer_retention() -> None:
    eight_days = {"KABUTO_MAX_MESSAGE_AGE": str(8 * 86_400)}
    with pytest.raises(SettingsError, match=r"KABUTO_OUTBOX_RETENTION .* got the default, 604800"):
        load(eight_days)
    assert load({**eight_days, "KABUTO_OUTBOX_RETENTION": str(9 * 86_400)}).outbox_retention == timedelta(days=9)


@pytest.mark.parametrize("name", ["uvloop", "asyncio"])
def test_each_event_loop_runs_a_coroutine_to_its_result(name: event_loop.EventLoop) -> None:
    async def kind() -> str:
        return type(asyncio.get_running_loop()).__module__

    assert event_loop.run(kind(), name).startswith(name)


def test_the_retention_refusal_names_the_floor_to_the_second() -> None:
    """Past 999,999 s the floor is printed whole, not in six significant digits (found by review)."""
    env = {
        "KABUTO_MAX_MESSAGE_AGE": str(12 * 86_400),
        "KABUTO_MAX_CLOCK_SKEW": "30.5",
        "KABUTO_OUTBOX_RETENTION": str(12 * 86_400),
    }
    with pytest.raises(SettingsError, match=re.escape("= 1036861 seconds")):
        load(env)
