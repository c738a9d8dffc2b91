"""Where each agent process serves its metrics (issue 10), and the series names it exports."""

from __future__ import annotations

import pytest
from prometheus_client.metrics import MetricWrapperBase

from broker import metrics
from broker.settings import AGENT_IDS, SettingsError, load


def test_one_agent_per_process_gets_base_plus_its_position_and_several_get_base_plus_seven() -> None:
    assert [metrics.port_for(9464, [a]) for a in AGENT_IDS] == list(range(9464, 9471))
    assert metrics.port_for(9464, list(AGENT_IDS)) == 9471
    assert metrics.port_for(0, ["exchange"]) == 0


def test_metrics_settings_are_read_and_bad_ports_refused() -> None:
    settings = load({"KABUTO_METRICS_PORT": "0", "KABUTO_METRICS_ADDRESS": "0.0.0.0", "KABUTO_METRICS_INTERVAL": "1"})
    assert (settings.metrics_port, settings.metrics_address, settings.metrics_interval.total_seconds()) == (
        0,
        "0.0.0.0",
        1,
    )
    assert load({}).metrics_port == 9464
    for bad in ("-1", "http", "65535"):
        with pytest.raises(SettingsError, match="KABUTO_METRICS_PORT"):
            load({"KABUTO_METRICS_PORT": bad})


def test_exported_series_name_counters_with_total_and_histograms_with_buckets() -> None:
    series = metrics.exported_series()
    assert {"kabuto_messages_handled_total", "kabuto_handler_seconds_bucket", "kabuto_outbox_lag_seconds"} <= series
    assert "kabuto_messages_handled" not in series
    assert {"kabuto_answers_depth", "kabuto_gauges_sampled_timestamp_seconds"} <= series


def test_every_metric_the_module_declares_is_listed_as_exported() -> None:
    """The answers queue's depth was declared and sampled but left out of ``METRICS``."""
    declared = {value for value in vars(metrics).values() if isinstance(value, MetricWrapperBase)}
    assert declared == set(metrics.METRICS)
