"""compose.yaml, the Prometheus config and the Grafana dashboard, checked without a Docker engine
(issue 10): they parse, refer only to what exists, and every panel's PromQL names a metric the
agents export."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from broker import metrics
from broker.settings import AGENT_IDS, Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text())
PROMETHEUS = yaml.safe_load((ROOT / "ops/prometheus.yml").read_text())
DASHBOARD = json.loads((ROOT / "ops/grafana/dashboards/kabuto.json").read_text())
DATASOURCES = yaml.safe_load((ROOT / "ops/grafana/provisioning/datasources/prometheus.yml").read_text())
METRIC = re.compile(r"\bkabuto_[a-z_]+\b")


def services() -> dict[str, Any]:
    found: dict[str, Any] = COMPOSE["services"]
    return found


def test_every_service_refers_only_to_declared_services_volumes_and_repository_files() -> None:
    declared = set(COMPOSE["volumes"])
    for name, service in services().items():
        assert "image" in service, f"{name} has no image"
        depends = service.get("depends_on", [])
        assert set(depends) <= set(services()), f"{name} depends on an unknown service"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts {source}, which is not in the repository"
            else:
                assert source in declared, f"{name} uses the undeclared volume {source}"


def test_each_agent_runs_as_its_own_service_and_prometheus_scrapes_its_port() -> None:
    for agent in AGENT_IDS:
        service = services()[agent]
        assert service["command"] == ["run", agent] and service["environment"]["KABUTO_AGENT"] == agent
        assert service["environment"]["KABUTO_METRICS_ADDRESS"] == "0.0.0.0"
    (job,) = PROMETHEUS["scrape_configs"]
    targets = [t for config in job["static_configs"] for t in config["targets"]]
    base = Settings().metrics_port
    assert targets == [f"{agent}:{metrics.port_for(base, [agent])}" for agent in AGENT_IDS]
    assert "./ops/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in services()["prometheus"]["volumes"]


def test_grafana_is_provisioned_with_the_datasource_the_dashboard_uses() -> None:
    (source,) = DATASOURCES["datasources"]
    assert source["url"] == "http://prometheus:9090" and "prometheus" in services()
    for panel in DASHBOARD["panels"]:
        assert panel["datasource"]["uid"] == source["uid"]
        assert all(t["datasource"]["uid"] == source["uid"] for t in panel["targets"])


def test_every_panel_queries_only_metrics_the_agents_export() -> None:
    exported = metrics.exported_series()
    ids = [p["id"] for p in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))
    for panel in DASHBOARD["panels"]:
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        for target in panel["targets"]:
            named = set(METRIC.findall(target["expr"]))
            assert named, f"panel {panel['title']!r} queries no Kabuto metric: {target['expr']}"
            assert named <= exported, f"panel {panel['title']!r} names {named - exported}, which nothing exports"


def test_the_dashboard_shows_rates_latency_outbox_lag_and_dead_letters_per_agent() -> None:
    queries = " ".join(t["expr"] for p in DASHBOARD["panels"] for t in p["targets"])
    for needed in (
        "rate(kabuto_messages_handled_total",
        "rate(kabuto_outbox_published_total",
        "histogram_quantile(0.99, sum by (le, agent, type) (rate(kabuto_handler_seconds_bucket",
        "kabuto_outbox_lag_seconds",
        "kabuto_dead_letters",
    ):
        assert needed in queries
    assert all(
        "by (agent" in t["expr"] or "by (le, agent" in t["expr"] for p in DASHBOARD["panels"] for t in p["targets"]
    )


def test_only_setup_holds_the_administrators_logins_and_every_agent_waits_for_its_own() -> None:
    """Issue 13, least privilege by default: the agents' URLs name no usable user; setup writes
    their logins, broker-users imports the broker's half, and only then do they start."""
    setup, users = services()["setup"], services()["broker-users"]
    assert "guest:guest@" in setup["environment"]["KABUTO_AMQP_URL"]
    assert "access definitions --out /var/lib/kabuto/broker/definitions.json" in setup["command"][0]
    assert "access provision --no-broker" in setup["command"][0]
    assert "import_definitions /var/lib/kabuto/broker/definitions.json" in users["command"][0]
    assert users["depends_on"]["setup"]["condition"] == "service_completed_successfully"
    for name in (*AGENT_IDS, "demo"):
        env = services()[name]["environment"]
        assert env["KABUTO_AGENT_CREDENTIALS"] == "1", name
        assert "guest" not in env["KABUTO_AMQP_URL"] and "postgres@" not in env["KABUTO_DATABASE_URL"], name
        assert services()[name]["depends_on"]["broker-users"]["condition"] == "service_completed_successfully"
