"""Operators' view of a worker: readiness, exact metric values, promtool, a real Prometheus."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from hitrun.dev.worker import WorkerProcess, free_port
from hitrun.streams.config import Settings
from hitrun.streams.partitioning import partition_for_key
from tests.integration.harness import settings_of, start_worker, unique_env, wait_for
from tests.integration.test_unpaid_live import LIVE_POLICY, checkout

NOT_JSON = 7
CHECKOUTS = 3


def _publish_known_traffic(settings: Settings) -> None:
    import orjson
    from aiokafka import AIOKafkaProducer

    async def run() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
        await producer.start()
        try:
            for n in range(CHECKOUTS):
                key = f"cust-ops-{n}".encode()
                body = checkout(key.decode(), f"o-ops-{n}")
                await producer.send_and_wait(
                    settings.topic_checkouts,
                    orjson.dumps(body),
                    key=key,
                    partition=partition_for_key(key, settings.partitions),
                )
            for n in range(NOT_JSON):
                await producer.send_and_wait(
                    settings.topic_payments, b"{oops", key=f"k{n}".encode()
                )
        finally:
            await producer.stop()

    asyncio.run(run())


def test_readyz_is_503_until_partitions_are_assigned_then_200(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    worker = WorkerProcess(unique_env(kafka_bootstrap, tmp_path), tmp_path / "worker.log").launch()
    try:
        seen: list[int] = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and 200 not in seen:
            status, body = worker.get("/readyz")
            if status:
                seen.append(status)
                if status == 503:
                    assert json.loads(body)["reason"]
            time.sleep(0.05)
        assert 503 in seen and seen[-1] == 200
        assert seen.index(503) < seen.index(200)
        assert worker.get("/healthz")[0] == 200
    finally:
        worker.stop()


def test_metrics_count_exactly_the_known_traffic_and_pass_promtool(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    env = unique_env(kafka_bootstrap, tmp_path, **LIVE_POLICY | {"HITRUN_STRIKE_THRESHOLD": "10"})
    settings = settings_of(env)
    worker = start_worker(env, tmp_path)
    try:
        _publish_known_traffic(settings)
        wait_for(
            lambda: worker.metric("hitrun_alerts_total", type="order_expired") >= CHECKOUTS,
            30,
            "the checkouts to expire",
        )
        time.sleep(6)  # the lag gauge refreshes every 5 s
        assert worker.metric("hitrun_dead_letters_total", reason="not_json") == NOT_JSON
        assert worker.metric("hitrun_input_events_total", outcome="dead_lettered") == NOT_JSON
        assert (
            worker.metric(
                "hitrun_input_events_total",
                topic=settings.topic_checkouts,
                type="checkout_confirmed",
                outcome="processed",
            )
            == CHECKOUTS
        )
        assert worker.metric("hitrun_alerts_total", type="order_expired") == CHECKOUTS
        assert worker.metric("hitrun_alerts_total", type="payment_reminder") >= 1
        assert worker.metric("hitrun_open_checkouts") == 0
        assert worker.metric("hitrun_timer_lateness_seconds_count") >= CHECKOUTS
        assert worker.metric("hitrun_consumer_lag_messages", topic=settings.topic_checkouts) == 0
        assert worker.metric("hitrun_ready") == 1
        # The loop's time by phase: it waited for records, applied and published them.
        for phase in ("fetch", "apply", "publish", "store"):
            assert worker.metric("hitrun_loop_seconds_total", phase=phase) > 0, phase
        status, text = worker.get("/metrics")
        assert status == 200
        promtool = shutil.which("promtool")
        if promtool is None:
            pytest.fail("promtool is missing: apt-get install prometheus (.ci/run does)")
        check = subprocess.run(
            [promtool, "check", "metrics"], input=text, capture_output=True, check=False
        )
        # promtool exits 0 when the exposition parses; lint remarks about Faust's own
        # metric names go to its output without failing it.
        assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()
    finally:
        worker.stop()


def test_a_real_prometheus_scrapes_the_worker_and_answers_queries(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is missing: apt-get install prometheus (.ci/run does)")
    env = unique_env(kafka_bootstrap, tmp_path)
    settings = settings_of(env)
    worker = start_worker(env, tmp_path)
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n"
        "scrape_configs:\n  - job_name: hitrun\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{worker.web_port}']\n"
    )
    log = (tmp_path / "prometheus.log").open("wb")
    server = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        _publish_known_traffic(settings)
        wait_for(lambda: worker.metric("hitrun_dead_letters_total") == NOT_JSON, 30, "dead letters")
        query = urllib.parse.quote('sum(hitrun_dead_letters_total{reason="not_json"})')

        def prometheus_sees_them() -> bool:
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/api/v1/query?query={query}", timeout=2
                ) as r:
                    result = json.loads(r.read())["data"]["result"]
            except OSError:
                return False
            return bool(result) and float(result[0]["value"][1]) == NOT_JSON

        wait_for(prometheus_sees_them, 60, "Prometheus to scrape the dead-letter count")
    finally:
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
        worker.stop()
