"""Replay mode: the same recorded input, replayed twice from scratch, gives identical alerts."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from datetime import timedelta
from pathlib import Path

import orjson

from hitrun.streams.publisher import publish, publish_watermarks
from hitrun.streams.simulate import GroundTruth, SimMessage, TrafficShape, generate
from tests.integration.harness import drain, settings_of, start_worker, unique_env, wait_for

RECORDED = list(generate(TrafficShape(seed=21, malformed_ratio=0.0), 1500, GroundTruth()))
END = max(m.occurred_at for m in RECORDED) + timedelta(days=400)


def replay_once(kafka_bootstrap: str, tmp_path: Path, recorded: list[SimMessage]) -> dict:
    env = unique_env(
        kafka_bootstrap,
        tmp_path,
        HITRUN_CLOCK_MODE="replay",
        HITRUN_PARTITIONS="3",
        HITRUN_STRIKE_THRESHOLD="1",  # the recorded day has few repeat offenders
    )
    settings = settings_of(env)
    worker = start_worker(env, tmp_path, name=f"replay-{env['HITRUN_APP_ID']}")
    try:
        asyncio.run(publish(settings, recorded))
        marks = asyncio.run(publish_watermarks(settings, END, source="test"))
        total = len(recorded) + marks

        def done() -> bool:
            return worker.metric("hitrun_input_events_total", outcome="processed") >= total

        wait_for(done, 90, "the replay to be processed")
        # Timers fired by the final watermark publish after the last input is counted.
        wait_for(lambda: worker.metric("hitrun_open_checkouts") == 0, 30, "every order to close")
        streams: dict[str, dict[int, list[bytes]]] = {}
        for topic in settings.output_topics.values():
            expected = int(
                sum(
                    worker.metric("hitrun_alerts_total", type=t) for t in _types_of(topic, settings)
                )
            )
            records = drain(kafka_bootstrap, topic, expected=expected)
            by_partition: dict[int, list[bytes]] = defaultdict(list)
            for r in records:
                by_partition[r.partition].append(r.value)
            streams[topic.rsplit(".", 1)[1]] = dict(by_partition)
        return streams
    finally:
        worker.stop()


def _types_of(topic: str, settings) -> tuple[str, ...]:  # type: ignore[no-untyped-def]
    if topic == settings.topic_reminders:
        return ("payment_reminder",)
    if topic == settings.topic_strikes:
        return ("order_expired", "strike_recorded", "strike_reversed", "payment_recovered")
    if topic == settings.topic_retention:
        return (
            "first_purchase_risk",
            "single_purchase",
            "early_churn",
            "customer_returned",
            "inquiry_only",
        )
    return ("customer_blacklisted", "customer_unblacklisted")


def test_replaying_the_same_input_twice_gives_byte_identical_alert_streams(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    first = replay_once(kafka_bootstrap, tmp_path / "a", RECORDED)
    second = replay_once(kafka_bootstrap, tmp_path / "b", RECORDED)
    assert sum(len(v) for p in first["reminders"].values() for v in [p]) > 10
    assert sum(len(p) for p in first["strikes"].values()) > 10
    assert sum(len(p) for p in first["blacklist"].values()) >= 1
    retention = [orjson.loads(v)["type"] for p in first["retention"].values() for v in p]
    assert {"first_purchase_risk", "single_purchase", "inquiry_only"} <= set(retention)
    assert first == second
