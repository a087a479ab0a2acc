"""Through a real broker: every input message is processed or dead-lettered, never lost."""

from __future__ import annotations

import asyncio
import base64
from collections import Counter
from pathlib import Path

import orjson

from hitrun.streams.publisher import Delivery, publish
from hitrun.streams.simulate import (
    MALFORMATIONS,
    SIMULATED_LATENESS,
    GroundTruth,
    TrafficShape,
    generate,
)
from tests.integration.harness import (
    drain,
    metric_sum,
    settings_of,
    start_worker,
    unique_env,
    wait_for,
)

SENT = 1500


def test_processed_plus_dead_lettered_equals_sent_and_each_letter_is_complete(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    env = unique_env(kafka_bootstrap, tmp_path, HITRUN_ALLOWED_LATENESS=SIMULATED_LATENESS)
    settings = settings_of(env)
    worker = start_worker(env, tmp_path)
    try:
        truth = GroundTruth()
        deliveries: list[Delivery] = []
        shape = TrafficShape(
            seed=11, malformed_ratio=0.08, max_message_bytes=settings.max_message_bytes
        )
        asyncio.run(publish(settings, generate(shape, SENT, truth), deliveries=deliveries))
        assert len(deliveries) == SENT
        malformed = sum(truth.malformed.values())
        assert all(truth.malformed[r] >= 3 for r in MALFORMATIONS), truth.malformed

        def settled() -> bool:
            done = metric_sum(worker, "hitrun_input_events_total", outcome="processed")
            dead = metric_sum(worker, "hitrun_input_events_total", outcome="dead_lettered")
            return done + dead >= SENT

        wait_for(settled, 60, "every message to be processed or dead-lettered")
        processed = metric_sum(worker, "hitrun_input_events_total", outcome="processed")
        dead = metric_sum(worker, "hitrun_input_events_total", outcome="dead_lettered")
        assert processed + dead == SENT
        assert dead == malformed
        assert processed == SENT - malformed
        for reason in MALFORMATIONS:
            assert (
                metric_sum(worker, "hitrun_dead_letters_total", reason=reason)
                == truth.malformed[reason]
            )

        letters = drain(kafka_bootstrap, settings.topic_dead_letters, expected=malformed)
        assert len(letters) == malformed
        sent_at = {(d.topic, d.partition, d.offset): d.message for d in deliveries}
        reasons: Counter[str] = Counter()
        for record in letters:
            letter = orjson.loads(record.value)
            source = letter["source"]
            original = sent_at[(source["topic"], source["partition"], source["offset"])]
            assert original.label == f"malformed:{letter['reason']}"
            assert base64.b64decode(letter["value_b64"]) == original.value
            expected_key = None if original.key is None else base64.b64encode(original.key).decode()
            assert letter["key_b64"] == expected_key
            assert letter["detail"]
            reasons[letter["reason"]] += 1
        assert reasons == truth.malformed
    finally:
        worker.stop()
