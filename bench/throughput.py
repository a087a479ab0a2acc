"""`make bench`: a plain aiokafka+orjson consumer vs the hitrun worker, on the same events."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer

from hitrun.dev.localkafka import LocalKafka
from hitrun.dev.worker import RunTopics, WorkerProcess, free_port, topic_env
from hitrun.streams.config import Settings
from hitrun.streams.publisher import publish
from hitrun.streams.simulate import SIMULATED_LATENESS, GroundTruth, TrafficShape, generate
from hitrun.streams.topics import ensure_topics

# The runs a bench made on `cluster`'s broker; `own_run(env)` gives `env`, whose
# topics (those starting with its app id) `cluster` deletes at its end.
RUNS = RunTopics()
own_run = RUNS.own


@contextlib.contextmanager
def cluster(workdir: Path) -> Iterator[str]:
    """A broker's bootstrap address: HITRUN_KAFKA_BOOTSTRAP's, or a local broker of the
    bench's own. On HITRUN_KAFKA_BOOTSTRAP's, the topics of every run given to `own_run`
    meanwhile are deleted at the end, so that benches do not pile them up there."""
    existing = os.environ.get("HITRUN_KAFKA_BOOTSTRAP")
    if existing:
        try:
            yield existing
        finally:
            RUNS.delete(on=existing)
        return
    with LocalKafka(workdir / "kafka", port=free_port(), controller_port=free_port()) as kafka:
        yield kafka.bootstrap


async def plain_consumer(settings: Settings, total: int) -> float:
    """Seconds a bare aiokafka consumer needs to fetch and orjson-decode `total` messages."""
    consumer = AIOKafkaConsumer(
        *settings.input_topics,
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=f"{settings.app_id}-baseline",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    seen = 0
    first = 0.0
    try:
        while seen < total:
            batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            for records in batch.values():
                if not first:
                    first = time.perf_counter()
                for record in records:
                    # The same malformed share the worker sees; decoding it fails here too.
                    with contextlib.suppress(orjson.JSONDecodeError):
                        orjson.loads(record.value)
                seen += len(records)
        return time.perf_counter() - first
    finally:
        await consumer.stop()


def hitrun_worker(env: dict[str, str], total: int, workdir: Path, timeout: float) -> float:
    """Seconds the hitrun worker needs from its first processed event to the last."""
    worker = WorkerProcess(env, workdir / "worker.log")
    with worker:
        first = 0.0
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done = worker.metric("hitrun_input_events_total", outcome="processed") + worker.metric(
                "hitrun_input_events_total", outcome="dead_lettered"
            )
            now = time.perf_counter()
            if done and not first:
                first = now
            if done >= total:
                return now - first
            time.sleep(0.5)
        raise TimeoutError(f"worker did not finish {total} events in {timeout}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--malformed-ratio", type=float, default=0.01)
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="hitrun-bench-") as tmp:
        workdir = Path(tmp)
        with cluster(workdir) as bootstrap:
            tag = uuid.uuid4().hex[:8]
            env = own_run(
                {
                    "HITRUN_KAFKA_BOOTSTRAP": bootstrap,
                    "HITRUN_APP_ID": f"bench-{tag}",
                    "HITRUN_PARTITIONS": str(args.partitions),
                    "HITRUN_DATA_DIR": str(workdir / "state"),
                    "HITRUN_ALLOWED_LATENESS": SIMULATED_LATENESS,
                    **topic_env(f"bench-{tag}"),
                }
            )
            settings = Settings.from_env(env)
            asyncio.run(ensure_topics(settings))
            shape = TrafficShape(seed=42, malformed_ratio=args.malformed_ratio)
            print(
                f"bench: publishing {args.events} events to {args.partitions} partitions ...",
                flush=True,
            )
            stats = asyncio.run(publish(settings, generate(shape, args.events, GroundTruth())))
            print(f"bench: published in {stats.elapsed_s:.1f}s", flush=True)

            baseline = asyncio.run(plain_consumer(settings, args.events))
            print(
                f"bench: (a) plain aiokafka + orjson consumer: {args.events / baseline:,.0f} ev/s",
                flush=True,
            )
            worker = hitrun_worker(env, args.events, workdir, args.timeout)
            print(
                f"bench: (b) hitrun worker:                    {args.events / worker:,.0f} ev/s",
                flush=True,
            )
            print(f"bench: ratio b/a = {baseline / worker:.3f}", flush=True)


if __name__ == "__main__":
    main()
