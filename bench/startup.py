"""`make bench-startup`: how long workers started together take to be ready, against a
baseline revision in the same run.

Each run starts N replay-mode workers (default 2) on topics of their own, as
`hitrun replay` starts them (`ReplayWorkers`), and times, from the launch,
when each answers `/readyz` with 200 (partitions assigned, tables recovered,
deadline index rebuilt), then how long stopping them all takes. With
`--compare-with REV` the same runs are made, alternately, with the workers of
another revision (a temporary git worktree). Only the broker must be running.
`--other-topics N` first creates N topics of HITRUN_PARTITIONS partitions
(deleted at the end), as a shared cluster has: a client that reads every
topic's metadata pays for them. The local broker (`make kafka-start`) keeps a
few open files per partition under a limit of 20,000: 1,000 topics of 8
partitions are fine, 3,000 took its log directory offline.

Each run is a child process of this script with the revision's code first on
its path (`--child`), so the workers it starts run that revision.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()


def child(workers: int) -> None:
    """Start `workers` replay-mode workers of the code on the path; print the timings."""
    from hitrun.streams.config import Settings
    from hitrun.streams.replay_command import ReplayWorkers

    group = ReplayWorkers(Settings.from_env(os.environ), workers, lambda _line: None)
    started = time.monotonic()
    group.launch()
    try:
        ready = []
        for worker in group.workers:
            worker.wait_ready(90.0)
            ready.append(time.monotonic() - started)
    finally:
        stopping = time.monotonic()
        group.stop(keep_topics=False, failed=False)
    print(json.dumps({"ready": ready, "stop": time.monotonic() - stopping}))


def run(tree: Path | None, workers: int) -> dict[str, Any]:
    """One run of the workers of `tree` (None: this checkout)."""
    env = dict(os.environ)
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
    result = subprocess.run(
        [sys.executable, str(HERE), "--child", "--workers", str(workers)],
        cwd=tree or HERE.parent.parent,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"bench-startup: a run failed:\n{result.stdout}{result.stderr}")
    timings: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return timings


async def create_other_topics(settings: Any, count: int, prefix: str) -> None:
    """Create `count` topics of HITRUN_PARTITIONS partitions named `prefix`N, in requests
    of 100, and wait until every partition has a leader."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    from hitrun.streams.kafka_auth import client_options, started
    from hitrun.streams.topics import _wait_for_leaders

    names = [f"{prefix}{n}" for n in range(count)]
    admin = await started(lambda: AIOKafkaAdminClient(**client_options(settings)), settings)
    try:
        for first in range(0, count, 100):
            chunk = names[first : first + 100]
            await admin.create_topics([NewTopic(name, settings.partitions, 1) for name in chunk])
        await _wait_for_leaders(admin, names, 300.0)
    finally:
        await admin.close()


def other_topics(stack: ExitStack, count: int) -> None:
    """Create the other topics now and delete them when `stack` closes."""
    from hitrun.streams.config import Settings
    from hitrun.streams.topics import delete_topics_of

    prefix = f"bench-startup-other-{os.getpid()}-"
    settings = Settings.from_env(os.environ)
    stack.callback(lambda: asyncio.run(delete_topics_of(settings, prefix, settle_s=60.0)))
    began = time.monotonic()
    asyncio.run(create_other_topics(settings, count, prefix))
    print(f"bench-startup: {count} other topics created in {time.monotonic() - began:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--compare-with", metavar="REV", default=None)
    parser.add_argument("--other-topics", type=int, default=0, metavar="N")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.workers)
        return
    from bench.replay import worktree

    with ExitStack() as stack:
        trees: dict[str, Path | None] = {"this": None}
        if args.compare_with:
            path = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "base"
            trees[args.compare_with] = stack.enter_context(worktree(args.compare_with, path))
        if args.other_topics:
            other_topics(stack, args.other_topics)
        all_ready: dict[str, list[float]] = {name: [] for name in trees}
        for n in range(1, args.repeat + 1):
            for name, tree in trees.items():
                timings = run(tree, args.workers)
                ready = [float(t) for t in timings["ready"]]
                all_ready[name].append(max(ready))
                print(
                    f"bench-startup: run {n} {name}: ready "
                    + ", ".join(f"{t:.2f}" for t in ready)
                    + f" s; stopped in {float(timings['stop']):.2f} s",
                    flush=True,
                )
        for name, times in all_ready.items():
            print(
                f"bench-startup: {name}: all {args.workers} ready in a median of "
                f"{statistics.median(times):.2f} s ({min(times):.2f}-{max(times):.2f})"
            )
        if args.compare_with:
            ratio = statistics.median(all_ready[args.compare_with]) / statistics.median(
                all_ready["this"]
            )
            print(f"bench-startup: median ratio {args.compare_with}/this = {ratio:.2f}")


if __name__ == "__main__":
    main()
