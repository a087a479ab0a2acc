"""docker-compose.yml wires Kafka, the worker and Prometheus (checked as a file: no engine here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def test_compose_has_kafka_worker_and_prometheus() -> None:
    services = compose()["services"]
    assert {"kafka", "worker", "prometheus"} <= set(services)
    assert services["kafka"]["image"].startswith("apache/kafka:4.")


def test_kafka_runs_in_kraft_mode_with_single_node_internal_topic_settings() -> None:
    env = compose()["services"]["kafka"]["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == 1
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == 1
    assert str(env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"]).lower() == "false"


def test_worker_is_built_here_and_points_at_the_brokers_internal_listener() -> None:
    services = compose()["services"]
    worker = services["worker"]
    assert worker["build"] == "."
    assert (ROOT / "Dockerfile").is_file()
    kafka_env = services["kafka"]["environment"]
    internal = next(
        a for a in kafka_env["KAFKA_ADVERTISED_LISTENERS"].split(",") if a.startswith("INTERNAL://")
    )
    assert worker["environment"]["HITRUN_KAFKA_BOOTSTRAP"] == internal.removeprefix("INTERNAL://")
    assert worker["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert "6066:6066" in worker["ports"]
    assert worker["environment"]["HITRUN_WEB_PORT"] == "6066"


def test_prometheus_scrapes_the_worker_metrics_port() -> None:
    services = compose()["services"]
    mounts = services["prometheus"]["volumes"]
    config_path = next(m.split(":")[0] for m in mounts if m.endswith("prometheus.yml:ro"))
    config = yaml.safe_load((ROOT / config_path).read_text())
    targets = [
        t for job in config["scrape_configs"] for s in job["static_configs"] for t in s["targets"]
    ]
    assert "worker:6066" in targets
    assert "9090:9090" in services["prometheus"]["ports"]


def test_every_worker_is_restarted_when_it_stops_itself_after_a_failed_batch() -> None:
    services = compose()["services"]
    workers = [s for s in services.values() if s.get("command") == ["worker"]]
    assert len(workers) == 2
    assert all(w.get("restart") in {"on-failure", "unless-stopped", "always"} for w in workers)
