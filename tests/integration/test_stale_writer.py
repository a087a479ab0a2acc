"""State records a removed worker wrote after its successor's are not read back
(streams/fencing.py), from the changelog's tail with the store kept, or from the whole
changelog with the store lost.

The late records are written to the changelog here, as a worker stalled past its
session timeout would have sent them: the customer's state with its open order
renamed, under a writer token below the one the worker before it wrote with. The
same change under the worker's own token is read, so the test tells a token apart,
not any record written behind the workers' back.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from hitrun.agents.state import decode_state, encode_state, stamp_of, stamped
from hitrun.dev.worker import WorkerProcess
from hitrun.streams.config import Settings
from hitrun.streams.fencing import HEADER, token_of
from hitrun.streams.partitioning import partition_for_key
from tests.integration.harness import checkout, send, settings_of, unique_env, wait_for
from tests.integration.test_rocksdb_store import open_orders
from tests.integration.test_unpaid_live import LIVE_POLICY

STALE, OWN = "cust-stale-writer", "cust-own-writer"


def latest_records(settings: Settings, keys: list[bytes]) -> dict[bytes, tuple[bytes, int | None]]:
    """Each key's last value in the changelog, and its writer token."""

    async def run() -> dict[bytes, tuple[bytes, int | None]]:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap, auto_offset_reset="earliest"
        )
        await consumer.start()
        try:
            tps = [
                TopicPartition(settings.changelog_topic, partition_for_key(k, settings.partitions))
                for k in keys
            ]
            consumer.assign(list(set(tps)))
            ends = await consumer.end_offsets(list(set(tps)))
            found: dict[bytes, tuple[bytes, int | None]] = {}

            async def behind() -> bool:
                return any([await consumer.position(tp) < end for tp, end in ends.items()])

            while await behind():
                for records in (await consumer.getmany(timeout_ms=1000)).values():
                    for record in records:
                        if record.key in keys and record.value is not None:
                            found[record.key] = (record.value, token_of(record.headers))
            return found
        finally:
            await consumer.stop()

    return asyncio.run(run())


def write_late(settings: Settings, key: bytes, value: bytes, token: int) -> None:
    async def run() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait(
                settings.changelog_topic,
                value,
                key=key,
                partition=partition_for_key(key, settings.partitions),
                headers=[(HEADER, str(token).encode())],
            )
        finally:
            await producer.stop()

    asyncio.run(run())


def renamed(value: bytes, customer: str, order: str, new_name: str) -> bytes:
    """The stored state with its open order renamed, stamped as it was."""
    state = decode_state(value, customer)
    open_order = state.unpaid.open.pop(order)
    open_order.order_id = new_name
    state.unpaid.open[new_name] = open_order
    return stamped(stamp_of(value), encode_state(state))


def test_a_removed_workers_late_state_records_are_not_read_back(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    env = unique_env(
        kafka_bootstrap,
        tmp_path,
        **(LIVE_POLICY | {"HITRUN_PAYMENT_WINDOWS": "card=1h", "HITRUN_SESSION_TIMEOUT": "6s"}),
    )
    settings = settings_of(env)
    customers = [STALE, OWN]
    first = WorkerProcess(env, tmp_path / "first.log").start()
    try:
        for customer in customers:
            send(settings, settings.topic_checkouts, checkout(customer, f"order-{customer}"))
        wait_for(lambda: first.metric("hitrun_open_checkouts") == 2, 30, "both checkouts")
    finally:
        assert first.stop() == 0

    latest = latest_records(settings, [c.encode() for c in customers])
    for customer in customers:
        value, token = latest[customer.encode()]
        assert token is not None, f"{customer}'s state record names its writer"
        late = renamed(value, customer, f"order-{customer}", f"late-{customer}")
        # One late record below its writer's token (a removed worker's), one at it.
        write_late(settings, customer.encode(), late, token - 1 if customer == STALE else token)
    expected = {STALE: f"order-{STALE}", OWN: f"late-{OWN}"}

    # The store kept: the restart reads only the tail, which holds the late records.
    assert worker_reads(env, tmp_path / "second.log", customers) == (expected, 1)
    # The store lost: the whole changelog is read again.
    shutil.rmtree(Path(settings.data_dir) / settings.app_id)
    assert worker_reads(env, tmp_path / "third.log", customers) == (expected, 1)


def worker_reads(
    env: dict[str, str], log: Path, customers: list[str]
) -> tuple[dict[str, str], float]:
    """The open orders a worker started now recovers, and how many records it skipped."""
    worker = WorkerProcess(env, log).start()
    try:
        return open_orders(worker, customers), worker.metric(
            "hitrun_stale_state_records_skipped_total"
        )
    finally:
        assert worker.stop() == 0
