"""A message that cannot be applied is dead-lettered and the partition goes on; with
HITRUN_ON_PROCESSING_ERROR=stop the worker stops before the batch is committed instead."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import orjson
from aiokafka import AIOKafkaProducer

from hitrun.agents.customer import EXIT_BATCH_FAILED
from hitrun.dev.worker import WorkerProcess
from hitrun.streams.config import Settings
from hitrun.streams.partitioning import partition_for_key
from hitrun.streams.topics import ensure_topics
from tests.integration.harness import (
    checkout,
    committed_offsets,
    drain,
    send,
    settings_of,
    unique_env,
    wait_for,
)

CORRUPT_CUSTOMER = b"cust-corrupt"


async def plant_corrupt_state(settings: Settings) -> None:
    """A customer state in the table's changelog that no hitrun wrote (not even JSON)."""
    await ensure_topics(settings)  # the changelog among them
    changelog = settings.changelog_topic
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(
            changelog,
            b"\xffnot a state",
            key=CORRUPT_CUSTOMER,
            partition=partition_for_key(CORRUPT_CUSTOMER, settings.partitions),
        )
    finally:
        await producer.stop()


def test_a_customer_whose_stored_state_is_corrupt_is_dead_lettered_and_the_rest_goes_on(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    env = unique_env(kafka_bootstrap, tmp_path)
    settings = settings_of(env)
    asyncio.run(plant_corrupt_state(settings))
    send(settings, settings.topic_checkouts, checkout(CORRUPT_CUSTOMER.decode(), "order-c"))
    send(settings, settings.topic_checkouts, checkout("cust-ok", "order-1"))
    with WorkerProcess(env, tmp_path / "worker.log") as worker:
        wait_for(
            lambda: (
                worker.metric("hitrun_input_events_total", outcome="processed") >= 1
                and worker.metric("hitrun_dead_letters_total", reason="processing_error") >= 1
            ),
            60,
            "the good checkout applied and the corrupt customer's dead-lettered",
        )
        letters = [
            orjson.loads(r.value)
            for r in drain(kafka_bootstrap, settings.topic_dead_letters, expected=1)
        ]
        wait_for(
            lambda: sum(asyncio.run(committed_offsets(settings)).values()) >= 2,
            20,
            "both input records to be committed",
        )
        assert worker.get("/readyz")[0] == 200
    assert [letter["reason"] for letter in letters] == ["processing_error"]
    assert "decode" in letters[0]["detail"].lower() or "Error" in letters[0]["detail"]


def test_in_stop_mode_a_failing_message_stops_the_worker_without_committing_it(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    env = unique_env(kafka_bootstrap, tmp_path, HITRUN_ON_PROCESSING_ERROR="stop")
    settings = settings_of(env)
    asyncio.run(plant_corrupt_state(settings))
    send(settings, settings.topic_checkouts, checkout(CORRUPT_CUSTOMER.decode(), "order-c"))

    worker = WorkerProcess(env, tmp_path / "worker.log").launch()
    try:
        assert worker.process is not None
        code = worker.process.wait(timeout=120)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the worker kept running:\n{worker.log_tail()}") from None
    finally:
        worker.stop()
    log = worker.log_path.read_text(errors="replace")
    assert code == EXIT_BATCH_FAILED, log[-4000:]
    assert "batch failed; stopping without committing its offsets" in log
    committed = asyncio.run(committed_offsets(settings))
    inputs = set(settings.input_topics)
    assert not {tp: o for tp, o in committed.items() if tp.topic in inputs and o > 0}, committed
