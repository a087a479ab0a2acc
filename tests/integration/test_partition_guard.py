"""Events put in the wrong partition (librdkafka's CRC32) reach their customer's partition."""

from __future__ import annotations

import asyncio
from pathlib import Path

from hitrun.streams.partitioning import partition_for_key
from hitrun.streams.publisher import Delivery, publish
from hitrun.streams.simulate import SIMULATED_LATENESS, GroundTruth, TrafficShape, generate
from tests.integration.harness import (
    drain,
    metric_sum,
    settings_of,
    start_worker,
    unique_env,
    wait_for,
)

SENT = 600


def test_misplaced_events_are_rerouted_to_their_murmur2_partition_before_processing(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    env = unique_env(kafka_bootstrap, tmp_path, HITRUN_ALLOWED_LATENESS=SIMULATED_LATENESS)
    settings = settings_of(env)
    n = settings.partitions
    worker = start_worker(env, tmp_path)
    try:
        deliveries: list[Delivery] = []
        shape = TrafficShape(seed=5, malformed_ratio=0.0)
        asyncio.run(
            publish(
                settings,
                generate(shape, SENT, GroundTruth()),
                partitioner="crc32",
                deliveries=deliveries,
            )
        )
        misplaced = [
            d
            for d in deliveries
            if d.message.key is not None and d.partition != partition_for_key(d.message.key, n)
        ]
        # With 4 partitions about three quarters of CRC32 choices differ from murmur2.
        assert len(misplaced) > SENT // 4

        def settled() -> bool:
            return metric_sum(worker, "hitrun_input_events_total", outcome="processed") >= SENT

        wait_for(settled, 60, "every event to be processed")
        assert metric_sum(worker, "hitrun_input_events_total", outcome="processed") == SENT
        assert metric_sum(worker, "hitrun_input_events_total", outcome="rerouted") == len(misplaced)
        assert metric_sum(
            worker, "hitrun_input_events_total", topic=settings.reroute_topic, outcome="processed"
        ) == len(misplaced)
        assert metric_sum(worker, "hitrun_input_events_total", outcome="dead_lettered") == 0

        rerouted = drain(kafka_bootstrap, settings.reroute_topic, expected=len(misplaced))
        assert len(rerouted) == len(misplaced)
        for record in rerouted:
            assert record.partition == partition_for_key(record.key, n)
        assert sorted(r.value for r in rerouted) == sorted(d.message.value for d in misplaced)
    finally:
        worker.stop()
