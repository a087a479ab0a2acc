"""Events put in the wrong partition (librdkafka's CRC32) reach their customer's partition."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
from aiokafka import AIOKafkaProducer

from hitrun.streams.partitioning import partition_for_key
from hitrun.streams.progress import is_mark
from hitrun.streams.publisher import Delivery, publish
from hitrun.streams.simulate import SIMULATED_LATENESS, GroundTruth, TrafficShape, generate
from hitrun.streams.topics import ensure_topics
from tests.integration.harness import (
    checkout,
    drain,
    metric_sum,
    payment,
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

        # The reroute topic also carries the workers' progress marks (no key).
        records = drain(kafka_bootstrap, settings.reroute_topic, expected=len(misplaced) + 4 * n)
        rerouted = [r for r in records if not is_mark(r.headers or ())]
        assert len(rerouted) == len(misplaced)
        assert all(r.key is None for r in records if is_mark(r.headers or ()))
        for record in rerouted:
            assert record.partition == partition_for_key(record.key, n)
        assert sorted(r.value for r in rerouted) == sorted(d.message.value for d in misplaced)
    finally:
        worker.stop()


BACKLOG = 5000


def test_a_payment_misplaced_behind_a_backlog_is_read_before_its_deadline_fires(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """The buyer's partition is read to its end at once; the partition its payment was put
    in has a backlog to read first. The buyer's deadline waits for that partition's
    progress marks, so the payment meets it: no expiry, no strike, nothing to reverse."""
    env = unique_env(kafka_bootstrap, tmp_path)
    settings = settings_of(env)
    n = settings.partitions
    home = partition_for_key(b"mb-buyer", n)
    other = (home + 1) % n
    neighbour = next(
        f"mb-unpaid-{i}"
        for i in range(1000)
        if partition_for_key(f"mb-unpaid-{i}".encode(), n) == home
    )
    elsewhere = [
        f"mb-backlog-{i}"
        for i in range(20 * BACKLOG)
        if partition_for_key(f"mb-backlog-{i}".encode(), n) == other
    ][:BACKLOG]
    four_hours_ago = datetime.now(UTC) - timedelta(hours=4)

    def at(body: dict[str, object], minutes: float) -> bytes:
        moment = four_hours_ago + timedelta(minutes=minutes)
        return orjson.dumps({**body, "occurred_at": moment.isoformat()})

    # (topic, partition, key, value), in the order written, all before the worker starts.
    records = [
        # Card checkouts an hour before their deadlines, three hours ago.
        (settings.topic_checkouts, home, "mb-buyer", at(checkout("mb-buyer", "o-buyer"), 60)),
        (settings.topic_checkouts, home, neighbour, at(checkout(neighbour, "o-unpaid"), 60)),
        # Another partition's backlog: payments of its own customers, four hours ago...
        *[
            (settings.topic_payments, other, c, at(payment(c, f"o-{c}"), i / 1000))
            for i, c in enumerate(elsewhere)
        ],
        # ...then the buyer's payment, 30 minutes after the checkout, in the wrong partition.
        (settings.topic_payments, other, "mb-buyer", at(payment("mb-buyer", "o-buyer"), 90)),
    ]

    async def write() -> None:
        await ensure_topics(settings)
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=20)
        await producer.start()
        try:
            sent = [
                await producer.send(topic, value, key=key.encode(), partition=partition)
                for topic, partition, key, value in records
            ]
            await asyncio.gather(*sent)
        finally:
            await producer.stop()

    asyncio.run(write())
    worker = start_worker(env, tmp_path)

    def struck() -> dict[str, list[str]]:
        found = drain(kafka_bootstrap, settings.topic_strikes, 1, timeout=2)
        by_customer: dict[str, list[str]] = {}
        for record in found:
            alert = orjson.loads(record.value)
            by_customer.setdefault(alert["customer_id"], []).append(alert["type"])
        return by_customer

    try:
        # The neighbour's expiry shows the deadlines have fired; the payment is read by then.
        wait_for(lambda: neighbour in struck(), 120, "the unpaid neighbour's order to expire")
        wait_for(
            lambda: (
                metric_sum(
                    worker,
                    "hitrun_input_events_total",
                    topic=settings.reroute_topic,
                    outcome="processed",
                )
                == 1
            ),
            30,
            "the buyer's payment to be applied",
        )
    finally:
        worker.stop()
    strikes = struck()
    assert strikes[neighbour] == ["order_expired"]
    assert "mb-buyer" not in strikes
    assert drain(kafka_bootstrap, settings.topic_dead_letters, 0, timeout=2) == []
