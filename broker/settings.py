"""Settings, read once from the environment into an immutable object and passed down.

Nothing below the composition root reads ``os.environ``; the README documents every
variable listed here.
"""

from __future__ import annotations

import math
import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal, cast, get_args

from broker.event_loop import EVENT_LOOPS, EventLoop

# One type for the seven agent ids, so a command that takes an agent (`kabuto health AGENT`) is checked
# against the same list its choices come from.
AgentId = Literal["investor", "issuer", "exchange", "settlement", "brokerage", "custody", "credit"]
AGENT_IDS: tuple[str, ...] = get_args(AgentId)


class SettingsError(ValueError):
    """An environment variable has a value Kabuto cannot use."""


# The most items a bundle may hold (broker/bundle.py): receivers refuse a bigger one. It bounds
# the batch a bundle can make a consumer take, whoever sent it.
MAX_BUNDLE_ITEMS = 256


# The niceness Linux allows above the normal priority.
MOST_NICENESS = 19


# A price delayed longer is no longer a market price (and PostgreSQL adds it to a timestamp).
LONGEST_PRICE_INTERVAL = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class Settings:
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    database_url: str = "postgresql://postgres@127.0.0.1:5432/kabuto"
    key_dir: Path = Path("var/keys")
    log_level: str = "info"
    log_format: str = "json"
    # Prefix of every exchange and queue name, so several installations (or tests) share a vhost.
    namespace: str = "kabuto"
    # Investor identities hosted by the investor agent (their wallets live in its schema).
    investors: tuple[str, ...] = ("alice", "bob")
    max_message_age: timedelta = timedelta(hours=24)
    max_clock_skew: timedelta = timedelta(seconds=30)
    retry_delays_ms: tuple[int, ...] = (500, 2_000, 10_000)
    delivery_limit: int = 10
    prefetch: int = 64
    # Deliveries settled in one transaction at most (group commit). 128, not 32: a batch's
    # transaction, claim, commit and relay round are paid once whatever its size, and at 32 a
    # busy agent paid them for every 25 deliveries; a burst went 20-25 % faster at 128 and the
    # latency at 100 trades/s fell (docs/performance.md, "Stop 43"; docs/decisions.md).
    batch_size: int = 128
    # Under `kabuto run all`, the niceness of the agents on the participants' side (investor,
    # brokerage, credit: agents.registry.PARTICIPANT_SIDE), so that on one shared host the
    # market's core — exchange, settlement, issuer, custody — takes the cores first and a trade's
    # settlement path does not queue behind notifications; 0 runs them all alike
    # (docs/performance.md, "Stop 44"; docs/decisions.md).
    participant_niceness: int = 10
    outbox_batch: int = 200
    # Most outbox rows for one agent's queue published as one bundle (broker/bundle.py); 1 is off.
    outbox_bundle: int = 32
    # What a consumer's batch sends to one of those queues under one key is stored as one packed
    # bundle, sealed once, its items unsigned (broker/bundle.py). Off while any agent runs a
    # release that cannot read one (before stop 32), and where bundles are off.
    outbox_pack: bool = True
    outbox_idle_poll: timedelta = timedelta(seconds=5)
    certid_list_interval: timedelta = timedelta(minutes=10)
    # Issue 8: an issue's last price reaches the exchange's price subscribers at most once per
    # interval, the latest always (agents/exchange/prices.py); 0 sends it at every batch's end.
    price_interval: timedelta = timedelta(milliseconds=100)
    # Issue 11 (DvP): how often settlement recycles pending instructions, and for how many days
    # after the intended settlement date (the cut-off).
    settlement_recycle_interval: timedelta = timedelta(seconds=60)
    settlement_recycle_days: int = 2
    # A task with pending work and no progress for this long, or no heartbeat, is unhealthy.
    stall_after: timedelta = timedelta(seconds=60)
    # Between two passes of the pruner (broker/pruning.py), which prunes the outbox too.
    inbox_prune_interval: timedelta = timedelta(hours=1)
    # How long a published outbox row is kept after its publication; at least ``inbox_horizon``.
    outbox_retention: timedelta = timedelta(days=7)
    # How long a starting (or reconnecting) agent waits for another connection to give up its
    # lease before it stops (broker/instance.py): above the 60 s a connection left half-open
    # keeps it (three of the 20 s heartbeats agents ask for).
    instance_wait: timedelta = timedelta(seconds=90)
    # How often a running agent retries its parked (unroutable) outbox rows.
    parked_retry_interval: timedelta = timedelta(seconds=30)

    # Prometheus endpoint of each agent process (broker/metrics.py): base port, 0 turns it off.
    metrics_port: int = 9464
    metrics_address: str = "127.0.0.1"
    metrics_interval: timedelta = timedelta(seconds=5)
    # A diagnostic: every statement also counted by its text (broker/metrics.py, bench.cpu --census).
    statement_census: bool = False

    # Largest message body accepted; larger ones are refused before verification (issue 13).
    max_message_bytes: int = 1_048_576
    # Each agent connects with its own logins from <key_dir>/credentials/ (broker.access), made by
    # `kabuto access provision`; off, it uses the URLs as given (issue 13: least privilege by default).
    agent_credentials: bool = True
    # Message versions with account information in clear (R-001-06) are accepted until this
    # moment and refused from it; None: refused already (docs/security.md §6).
    clear_accounts_until: datetime | None = None
    # The command `kabuto access provision` imports broker users with (docs/security.md §5).
    rabbitmqctl: tuple[str, ...] = ("rabbitmqctl",)
    # The event loop every process runs on (broker/event_loop.py, docs/performance.md).
    event_loop: EventLoop = "uvloop"

    @property
    def heartbeat_interval(self) -> timedelta:
        """How often a running agent writes its tasks' heartbeats: well within ``stall_after``."""
        return min(self.stall_after / 4, timedelta(seconds=5))

    @property
    def inbox_horizon(self) -> timedelta:
        """How long a message can still be received, and so how long its inbox row is kept for a
        replay to be refused (broker/pruning.py explains the bound). Also the shortest
        ``outbox_retention`` allowed: until then a message can still be delivered late, retried,
        redelivered and answered, and a command may still be waiting for that answer; after it
        every receiver refuses the message as stale and has forgotten its id."""
        return self.max_message_age + 2 * self.max_clock_skew

    @property
    def max_attempts(self) -> int:
        """First delivery plus one retry per configured delay."""
        return len(self.retry_delays_ms) + 1

    def with_(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]


def _seconds(
    env: Mapping[str, str], name: str, default: timedelta, *, zero: bool = False, most: timedelta | None = None
) -> timedelta:
    """A number of seconds, positive (or also 0, with ``zero``: the setting's off value), at most
    ``most``. A positive value too small for a microsecond is refused rather than read as 0."""
    raw = env.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise SettingsError(f"{name} must be a number of seconds, got {raw!r}") from exc
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero):
        raise SettingsError(f"{name} must be {'0 or more' if zero else 'positive'}, got {raw!r}")
    try:
        seconds = timedelta(seconds=value)
    except OverflowError:
        raise SettingsError(f"{name} is more seconds than a duration can hold, got {raw!r}") from None
    if value > 0 and not seconds:
        raise SettingsError(f"{name} must be at least a microsecond, got {raw!r}")
    if most is not None and seconds > most:
        raise SettingsError(f"{name} must be at most {most.total_seconds():g} seconds, got {raw!r}")
    return seconds


def _int(env: Mapping[str, str], name: str, default: int, most: int | None = None, least: int = 1) -> int:
    raw = env.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise SettingsError(f"{name} must be a whole number, got {raw!r}") from exc
    if value < least:
        bound = "positive" if least == 1 else f"at least {least}"
        raise SettingsError(f"{name} must be {bound}, got {raw!r}")
    if most is not None and value > most:
        raise SettingsError(f"{name} must be at most {most}, got {raw!r}")
    return value


def _port(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or int(raw) > 65535 - len(AGENT_IDS):
        raise SettingsError(f"{name} must be a port number (0 turns it off), got {raw!r}")
    return int(raw)


def _csv(env: Mapping[str, str], name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    raw = env.get(name)
    if raw is None:
        return default
    items = tuple(part.strip() for part in raw.split(",") if part.strip())
    if not items:
        raise SettingsError(f"{name} must list at least one value")
    return items


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None:
        return default
    if raw not in ("0", "1"):
        raise SettingsError(f"{name} must be 0 or 1, got {raw!r}")
    return raw == "1"


def _delays(env: Mapping[str, str]) -> tuple[int, ...]:
    raw = _csv(env, "KABUTO_RETRY_DELAYS_MS", tuple(str(d) for d in Settings().retry_delays_ms))
    try:
        delays = tuple(int(d) for d in raw)
    except ValueError as exc:
        raise SettingsError(f"KABUTO_RETRY_DELAYS_MS must list milliseconds, got {raw!r}") from exc
    if any(d <= 0 for d in delays) or list(delays) != sorted(delays):
        raise SettingsError("KABUTO_RETRY_DELAYS_MS must be positive and non-decreasing")
    return delays


def _moment(env: Mapping[str, str], name: str) -> datetime | None:
    raw = env.get(name)
    if not raw:
        return None
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError as exc:
        raise SettingsError(f"{name} must be an ISO 8601 date or time (UTC unless it says), got {raw!r}") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _retention(env: Mapping[str, str], default: timedelta, floor: timedelta) -> timedelta:
    """``KABUTO_OUTBOX_RETENTION``, refused below ``floor`` (``Settings.inbox_horizon``)."""
    retention = _seconds(env, "KABUTO_OUTBOX_RETENTION", default)
    if retention < floor:
        raw = env.get("KABUTO_OUTBOX_RETENTION")
        given = repr(raw) if raw is not None else f"the default, {retention.total_seconds():.0f}"
        raise SettingsError(
            f"KABUTO_OUTBOX_RETENTION must be at least the inbox horizon, KABUTO_MAX_MESSAGE_AGE + "
            f"2 × KABUTO_MAX_CLOCK_SKEW = {floor.total_seconds():.0f} seconds, got {given}: a published "
            "message is kept as long as it can still be delivered and answered"
        )
    return retention


def load(env: Mapping[str, str] | None = None) -> Settings:
    """Read the ``KABUTO_*`` variables once; unknown values fail loudly here, not later."""
    env = os.environ if env is None else env
    defaults = Settings()
    log_format = env.get("KABUTO_LOG_FORMAT", defaults.log_format)
    if log_format not in ("json", "console"):
        raise SettingsError(f"KABUTO_LOG_FORMAT must be json or console, got {log_format!r}")
    event_loop = env.get("KABUTO_EVENT_LOOP", defaults.event_loop)
    if event_loop not in EVENT_LOOPS:
        raise SettingsError(f"KABUTO_EVENT_LOOP must be one of {', '.join(EVENT_LOOPS)}, got {event_loop!r}")
    settings = Settings(
        amqp_url=env.get("KABUTO_AMQP_URL", defaults.amqp_url),
        database_url=env.get("KABUTO_DATABASE_URL", defaults.database_url),
        key_dir=Path(env.get("KABUTO_KEY_DIR", str(defaults.key_dir))),
        log_level=env.get("KABUTO_LOG_LEVEL", defaults.log_level).lower(),
        log_format=log_format,
        namespace=env.get("KABUTO_NAMESPACE", defaults.namespace),
        investors=_csv(env, "KABUTO_INVESTORS", defaults.investors),
        max_message_age=_seconds(env, "KABUTO_MAX_MESSAGE_AGE", defaults.max_message_age),
        max_clock_skew=_seconds(env, "KABUTO_MAX_CLOCK_SKEW", defaults.max_clock_skew),
        retry_delays_ms=_delays(env),
        delivery_limit=_int(env, "KABUTO_DELIVERY_LIMIT", defaults.delivery_limit),
        prefetch=_int(env, "KABUTO_PREFETCH", defaults.prefetch),
        batch_size=_int(env, "KABUTO_BATCH_SIZE", defaults.batch_size),
        participant_niceness=_int(
            env, "KABUTO_PARTICIPANT_NICENESS", defaults.participant_niceness, most=MOST_NICENESS, least=0
        ),
        outbox_batch=_int(env, "KABUTO_OUTBOX_BATCH", defaults.outbox_batch),
        outbox_bundle=_int(env, "KABUTO_OUTBOX_BUNDLE", defaults.outbox_bundle, MAX_BUNDLE_ITEMS),
        outbox_pack=_flag(env, "KABUTO_OUTBOX_PACK", defaults.outbox_pack),
        outbox_idle_poll=_seconds(env, "KABUTO_OUTBOX_IDLE_POLL", defaults.outbox_idle_poll),
        certid_list_interval=_seconds(env, "KABUTO_CERTID_LIST_INTERVAL", defaults.certid_list_interval),
        price_interval=_seconds(
            env, "KABUTO_PRICE_INTERVAL", defaults.price_interval, zero=True, most=LONGEST_PRICE_INTERVAL
        ),
        stall_after=_seconds(env, "KABUTO_STALL_AFTER", defaults.stall_after),
        inbox_prune_interval=_seconds(env, "KABUTO_INBOX_PRUNE_INTERVAL", defaults.inbox_prune_interval),
        parked_retry_interval=_seconds(env, "KABUTO_PARKED_RETRY_INTERVAL", defaults.parked_retry_interval),
        instance_wait=_seconds(env, "KABUTO_INSTANCE_WAIT", defaults.instance_wait, zero=True),
        settlement_recycle_interval=_seconds(
            env, "KABUTO_SETTLEMENT_RECYCLE_INTERVAL", defaults.settlement_recycle_interval
        ),
        settlement_recycle_days=_int(env, "KABUTO_SETTLEMENT_RECYCLE_DAYS", defaults.settlement_recycle_days),
        metrics_port=_port(env, "KABUTO_METRICS_PORT", defaults.metrics_port),
        metrics_address=env.get("KABUTO_METRICS_ADDRESS", defaults.metrics_address),
        metrics_interval=_seconds(env, "KABUTO_METRICS_INTERVAL", defaults.metrics_interval),
        statement_census=_flag(env, "KABUTO_STATEMENT_CENSUS", defaults.statement_census),
        max_message_bytes=_int(env, "KABUTO_MAX_MESSAGE_BYTES", defaults.max_message_bytes),
        agent_credentials=_flag(env, "KABUTO_AGENT_CREDENTIALS", defaults.agent_credentials),
        clear_accounts_until=_moment(env, "KABUTO_CLEAR_ACCOUNTS_UNTIL"),
        rabbitmqctl=tuple(shlex.split(env.get("KABUTO_RABBITMQCTL", ""))) or defaults.rabbitmqctl,
        event_loop=cast(EventLoop, event_loop),
    )
    # Read last: its floor is made of two of the settings above.
    retention = _retention(env, defaults.outbox_retention, settings.inbox_horizon)
    return settings.with_(outbox_retention=retention)
