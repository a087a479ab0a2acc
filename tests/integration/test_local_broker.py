"""The local broker is a real Kafka: produce, consume, transactions, and a clean stop."""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from hitrun.dev.localkafka import LocalKafka, free_port
from tests.integration.harness import own_run


def own_topic(bootstrap: str) -> str:
    """A topic name of this test's own, deleted when it ends (tests/integration/conftest.py)."""
    topic = f"t-{uuid.uuid4().hex[:8]}"
    own_run({"HITRUN_KAFKA_BOOTSTRAP": bootstrap, "HITRUN_APP_ID": topic})
    return topic


async def _create(bootstrap: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, 1)])
    finally:
        await admin.close()


async def _read_all(bootstrap: str, topic: str, isolation: str) -> list[bytes]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, isolation_level=isolation, enable_auto_commit=False
    )
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        batch = await consumer.getmany(tp, timeout_ms=3000)
        return [r.value for r in batch.get(tp, [])]
    finally:
        await consumer.stop()


def test_broker_round_trips_a_message(kafka_bootstrap: str) -> None:
    topic = own_topic(kafka_bootstrap)

    async def run() -> list[bytes]:
        await _create(kafka_bootstrap, topic)
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait(topic, b"hello", key=b"k")
        finally:
            await producer.stop()
        return await _read_all(kafka_bootstrap, topic, "read_uncommitted")

    assert asyncio.run(run()) == [b"hello"]


def test_transactions_work_on_the_single_node(kafka_bootstrap: str) -> None:
    topic = own_topic(kafka_bootstrap)

    async def run() -> list[bytes]:
        await _create(kafka_bootstrap, topic)
        producer = AIOKafkaProducer(
            bootstrap_servers=kafka_bootstrap, transactional_id=f"tx-{uuid.uuid4().hex[:8]}"
        )
        await producer.start()
        try:
            async with producer.transaction():
                await producer.send(topic, b"kept")
            await producer.begin_transaction()
            await producer.send(topic, b"aborted")
            await producer.abort_transaction()
        finally:
            await producer.stop()
        return await _read_all(kafka_bootstrap, topic, "read_committed")

    assert asyncio.run(run()) == [b"kept"]


def test_a_stopped_broker_leaves_no_process_and_restarts_on_its_data(tmp_path: Path) -> None:
    broker = LocalKafka(tmp_path / "kafka", port=free_port())
    topic = f"t-{uuid.uuid4().hex[:8]}"
    try:
        broker.start()
        asyncio.run(_create(broker.bootstrap, topic))
        pid = broker.pid
        assert pid is not None
    finally:
        broker.stop()
    assert not Path(f"/proc/{pid}").exists()
    assert not broker.pid_file.exists()

    again = LocalKafka(tmp_path / "kafka", port=free_port())
    try:
        again.start()

        async def topics() -> list[str]:
            admin = AIOKafkaAdminClient(bootstrap_servers=again.bootstrap)
            await admin.start()
            try:
                return await admin.list_topics()
            finally:
                await admin.close()

        assert topic in asyncio.run(topics())
    finally:
        again.stop()
    assert again.pid is None
    assert _jvms_using(tmp_path) == []


def _jvms_using(path: Path) -> list[int]:
    """Pids of Kafka JVMs whose command line mentions `path`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="ignore")
        except OSError:
            continue
        if "kafka.Kafka" in cmdline and str(path) in cmdline:
            found.append(int(entry))
    return found
