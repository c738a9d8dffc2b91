"""The seconds settings (broker.settings._seconds): an independent suite written at stop 30,
which found a price interval PostgreSQL cannot use and a positive value read as 0."""

from __future__ import annotations

from datetime import timedelta

import pytest

from broker.settings import SettingsError, load


@pytest.mark.parametrize("raw", ["1e-7", "4e-7", "0.0000001"])
def test_a_positive_setting_is_never_read_as_zero(raw: str) -> None:
    """A positive value below half a microsecond passed `value > 0` and timedelta rounded it to 0:
    a stall window of 0 made heartbeat_interval 0 (a busy loop). Refused now."""
    with pytest.raises(SettingsError, match="KABUTO_STALL_AFTER must be at least a microsecond"):
        load({"KABUTO_STALL_AFTER": raw})


def test_a_price_interval_postgresql_cannot_add_to_a_moment_is_refused() -> None:
    """1e13 s fits a timedelta but not announced_at + interval in PostgreSQL (timestamptz ends in
    294276 AD): every trade failed (see the integration test). More than an hour is refused."""
    with pytest.raises(SettingsError, match="KABUTO_PRICE_INTERVAL must be at most 3600 seconds"):
        load({"KABUTO_PRICE_INTERVAL": "1e13"})
    with pytest.raises(SettingsError, match="KABUTO_PRICE_INTERVAL must be at most 3600 seconds"):
        load({"KABUTO_PRICE_INTERVAL": "3600.5"})
    assert load({"KABUTO_PRICE_INTERVAL": "3600"}).price_interval == timedelta(hours=1)


@pytest.mark.parametrize("raw", ["0", "-0", "0.0", "0e0"])
def test_every_spelling_of_zero_is_the_price_intervals_off_value(raw: str) -> None:
    assert load({"KABUTO_PRICE_INTERVAL": raw}).price_interval == timedelta(0)


@pytest.mark.parametrize("raw", ["-0.000001", "-inf", "inf", "nan", "-nan", "1e300", "", " ", "0.1s", "100ms"])
def test_a_bad_price_interval_is_refused_naming_it(raw: str) -> None:
    with pytest.raises(SettingsError, match="KABUTO_PRICE_INTERVAL"):
        load({"KABUTO_PRICE_INTERVAL": raw})


@pytest.mark.parametrize("name", ["KABUTO_STALL_AFTER", "KABUTO_OUTBOX_IDLE_POLL", "KABUTO_MAX_MESSAGE_AGE"])
@pytest.mark.parametrize("raw", ["0", "-0", "0.0"])
def test_zero_is_still_refused_for_every_other_duration(name: str, raw: str) -> None:
    with pytest.raises(SettingsError, match=f"{name} must be positive"):
        load({name: raw})


def test_the_largest_duration_a_timedelta_holds_is_accepted_and_one_beyond_refused() -> None:
    assert load({"KABUTO_CERTID_LIST_INTERVAL": "86399999999999"}).certid_list_interval.days == 999_999_999
    with pytest.raises(SettingsError, match="more seconds than a duration can hold"):
        load({"KABUTO_CERTID_LIST_INTERVAL": "86400000000000"})


@pytest.mark.parametrize("raw", ["-1", "nan", "inf", "", "90s"])
def test_a_bad_instance_wait_is_refused_naming_it_and_zero_gives_up_at_the_first_refusal(raw: str) -> None:
    with pytest.raises(SettingsError, match="KABUTO_INSTANCE_WAIT"):
        load({"KABUTO_INSTANCE_WAIT": raw})
    assert load({"KABUTO_INSTANCE_WAIT": "0"}).instance_wait == timedelta(0)
