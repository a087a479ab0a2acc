"""Shared moves of the integration tests: unique names, a worker, scraping and draining topics."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from dev.worker import WorkerProcess, topic_env
from streams.config import Settings


def unique_env(bootstrap: str, data_dir: Path, **overrides: str) -> dict[str, str]:
    """HITRUN_* variables giving this test its own app id, topics and state."""
    tag = uuid.uuid4().hex[:10]
    env = {
        "HITRUN_KAFKA_BOOTSTRAP": bootstrap,
        "HITRUN_APP_ID": f"t-{tag}",
        **topic_env(f"t-{tag}"),
        "HITRUN_PARTITIONS": "4",
        "HITRUN_DATA_DIR": str(data_dir / "state"),
        "HITRUN_COMMIT_INTERVAL": "200ms",
    }
    env.update(overrides)
    return env


def settings_of(env: dict[str, str]) -> Settings:
    return Settings.from_env(env)


def start_worker(env: dict[str, str], tmp_path: Path, name: str = "worker") -> WorkerProcess:
    return WorkerProcess(env, tmp_path / f"{name}.log").start()


def metric_sum(worker: WorkerProcess, name: str, **labels: str) -> float:
    """Sum of the samples `name` on the worker whose labels include `labels`."""
    return worker.metric(name, **labels)


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def drain(bootstrap: str, topic: str, expected: int, timeout: float = 30.0) -> list[ConsumerRecord]:
    """Every record of `topic` from the beginning, read committed, once `expected` have arrived."""

    async def run() -> list[ConsumerRecord]:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            isolation_level="read_committed",
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            partitions = consumer.partitions_for_topic(topic)
            if partitions is None:
                await consumer._client.force_metadata_update()
                partitions = consumer.partitions_for_topic(topic) or set()
            tps = [TopicPartition(topic, p) for p in sorted(partitions)]
            if not tps:
                return []  # the topic does not exist
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            records: list[ConsumerRecord] = []
            deadline = time.monotonic() + timeout
            while len(records) < expected and time.monotonic() < deadline:
                batch = await consumer.getmany(timeout_ms=500)
                for part in batch.values():
                    records.extend(part)
            # A short extra read catches anything beyond what was expected.
            for part in (await consumer.getmany(timeout_ms=500)).values():
                records.extend(part)
            return records
        finally:
            await consumer.stop()

    return asyncio.run(run())
