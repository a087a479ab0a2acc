"""Live-mode timer lateness: when reminders and expiries reach a consumer, minus their due time."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench.throughput import cluster, own_run
from hitrun.dev.worker import WorkerProcess, topic_env
from hitrun.streams.config import Settings
from hitrun.streams.partitioning import partition_for_key


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(settings: Settings, customers: int, spread_s: float) -> list[float]:
    # Assigned, not subscribed: a group join would delay the first reads by seconds.
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    consumer.assign(
        [
            TopicPartition(topic, p)
            for topic in (settings.topic_reminders, settings.topic_strikes)
            for p in range(settings.partitions)
        ]
    )
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=0)
    await producer.start()
    late: list[float] = []

    async def read() -> None:
        # Reads while the checkouts are still being sent, so each alert is timed on arrival.
        deadline = time.monotonic() + 120
        while len(late) < 2 * customers and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=100)
            received = time.time()
            for records in batch.values():
                for record in records:
                    due = datetime.fromisoformat(orjson.loads(record.value)["occurred_at"])
                    late.append(received - due.timestamp())

    reader = asyncio.create_task(read())
    try:
        for n in range(customers):
            key = f"cust-lat-{n}".encode()
            body = {
                "type": "checkout_confirmed",
                "event_id": f"e-{n}",
                "customer_id": key.decode(),
                "shop_id": "shop-1",
                "occurred_at": datetime.now(UTC).isoformat(),
                "order_id": f"o-{n}",
                "total": {"amount_minor": 1000, "currency": "IDR"},
                "payment_method": "card",
            }
            await producer.send(
                settings.topic_checkouts,
                orjson.dumps(body),
                key=key,
                partition=partition_for_key(key, settings.partitions),
            )
            await asyncio.sleep(spread_s / customers)
        await producer.flush()
        await reader
        return late
    finally:
        await producer.stop()
        await consumer.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--customers", type=int, default=400)
    parser.add_argument(
        "--spread", type=float, default=20.0, help="seconds over which checkouts arrive"
    )
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="hitrun-lateness-") as tmp,
        cluster(Path(tmp)) as bootstrap,
    ):
        tag = uuid.uuid4().hex[:8]
        env = own_run(
            {
                "HITRUN_KAFKA_BOOTSTRAP": bootstrap,
                "HITRUN_APP_ID": f"lat-{tag}",
                "HITRUN_DATA_DIR": str(Path(tmp) / "state"),
                "HITRUN_PAYMENT_WINDOWS": "card=10s",
                "HITRUN_REMINDERS_AFTER_CHECKOUT": "4s",
                "HITRUN_REMINDERS_BEFORE_DEADLINE": "none",
                "HITRUN_QUIET_HOURS": "off",
                "HITRUN_STRIKE_THRESHOLD": "100",
                **topic_env(f"lat-{tag}"),
            }
        )
        settings = Settings.from_env(env)
        with WorkerProcess(env, Path(tmp) / "worker.log") as worker:
            late = asyncio.run(run(settings, args.customers, args.spread))
            with contextlib.suppress(Exception):
                count = worker.metric("hitrun_timer_lateness_seconds_count")
                total = worker.metric("hitrun_timer_lateness_seconds_sum")
                print(
                    f"lateness: worker histogram mean {total / count:.3f}s over {int(count)} timers"
                )
    print(f"lateness: {len(late)} alerts read by a consumer (reminders + expiries)")
    p50, p99 = quantile(late, 0.5), quantile(late, 0.99)
    print(
        f"lateness: due -> consumer p50 {p50:.3f}s  p99 {p99:.3f}s  "
        f"max {max(late):.3f}s  mean {statistics.fmean(late):.3f}s"
    )


if __name__ == "__main__":
    main()
