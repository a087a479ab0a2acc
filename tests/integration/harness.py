"""Shared moves of the integration tests: unique names, a worker, scraping and draining topics."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from hitrun.dev.worker import RunTopics, WorkerProcess, topic_env
from hitrun.streams.auth import OPERATOR, SUPPORT, new_token
from hitrun.streams.config import Settings
from hitrun.streams.partitioning import partition_for_key

# Tokens every test worker admits: an operator's and a support agent's.
OPERATOR_TOKEN, _OPERATOR_LINE = new_token("ops-alice", OPERATOR)
SUPPORT_TOKEN, _SUPPORT_LINE = new_token("support-bob", SUPPORT)


# The runs a test made (unique_env's, and those given to `own_run`), for the
# conftest to delete their topics after each test.
RUNS = RunTopics()
# `env`, whose topics (those starting with its app id) go when the test ends.
own_run = RUNS.own


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
        # The replay tool and the workers share it; watermarks are signed with it.
        "HITRUN_WATERMARK_KEY": f"test-key-{tag}",
        "HITRUN_ADMIN_KEY": f"admin-key-{tag}",
        "HITRUN_INTERNAL_KEY": f"internal-key-{tag}",
        "HITRUN_TOKENS": f"{_OPERATOR_LINE},{_SUPPORT_LINE}",
    }
    env.update(overrides)
    return own_run(env)


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


def now_text() -> str:
    return datetime.now(UTC).isoformat()


def checkout(customer: str, order: str) -> dict[str, object]:
    return {
        "type": "checkout_confirmed",
        "event_id": f"{order}-co",
        "customer_id": customer,
        "shop_id": "shop-1",
        "occurred_at": now_text(),
        "order_id": order,
        "total": {"amount_minor": 5000, "currency": "IDR"},
        "payment_method": "card",
    }


def payment(customer: str, order: str) -> dict[str, object]:
    return {
        "type": "payment_attempted",
        "event_id": f"{order}-pay",
        "customer_id": customer,
        "shop_id": "shop-1",
        "occurred_at": now_text(),
        "order_id": order,
        "status": "succeeded",
        "amount": {"amount_minor": 5000, "currency": "IDR"},
        "method": "card",
    }


def send(settings: Settings, topic: str, body: dict[str, object]) -> None:
    async def run() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
        await producer.start()
        try:
            key = str(body["customer_id"]).encode()
            await producer.send_and_wait(
                topic,
                orjson.dumps(body),
                key=key,
                partition=partition_for_key(key, settings.partitions),
            )
        finally:
            await producer.stop()

    asyncio.run(run())


def alerts(settings: Settings, topic: str, expected: int, timeout: float = 20) -> list[dict]:
    return [
        orjson.loads(r.value) for r in drain(settings.kafka_bootstrap, topic, expected, timeout)
    ]


async def committed_offsets(settings: Settings) -> dict[TopicPartition, int]:
    """The app's consumer group's committed offsets (those it has committed at all)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        found = await admin.list_consumer_group_offsets(settings.app_id)
    finally:
        await admin.close()
    return {tp: meta.offset for tp, meta in found.items() if meta.offset >= 0}
