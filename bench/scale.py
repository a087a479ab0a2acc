"""`make bench-scale`: a worker on top of state for a million customers.

The state is built by the customer agent itself, in a child process without
Kafka for the input: each customer makes one purchase (a checkout and its
payment) in the last 30 days, so every retention window is still open and
every customer has a deadline in the index; one in fifty also has an unpaid
bank transfer. The changelog records the agent produced (one per customer;
not the partitions' clock records, which name offsets of an input that was
never in Kafka) are written straight to the changelog topic of a fresh app.
Then, with the default store (RocksDB):

- start with the store lost: a worker with an empty data directory recovers
  every state from the changelog; timed from launch to ready, and to its
  first processed event (the deadline index is rebuilt before that);
- restart with the store kept: the same worker stopped and started again;
- events/s on top: a backlog of checkouts and payments of existing customers
  read by a worker started after it was written, against the same backlog on
  an app with no state, in the same run;
- rebalance: under a steady flow of events, a second worker joins (and
  recovers its partitions from the changelog), then leaves; the stall is the
  longest time no event was processed;
- memory: the worker's resident set (VmRSS) once ready and its peak (VmHWM).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from bench.throughput import cluster, own_run
from hitrun.dev.worker import WorkerProcess, topic_env
from hitrun.streams.config import Settings
from hitrun.streams.partitioning import partition_for_key
from hitrun.streams.replay import Progress
from hitrun.streams.topics import ensure_topics

PARTITIONS = 8
WINDOW = timedelta(days=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=40_000, help="for the events/s figure")
    parser.add_argument("--rate", type=int, default=500, help="events/s during the rebalance")
    parser.add_argument("--child-build", nargs=2, metavar=("CUSTOMERS", "START"))
    args = parser.parse_args()
    if args.child_build:
        build_state(int(args.child_build[0]), datetime.fromisoformat(args.child_build[1]))
        return
    with tempfile.TemporaryDirectory(prefix="hitrun-bench-scale-") as tmp:
        workdir = Path(tmp)
        with cluster(workdir) as bootstrap:
            run(bootstrap, workdir, args)


def app_env(bootstrap: str, workdir: Path, label: str) -> dict[str, str]:
    tag = f"{label}-{uuid.uuid4().hex[:8]}"
    return own_run(
        {
            "HITRUN_KAFKA_BOOTSTRAP": bootstrap,
            "HITRUN_APP_ID": f"scale-{tag}",
            **topic_env(f"scale-{tag}"),
            "HITRUN_PARTITIONS": str(PARTITIONS),
            "HITRUN_DATA_DIR": str(workdir / tag),
            "HITRUN_LOG_LEVEL": "warning",
            "HITRUN_SESSION_TIMEOUT": "10s",
        }
    )


def run(bootstrap: str, workdir: Path, args: argparse.Namespace) -> None:
    env = app_env(bootstrap, workdir, "state")
    settings = Settings.from_env(env)
    start = datetime.now(UTC) - WINDOW
    asyncio.run(ensure_topics(settings))
    print(f"bench-scale: building the state of {args.customers:,} customers ...", flush=True)
    began = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.scale",
            "--child-build",
            str(args.customers),
            start.isoformat(),
        ],
        env={
            **os.environ,
            **env,
            "HITRUN_STORE": "memory://",
            "HITRUN_DATA_DIR": str(workdir / "build"),
        },
        check=True,
    )
    print(
        "bench-scale: state built and written to the changelog in "
        f"{time.perf_counter() - began:.0f}s"
    )

    def worker(name: str, data: str) -> WorkerProcess:
        return WorkerProcess(
            {**env, "HITRUN_DATA_DIR": str(workdir / data)}, workdir / f"{name}.log"
        )

    first = worker("first", "a")
    lost = start_timed(first, settings, probe=0)
    report("start, store lost (recovery from the changelog)", lost)
    first.stop()
    first = worker("first-again", "a")
    kept = start_timed(first, settings, probe=1)
    report("restart, store kept", kept)
    first.stop()
    # Events/s: a backlog of checkouts and payments of existing customers, read by a
    # worker started after it was written, against the same on an app with no state.
    backlog = purchases(range(10, 10 + args.events // 2), datetime.now(UTC), tag="rate")
    empty_env = app_env(bootstrap, workdir, "empty")
    empty_settings = Settings.from_env(empty_env)
    asyncio.run(ensure_topics(empty_settings))
    send_events(settings, backlog)
    send_events(empty_settings, backlog)
    first = worker("first-backlog", "a")
    try:
        rate = backlog_rate(first, len(backlog))
        rebuild = first.metric("hitrun_index_rebuild_seconds_sum")
        # Counted as processed when applied; the last batch's states are stored after that.
        asyncio.run(committed_all(settings, 120))
        after_events = memory(first)
        with WorkerProcess(empty_env, workdir / "empty.log") as empty:
            base = backlog_rate(empty, len(backlog))
        print(
            f"bench-scale: {len(backlog):,} events on top of {args.customers:,} customers: "
            f"{rate:,.0f} ev/s from ready (after a {rebuild:.1f}s deadline index rebuild); "
            f"the same on an app with no state: {base:,.0f} ev/s (ratio {rate / base:.2f}); "
            f"worker memory after them: {after_events}"
        )
        second = worker("second", "b")
        join, leave = rebalance_stalls(
            first, second, settings, args.rate, offset=10 + args.events // 2
        )
        print(
            f"bench-scale: rebalance under {args.rate} events/s: longest stall "
            f"{join:.1f}s when a second worker joins, {leave:.1f}s when it leaves"
        )
        print(f"bench-scale: worker memory at the end: {memory(first)}")
    finally:
        first.stop()


def start_timed(worker: WorkerProcess, settings: Settings, probe: int) -> dict[str, Any]:
    """Launch, then time ready and the first processed event (a payment of a known customer)."""
    began = time.perf_counter()
    worker.launch()
    send_events(
        settings, purchases(range(probe, probe + 1), datetime.now(UTC), tag=f"probe{probe}")
    )
    worker.wait_ready(600)
    ready = time.perf_counter() - began
    while worker.metric("hitrun_input_events_total", outcome="processed") < 2:
        time.sleep(0.05)
    return {"ready": ready, "processing": time.perf_counter() - began, "memory": memory(worker)}


def report(what: str, figures: dict[str, Any]) -> None:
    print(
        f"bench-scale: {what}: ready in {figures['ready']:.1f}s, first event processed "
        f"{figures['processing']:.1f}s after launch; memory {figures['memory']}"
    )


def memory(worker: WorkerProcess) -> str:
    assert worker.process is not None
    status = Path(f"/proc/{worker.process.pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    rss, peak = (int(fields[k].split()[0]) // 1024 for k in ("VmRSS", "VmHWM"))
    return f"RSS {rss} MB (peak {peak} MB)"


def purchases(customers: range, at: datetime, tag: str) -> list[tuple[str, bytes, bytes]]:
    """A checkout and its payment for each customer: (role, key, value)."""
    out = []
    for n in customers:
        cid = f"c{n:07d}"
        order = f"{tag}-{n}"
        common = {"customer_id": cid, "shop_id": "shop-1", "occurred_at": at.isoformat()}
        money = {"amount_minor": 5000 + n % 1000, "currency": "USD"}
        checkout = common | {
            "type": "checkout_confirmed",
            "event_id": f"{order}-co",
            "order_id": order,
            "total": money,
            "payment_method": "card",
        }
        payment = common | {
            "type": "payment_attempted",
            "event_id": f"{order}-pay",
            "order_id": order,
            "status": "succeeded",
            "amount": money,
            "method": "card",
        }
        out.append(("checkouts", cid.encode(), orjson.dumps(checkout)))
        out.append(("payments", cid.encode(), orjson.dumps(payment)))
    return out


def send_events(settings: Settings, events: list[tuple[str, bytes, bytes]]) -> None:
    topics = {"checkouts": settings.topic_checkouts, "payments": settings.topic_payments}

    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=20)
        await producer.start()
        try:
            futures = [
                await producer.send(
                    topics[role], value, key=key, partition=partition_for_key(key, PARTITIONS)
                )
                for role, key, value in events
            ]
            await asyncio.gather(*futures)
        finally:
            await producer.stop()

    asyncio.run(send())


def backlog_rate(worker: WorkerProcess, events: int) -> float:
    """Events/s of a worker over a backlog: launched, timed from ready to its last processed.

    Not from its first processed: a live worker holds events until the other
    partitions' progress marks pass them, so they may be applied in a few large
    steps, and the first may come late. Ready comes after the deadline index
    rebuild, which the figure so leaves out.
    """
    if worker.process is None:
        worker.launch()
    ready = 0.0
    while True:
        # /readyz answers as of the request (the hitrun_ready gauge lags up to 5 s).
        if not ready and worker.get("/readyz")[0] == 200:
            ready = time.perf_counter()
        if ready and worker.metric("hitrun_input_events_total", outcome="processed") >= events:
            return events / (time.perf_counter() - ready)
        time.sleep(0.05)


async def committed_all(settings: Settings, seconds: float) -> None:
    """Wait until the group has committed every record of the input topics: each batch's
    states are stored before its offsets are committed. (Not the internal topics: a live
    worker's last progress marks stay uncommitted until more input comes.)"""
    left: dict[Any, int] = {}
    inputs = set(settings.watermarked_topics)
    try:
        async with asyncio.timeout(seconds), Progress(settings) as progress:
            while True:
                left = {
                    tp: n
                    for tp, n in (await progress.remaining_by_partition()).items()
                    if tp.topic in inputs and n
                }
                if not left:
                    return
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise SystemExit(
            f"bench-scale: the input was not all committed in {seconds:.0f}s: {left}"
        ) from None


def rebalance_stalls(
    first: WorkerProcess, second: WorkerProcess, settings: Settings, rate: int, offset: int
) -> tuple[float, float]:
    """The longest time without a processed event after a second worker joins, and leaves."""
    stop = threading.Event()

    def flow() -> None:
        n = offset
        while not stop.is_set():
            began = time.perf_counter()
            send_events(
                settings, purchases(range(n, n + rate // 10), datetime.now(UTC), tag="flow")
            )
            n += rate // 10
            time.sleep(max(0.0, 0.2 - (time.perf_counter() - began)))

    def processed() -> float:
        return sum(
            w.metric("hitrun_input_events_total", outcome="processed") for w in (first, second)
        )

    def longest_stall(seconds: float) -> float:
        last, last_change, longest = processed(), time.perf_counter(), 0.0
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            time.sleep(0.1)
            # Timed after the answer: a worker whose event loop is held (an index
            # rebuild) answers only once it is free, and its count is as of then.
            count = processed()
            now = time.perf_counter()
            if count != last:
                longest = max(longest, now - last_change)
                last, last_change = count, now
        return max(longest, time.perf_counter() - last_change)

    sender = threading.Thread(target=flow)
    sender.start()
    try:
        time.sleep(5)
        before = rebuilds(first)
        second.launch()
        join = longest_stall(60)
        joined = rebuilds(first)
        second.stop()
        leave = longest_stall(60)
        left = rebuilds(first)
    finally:
        stop.set()
        sender.join()
    print(
        "bench-scale: the first worker's deadline index rebuilds: when the second joins "
        f"{describe(before, joined)}; when it leaves {describe(joined, left)}"
    )
    return join, leave


def rebuilds(worker: WorkerProcess) -> tuple[float, float, float]:
    """A worker's index rebuild seconds so far, and partitions kept and scanned."""
    return (
        worker.metric("hitrun_index_rebuild_seconds_sum"),
        worker.metric("hitrun_index_partitions_total", how="kept"),
        worker.metric("hitrun_index_partitions_total", how="scanned"),
    )


def describe(before: tuple[float, float, float], after: tuple[float, float, float]) -> str:
    seconds, kept, scanned = (b - a for a, b in zip(before, after, strict=True))
    return f"{seconds:.1f}s ({kept:.0f} partitions kept, {scanned:.0f} scanned)"


def build_state(customers: int, start: datetime) -> None:
    """Child: the agent applies the purchases in memory; its changelog records go to Kafka."""
    import hitrun.agents.customer as customer
    from hitrun.streams.ingest import RawMessage
    from tests.unit.agent_shell import Sink

    sink = Sink()
    customer.sink = sink  # type: ignore[assignment]
    # Every partition is fed here, in memory: none waits for the others' progress marks.
    customer.ALIGN_SOURCES = False
    processor = customer.CustomerProcessor()
    settings = customer.settings
    topics = {"checkouts": settings.topic_checkouts, "payments": settings.topic_payments}
    changelog = customer.changelog_topic_name
    offsets: dict[tuple[str, int], int] = {}
    records: list[tuple[Any, Any, Any]] = []
    step = WINDOW / customers
    for first in range(0, customers, 2000):
        chunk = range(first, min(first + 2000, customers))
        events = purchases(chunk, start, tag="o")
        for i, (role, key, value) in enumerate(events):
            body = orjson.loads(value)
            at = start + step * (first + i // 2)
            body["occurred_at"] = at.isoformat()
            if role == "checkouts" and (first + i // 2) % 50 == 0:
                body["payment_method"] = "bank_transfer"  # one in fifty stays unpaid
            elif role == "payments" and (first + i // 2) % 50 == 0:
                continue
            topic = topics[role]
            partition = partition_for_key(key, PARTITIONS)
            offset = offsets.get((topic, partition), 0)
            offsets[(topic, partition)] = offset + 1
            processor.apply(RawMessage(topic, partition, offset, None, key, orjson.dumps(body)))
        processor.settle(lambda tp: True, ())
        processor.end_batch()
        processor.confirmed({})
        records.extend((r.key, r.value, r.partition) for r in sink.records if r.topic == changelog)
        sink.records.clear()
    # The partitions' clock records stay out: they name offsets of the child's
    # input, which was never in Kafka.
    latest = {
        key: (value, partition)
        for key, value, partition in records
        if not key.startswith(customer.CLOCK_KEY_PREFIX)
    }
    asyncio.run(write_changelog(settings, changelog, latest))


async def write_changelog(
    settings: Settings, topic: str, latest: dict[bytes, tuple[bytes | None, int]]
) -> None:
    # The topic exists: `ensure_topics` created it with the app's other topics.
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, linger_ms=50, max_batch_size=1 << 20
    )
    await producer.start()
    try:
        pending = []
        for key, (value, partition) in latest.items():
            pending.append(await producer.send(topic, value, key=key, partition=partition))
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    print(f"bench-scale: {len(latest):,} changelog records written to {topic}", flush=True)


if __name__ == "__main__":
    main()
