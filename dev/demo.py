"""`make demo`: a local broker, a worker and simulated shop traffic, shown live as customers'
stories, rates, the simulator's ground truth against hitrun's alerts and dead letters by
reason. Each run is fresh: its own seed, app id and topics. Ctrl-C stops everything."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import shutil
import signal
import socket
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import orjson
from rich.console import Console
from rich.live import Live

from hitrun.dev.demo_view import DemoView, counters
from hitrun.dev.localkafka import LocalKafka
from hitrun.dev.worker import WorkerProcess, free_port, topic_env
from hitrun.streams.config import Settings
from hitrun.streams.publisher import publish
from hitrun.streams.simulate import (
    SIMULATED_CLOCK_SKEW,
    SIMULATED_LATENESS,
    SimMessage,
    TrafficShape,
    generate,
)
from hitrun.streams.topics import assigned_consumer, delete_topics_of

STATE = Path(".hitrun")


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


@contextlib.contextmanager
def broker() -> Iterator[str]:
    """The cluster named by HITRUN_KAFKA_BOOTSTRAP, or a local broker started (and stopped) here."""
    existing = os.environ.get("HITRUN_KAFKA_BOOTSTRAP")
    if existing:
        print(f"demo: using the existing cluster at {existing}")
        yield existing
        return
    port = 9092 if _port_free(9092) else free_port()
    kafka = LocalKafka(STATE / "kafka", port=port)
    print(f"demo: starting the local Kafka broker on 127.0.0.1:{port} ...", flush=True)
    started_at = time.monotonic()
    bootstrap = kafka.start()
    print(f"demo: broker ready in {time.monotonic() - started_at:.1f}s (pid {kafka.pid})")
    try:
        yield bootstrap
    finally:
        kafka.stop()
        print("demo: broker stopped", flush=True)


def write_truth(view: DemoView, path: Path) -> None:
    """The ground truth so far, replaced whole (never left half-written)."""
    body = {"run_id": view.run_id, "seed": view.seed, **view.facts.as_json()}
    partial = path.with_suffix(".partial")
    partial.write_bytes(orjson.dumps(body, option=orjson.OPT_INDENT_2))
    partial.replace(path)


class Demo:
    """The simulator, an alert reader, a /metrics reader and the live view, in one event loop."""

    def __init__(
        self, settings: Settings, worker: WorkerProcess, view: DemoView, args: argparse.Namespace
    ) -> None:
        self.settings, self.worker, self.view, self.args = settings, worker, view, args
        self.console = Console()
        self.stop = asyncio.Event()

    async def simulate(self) -> None:
        shape = TrafficShape(
            seed=self.view.seed,
            start=datetime.now(UTC).replace(second=0, microsecond=0),
            malformed_ratio=self.args.malformed_ratio,
            max_message_bytes=self.settings.max_message_bytes,
        )
        count = int(self.args.rate * self.args.duration)

        def messages() -> Iterator[SimMessage]:
            for message in generate(shape, count, self.view.facts):
                self.view.sent(message)
                yield message

        # crc32: librdkafka's partitioner, so some events arrive on the wrong partition
        # and are rerouted, as they would be from a producer in another language.
        await publish(
            self.settings,
            messages(),
            rate=self.args.rate,
            partitioner="crc32",
            seed=self.view.seed,
        )

    async def alerts(self) -> None:
        topics = sorted(self.settings.output_topics.values())
        consumer = await assigned_consumer(self.settings, topics, from_beginning=True)
        try:
            while True:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    for record in records:
                        if record.value is not None:
                            self.view.alert(orjson.loads(record.value))
        finally:
            await consumer.stop()

    async def scrape(self) -> None:
        while True:
            status, body = await asyncio.to_thread(self.worker.get, "/metrics")
            if status == 200:
                self.view.scraped(counters(body))
            await asyncio.sleep(1.0)

    async def show(self) -> None:
        if not self.console.is_terminal:
            while True:  # a log, not a screen: a line every few seconds
                await asyncio.sleep(5)
                print(self.view.status_line(), flush=True)
        with Live(console=self.console, refresh_per_second=2, auto_refresh=False) as live:
            while True:
                rows = max(3, self.console.size.height - 22)
                live.update(self.view.render(rows), refresh=True)
                await asyncio.sleep(0.5)

    async def keep_truth(self) -> None:
        while True:
            await asyncio.sleep(5)
            write_truth(self.view, self.args.truth)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self.stop.set)
        simulator = asyncio.create_task(self.simulate())
        helpers = [
            asyncio.create_task(job())
            for job in (self.alerts, self.scrape, self.show, self.keep_truth)
        ]
        stopping = asyncio.create_task(self.stop.wait())
        try:
            done, _ = await asyncio.wait(
                [simulator, stopping, *helpers], return_when=asyncio.FIRST_COMPLETED
            )
            for task in done:
                failure = None if task is stopping else task.exception()
                if failure is not None:
                    raise failure
        finally:
            for task in (simulator, stopping, *helpers):
                task.cancel()
            await asyncio.gather(simulator, stopping, *helpers, return_exceptions=True)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="demo", description=__doc__)
    parser.add_argument("--rate", type=float, default=300.0, help="messages per second")
    parser.add_argument("--duration", type=float, default=86400.0, help="seconds of traffic")
    parser.add_argument("--malformed-ratio", type=float, default=0.02)
    parser.add_argument("--seed", type=int, default=None, help="default: a new one each run")
    parser.add_argument("--truth", type=Path, default=None, help="ground truth file to write")
    return parser.parse_args(argv)


@contextlib.contextmanager
def isolated(run_id: str, bootstrap: str) -> Iterator[dict[str, str]]:
    """This run's own app id and topics; its topics are deleted when it ends."""
    env = {
        "HITRUN_KAFKA_BOOTSTRAP": bootstrap,
        "HITRUN_APP_ID": run_id,
        **topic_env(run_id),
        "HITRUN_ALLOWED_LATENESS": SIMULATED_LATENESS,
        "HITRUN_MAX_CLOCK_SKEW": SIMULATED_CLOCK_SKEW,
    }
    os.environ.update(env)
    try:
        yield env
    finally:
        with contextlib.suppress(Exception):
            # Its own topics, and Faust's (changelog, leader) named after the app id.
            deleted = asyncio.run(delete_topics_of(Settings.from_env(), run_id))
            print(f"demo: deleted this run's {len(deleted)} topics", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 10**6)
    run_id = f"demo-{datetime.now(UTC):%Y%m%d-%H%M%S}-{seed}"
    run_dir = STATE / "demo" / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    args.truth = args.truth or run_dir / "truth.json"
    view = DemoView(run_id, seed)
    # Ctrl-C while the broker and worker start: stop what started, in order.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        with broker() as bootstrap, isolated(run_id, bootstrap) as env:
            env["HITRUN_DATA_DIR"] = str(run_dir / "worker-data")
            # A run's state lives as long as the run: memory, not a store on disk.
            env.setdefault("HITRUN_STORE", "memory://")
            worker = WorkerProcess(env, run_dir / "worker.log", web_port=free_port())
            print(f"demo: run {run_id}, seed {seed}; starting the hitrun worker ...", flush=True)
            with worker:
                pid = worker.process.pid if worker.process else "?"
                print(f"demo: worker ready (pid {pid}): {worker.url}/metrics")
                print(f"demo: worker log: {worker.log_path}")
                print(
                    f"demo: simulating shop traffic at {args.rate:.0f} msg/s "
                    f"({args.malformed_ratio:.0%} malformed, crc32 partitioner)",
                    flush=True,
                )
                try:
                    asyncio.run(Demo(Settings.from_env(), worker, view, args).run())
                finally:
                    write_truth(view, args.truth)
                    print(f"demo: {view.status_line()}")
                    print(f"demo: ground truth written to {args.truth}", flush=True)
                    print("demo: stopping the worker ...", flush=True)
            shutil.rmtree(run_dir / "worker-data", ignore_errors=True)
    except KeyboardInterrupt:
        print("demo: interrupted", flush=True)
    print("demo: everything stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
