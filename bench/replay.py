"""`make bench-replay`: `hitrun replay` of a large transactions file end to end, against a baseline.

Writes a seeded transactions file (default 100,000 rows), starts a replay-mode
worker, runs the real `hitrun replay` command and times it from start to its
summary (publish, processing, every window closed, alerts counted). The
baselines, in the same run, are a plain aiokafka consumer fetching and
decoding the very messages the replay published, and a Faust agent that only
counts them (bench/faust_floor.py): what Faust itself costs per event here.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import os
import random
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import NamedTuple

import orjson
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import GroupCoordinatorNotAvailableError

from bench.throughput import cluster, own_run, plain_consumer
from hitrun.dev.worker import WorkerProcess, free_port, stop_group, topic_env, worker_env
from hitrun.streams.config import Settings
from hitrun.streams.replay import Progress
from hitrun.streams.topics import ensure_topics, read_from
from hitrun.streams.watermarks import signature


def write_transactions(path: Path, rows: int, seed: int) -> None:
    """A year of purchases: most customers buy once, some a few times, a few often."""
    rng = random.Random(seed)
    start = datetime(2024, 1, 1, tzinfo=UTC)

    def purchases(customer: int) -> Iterator[list[str]]:
        at = start + timedelta(seconds=rng.randrange(365 * 86_400))
        for _ in range(rng.choice((1, 1, 1, 2, 3, 4, 8))):
            yield [f"c{customer:07d}", at.isoformat(), f"{rng.randrange(500, 50_000) / 100:.2f}"]
            at += timedelta(days=rng.randrange(1, 120), seconds=rng.randrange(86_400))

    write_rows(path, ["customer_id", "timestamp", "amount"], rows, purchases)


def write_real_shaped(path: Path, rows: int, seed: int) -> None:
    """Purchases shaped like a real shop's 18-month file: dates without a time, about three
    purchases a customer (half buy once, a few very often), several on one day for some.

    At 70,000 rows: about 23,400 customers.
    """
    rng = random.Random(seed)
    start = date(2023, 1, 1)
    days = 548

    def purchases(customer: int) -> Iterator[list[str]]:
        count = 1 if rng.random() < 0.5 else min(int(rng.paretovariate(1.2)) + 1, 300)
        first = rng.randrange(days)
        for day in sorted(
            first + (0 if rng.random() < 0.15 else rng.randrange(days - first))
            for _ in range(count)
        ):
            yield [
                f"c{customer:06d}",
                (start + timedelta(days=day)).isoformat(),
                f"{rng.randrange(300, 60_000) / 100:.2f}",
            ]

    write_rows(path, ["customer_id", "date", "amount"], rows, purchases)


def write_rows(
    path: Path, header: list[str], rows: int, purchases: Callable[[int], Iterator[list[str]]]
) -> None:
    """A CSV file of `rows` rows: customer 1's purchases, then customer 2's, and so on."""
    written = 0
    customer = 0
    with path.open("w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(header)
        while written < rows:
            customer += 1
            for row in purchases(customer):
                if written == rows:
                    break
                out.writerow(row)
                written += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--transactions", type=int, default=100_000)
    parser.add_argument(
        "--shape",
        choices=("spread", "real"),
        default="spread",
        help="spread: times to the second over a year (the default input); real: whole "
        "days over 18 months, about three purchases a customer (write_real_shaped).",
    )
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="Replay-mode workers in the group (each is one Python process, about one core); "
        "default one per core, at most one per partition.",
    )
    parser.add_argument(
        "--compare-with",
        metavar="REV",
        default=None,
        help="Also time the worker of this git revision (a temporary worktree) over the same "
        "published input, alone, as a baseline for (d) in the same run.",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=2,
        help="Runs of each lone worker, (d) and (e) alternately; the best of each counts.",
    )
    args = parser.parse_args()
    if args.workers is None:
        args.workers = min(os.cpu_count() or 1, args.partitions)

    with tempfile.TemporaryDirectory(prefix="hitrun-bench-replay-") as tmp:
        workdir = Path(tmp)
        data = workdir / "transactions.csv"
        writer = write_real_shaped if args.shape == "real" else write_transactions
        writer(data, args.transactions, args.seed)
        with cluster(workdir) as bootstrap:
            tag = uuid.uuid4().hex[:8]
            env = own_run(
                {
                    "HITRUN_KAFKA_BOOTSTRAP": bootstrap,
                    "HITRUN_APP_ID": f"bench-replay-{tag}",
                    "HITRUN_PARTITIONS": str(args.partitions),
                    "HITRUN_DATA_DIR": str(workdir / "state"),
                    "HITRUN_CLOCK_MODE": "replay",
                    "HITRUN_WATERMARK_KEY": uuid.uuid4().hex,
                    **topic_env(f"bench-replay-{tag}"),
                }
            )
            events = 2 * args.transactions
            with contextlib.ExitStack() as workers:
                group = [
                    workers.enter_context(
                        WorkerProcess(worker_env(env, n), workdir / f"worker-{n}.log")
                    )
                    for n in range(args.workers)
                ]
                print(
                    f"bench-replay: hitrun replay of {args.transactions} transactions, "
                    f"{args.workers} worker(s) ..."
                )
                started = time.perf_counter()
                done = subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "hitrun.streams.cli",
                        "replay",
                        str(data),
                        "--workers",
                        "0",
                    ],
                    env={**os.environ, **env},
                    capture_output=True,
                    text=True,
                    check=False,
                )
                elapsed = time.perf_counter() - started
                print(done.stdout, end="")
                if done.returncode != 0:
                    print(done.stderr, file=sys.stderr)
                    raise SystemExit(done.returncode)
                # A figure only counts if nothing was lost on the way.
                applied = sum(
                    worker.metric("hitrun_input_events_total", type=kind, outcome="processed")
                    for worker in group
                    for kind in ("checkout_confirmed", "payment_attempted")
                )
                refused = sum(worker.metric("hitrun_dead_letters_total") for worker in group)
                if applied != events or refused:
                    for worker in group:
                        print(worker.log_tail(), file=sys.stderr)
                    raise SystemExit(
                        f"bench-replay: the worker applied {applied:.0f} of {events} events "
                        f"and dead-lettered {refused:.0f}"
                    )
                print(f"bench-replay: all {events} events applied, none dead-lettered")
            settings = Settings.from_env(env)
            # The lone workers run alternately, each `--repeat` times, and the best run
            # of each counts: these machines are shared, and noise only slows a run.
            baseline_env = {**env, **topic_env(f"bench-baseline-{tag}")}
            own_run({"HITRUN_KAFKA_BOOTSTRAP": bootstrap, "HITRUN_APP_ID": f"bench-baseline-{tag}"})
            trees: dict[str, Path | None] = {"d": None}
            with contextlib.ExitStack() as stack:
                if args.compare_with:
                    # The same input on topics of its own, its watermarks signed for
                    # those topics, or unsigned for revisions before signed watermarks.
                    key = env["HITRUN_WATERMARK_KEY"].encode()
                    sign = key if signs_watermarks(args.compare_with) else None
                    asyncio.run(copy_input(settings, Settings.from_env(baseline_env), sign))
                    tree = workdir / "baseline-tree"
                    trees["e"] = stack.enter_context(worktree(args.compare_with, tree))
                runs: dict[str, list[AloneRun]] = {name: [] for name in trees}
                for _ in range(args.repeat):
                    for name, tree_path in trees.items():
                        run_env = env if name == "d" else baseline_env
                        runs[name].append(worker_alone(run_env, workdir, tree_path, events))
            alone = min(runs["d"])
            print(
                f"bench-replay: (d) this worker alone over the published input: "
                f"{events / alone.seconds:,.0f} ev/s ({alone.seconds:.1f}s; runs "
                f"{_seconds(runs['d'])}){phase_shares(alone)}"
            )
            if args.compare_with:
                before = min(runs["e"])
                print(
                    f"bench-replay: (e) the worker of {args.compare_with} alone over the same "
                    f"input: {events / before.seconds:,.0f} ev/s ({before.seconds:.1f}s; runs "
                    f"{_seconds(runs['e'])}){phase_shares(before)}; "
                    f"d/e = {before.seconds / alone.seconds:.2f}"
                )
            baseline = asyncio.run(plain_consumer(settings, events))
            floor = faust_floor(settings, events, workdir)
            print(
                f"bench-replay: (a) plain consumer over the same {events} input events: "
                f"{events / baseline:,.0f} ev/s ({baseline:.1f}s)"
            )
            print(
                f"bench-replay: (b) a Faust agent that only counts them: "
                f"{events / floor:,.0f} ev/s ({floor:.1f}s)"
            )
            print(
                f"bench-replay: (c) hitrun replay, end to end: {elapsed:.1f}s "
                f"({events / elapsed:,.0f} ev/s)"
            )
            print(
                f"bench-replay: ratio c/a = {baseline / elapsed:.3f}, c/b = {floor / elapsed:.3f}"
            )


@contextlib.contextmanager
def worktree(rev: str, path: Path) -> Iterator[Path]:
    """A detached git worktree of `rev` at `path`, removed afterwards."""
    subprocess.run(["git", "worktree", "add", "--detach", "-q", str(path), rev], check=True)
    try:
        yield path
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(path)], check=False)


class AloneRun(NamedTuple):
    seconds: float
    # Seconds the worker's consume loop spent by phase (hitrun_loop_seconds_total);
    # empty for a revision that does not count them.
    phases: dict[str, float]


def worker_alone(
    env: dict[str, str], workdir: Path, tree: Path | None, events: int, timeout: float = 900.0
) -> AloneRun:
    """Seconds one replay-mode worker of a fresh group (the code in `tree`, default this
    checkout) takes from start to having committed every input record already published,
    and where its loop spent them; it must have applied all `events` of them.

    The input is read again from the start, so only the worker's own speed is timed: no
    publisher competes for the cores.
    """
    tag = uuid.uuid4().hex[:8]
    fresh = own_run(
        {
            **env,
            "HITRUN_APP_ID": f"bench-alone-{tag}",
            "HITRUN_DATA_DIR": str(workdir / f"alone-{tag}"),
            "HITRUN_WEB_PORT": str(free_port()),
        }
    )
    settings = Settings.from_env(fresh)
    log = (workdir / f"alone-{tag}.log").open("ab")
    started = time.perf_counter()
    # Revisions before the single `hitrun` package had top-level ones (streams, agents, ...);
    # their tree has no hitrun/, where the installed package (this checkout) would be run.
    cli = "hitrun.streams.cli" if tree is None or (tree / "hitrun").exists() else "streams.cli"
    process = subprocess.Popen(
        [sys.executable, "-m", cli, "worker"],
        cwd=tree,
        env={**os.environ, **fresh},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    try:

        async def wait() -> None:
            async with Progress(settings) as progress:
                while True:
                    try:
                        if await progress.remaining() == 0:
                            return
                    except GroupCoordinatorNotAvailableError:
                        pass  # the group's coordinator is being set up
                    if process.poll() is not None:
                        raise SystemExit(f"bench-replay: the worker in {tree} exited")
                    if time.perf_counter() - started > timeout:
                        raise SystemExit("bench-replay: the lone worker did not finish in time")
                    await asyncio.sleep(0.25)

        asyncio.run(wait())
        elapsed = time.perf_counter() - started
        # A figure counts only if the worker applied the events, not merely committed them.
        exported = scrape(int(fresh["HITRUN_WEB_PORT"]))
        applied = applied_events(exported)
        if applied != events:
            raise SystemExit(
                f"bench-replay: the worker in {tree or 'this checkout'} committed every input "
                f"record but applied {applied} of {events} events"
            )
        return AloneRun(elapsed, loop_phases(exported))
    finally:
        stop_group(process, 30)


def _seconds(runs: list[AloneRun]) -> str:
    return ", ".join(f"{run.seconds:.1f}s" for run in runs)


def scrape(port: int) -> str:
    """A worker's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return str(response.read().decode())


def applied_events(text: str) -> int:
    """hitrun_input_events_total of processed checkouts and payments, in a worker's /metrics."""
    total = 0.0
    for line in text.splitlines():
        counted = line.startswith("hitrun_input_events_total{") and 'outcome="processed"' in line
        if counted and ('type="checkout_confirmed"' in line or 'type="payment_attempted"' in line):
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


def loop_phases(text: str) -> dict[str, float]:
    """hitrun_loop_seconds_total by phase, in a worker's /metrics (empty where not counted)."""
    phases: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith('hitrun_loop_seconds_total{phase="'):
            labels, value = line.rsplit(" ", 1)
            phases[labels.split('"')[1]] = float(value)
    return phases


def phase_shares(run: AloneRun) -> str:
    """Where a lone worker's time went: each loop phase's share of the run, and the rest
    (starting, joining the group, recovering), or "" for a revision that does not count."""
    if not run.phases:
        return ""
    shares = [f"{phase} {seconds / run.seconds:.0%}" for phase, seconds in run.phases.items()]
    rest = 1 - sum(run.phases.values()) / run.seconds
    return "; time by loop phase: " + ", ".join(shares) + f", start-up and the rest {rest:.0%}"


def signs_watermarks(rev: str) -> bool:
    """Whether the worker of git revision `rev` takes only signed watermarks."""
    found = subprocess.run(
        ["git", "grep", "-q", "def signature", rev, "--", "streams/watermarks.py"], check=False
    )
    return found.returncode == 0


async def copy_input(source: Settings, target: Settings, sign: bytes | None) -> None:
    """Copy the input topics of `source` to those of `target`, partition for partition, with
    the watermarks signed with `sign` for their new topic, or unsigned (None)."""
    await ensure_topics(target)
    producer = AIOKafkaProducer(
        bootstrap_servers=target.kafka_bootstrap, linger_ms=5, max_batch_size=256 * 1024
    )
    await producer.start()
    try:
        pending = []
        since = {
            TopicPartition(topic, p): 0
            for topic in source.watermarked_topics
            for p in range(source.partitions)
        }
        names = dict(zip(source.watermarked_topics, target.watermarked_topics, strict=True))
        async for tp, record in read_from(source, since):
            value = record.value
            if record.key is None and value is not None:
                mark = orjson.loads(value)
                mark.pop("signature", None)
                if sign is not None:
                    at = datetime.fromisoformat(mark["occurred_at"])
                    topic = names[tp.topic]
                    mark["signature"] = signature(sign, topic, tp.partition, at, mark.get("source"))
                value = orjson.dumps(mark)
            pending.append(
                await producer.send(names[tp.topic], value, key=record.key, partition=tp.partition)
            )
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


def faust_floor(settings: Settings, events: int, workdir: Path, timeout: float = 600.0) -> float:
    """Seconds the counting agent of bench/faust_floor.py takes from its first event to the last."""
    report = workdir / "floor-report.txt"
    env = {
        **os.environ,
        "FLOOR_BROKER": settings.kafka_bootstrap,
        "FLOOR_TOPICS": ",".join(settings.watermarked_topics),
        "FLOOR_EXPECTED": str(events),
        "FLOOR_REPORT": str(report),
        "FLOOR_APP_ID": f"{settings.app_id}-floor",
        "FLOOR_WEB_PORT": str(free_port()),
        "FLOOR_DATA_DIR": str(workdir / "floor-data"),
    }
    # The event loop hitrun's workers use (HITRUN_EVENT_LOOP), so that only the work differs.
    loop = "uvloop" if settings.event_loop == "uvloop" else "aio"
    command = [
        *(sys.executable, "-m", "faust", "-A", "bench.faust_floor", "-L", loop),
        *("worker", "-l", "warn"),
    ]
    with (workdir / "floor.log").open("ab") as log:
        process = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + timeout
        while not report.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"bench-replay: the Faust floor agent failed; see {log.name}")
            time.sleep(0.2)
        return float(report.read_text())
    finally:
        stop_group(process, 30)


if __name__ == "__main__":
    main()
