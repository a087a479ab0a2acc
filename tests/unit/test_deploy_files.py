"""The Prometheus rules, the Grafana dashboard and their wiring in docker-compose.yml."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is missing: apt-get install prometheus (.ci/run does)")
    return found


def test_alert_rules_pass_promtool() -> None:
    result = subprocess.run(
        [promtool(), "check", "rules", str(DEPLOY / "prometheus" / "rules.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rules_cover_lag_dead_letters_silence_lateness_and_readiness() -> None:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "rules.yml").read_text())
    exprs = {r["alert"]: r["expr"] for g in rules["groups"] for r in g["rules"]}
    assert "hitrun_consumer_lag_messages" in exprs["HitrunConsumerLagGrowing"]
    assert "hitrun_dead_letters_total" in exprs["HitrunDeadLetterRateHigh"]
    assert "hitrun_input_events_total" in exprs["HitrunNoInput"]
    assert "0.99" in exprs["HitrunTimerLatenessHigh"] and "> 5" in exprs["HitrunTimerLatenessHigh"]
    assert "hitrun_ready" in exprs["HitrunWorkerNotReady"]


def test_prometheus_config_loads_the_rules_and_scrapes_every_worker() -> None:
    config_text = (DEPLOY / "prometheus" / "prometheus.yml").read_text()
    config = yaml.safe_load(config_text)
    assert config["rule_files"] == ["/etc/prometheus/rules.yml"]
    services = compose()["services"]
    workers = [name for name in services if name.startswith("worker")]
    assert len(workers) >= 2
    targets = {
        t for job in config["scrape_configs"] for s in job["static_configs"] for t in s["targets"]
    }
    assert targets == {f"{w}:6066" for w in workers}
    mounts = services["prometheus"]["volumes"]
    assert "./deploy/prometheus/rules.yml:/etc/prometheus/rules.yml:ro" in mounts


def test_grafana_is_provisioned_with_the_prometheus_source_and_the_dashboard() -> None:
    grafana = compose()["services"]["grafana"]
    assert "3000:3000" in grafana["ports"]
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in grafana["volumes"]
    assert "./deploy/grafana/dashboards:/var/lib/grafana/dashboards:ro" in grafana["volumes"]
    source = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text()
    )
    assert source["datasources"][0]["url"] == "http://prometheus:9090"
    provider = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/hitrun.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"


def test_dashboard_has_the_panels_operators_need() -> None:
    dashboard = json.loads((DEPLOY / "grafana/dashboards/hitrun.json").read_text())
    exprs = {
        panel["title"]: " ".join(t["expr"] for t in panel["targets"])
        for panel in dashboard["panels"]
    }
    wanted = {
        "hitrun_input_events_total": "throughput",
        "hitrun_consumer_lag_messages": "lag",
        "hitrun_dead_letters_total": "dead letters",
        "hitrun_alerts_total": "alerts",
        "hitrun_open_checkouts": "open checkouts",
        "hitrun_blacklisted_customers": "blacklisted",
        "hitrun_timer_lateness_seconds_bucket": "lateness",
        "hitrun_ready": "readiness",
        "hitrun_late_events_total": "late events",
        "hitrun_processing_errors_total": "processing errors",
        "hitrun_loop_seconds_total": "where the worker's time goes",
    }
    for metric, what in wanted.items():
        assert any(metric in e for e in exprs.values()), what
    assert all(p["datasource"]["uid"] == "prometheus" for p in dashboard["panels"])
    # A rerouted message is processed again from the reroute topic: never summed twice.
    throughput = next(e for t, e in exprs.items() if t.startswith("Throughput"))
    assert 'outcome!="rerouted"' in throughput
