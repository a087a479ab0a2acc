"""`make bench-startup`: how long workers started together take to be ready, against a
baseline revision in the same run.

Each run starts N replay-mode workers (default 2) on topics of their own, as
`hitrun replay` starts them (`ReplayWorkers`), and times, from the launch,
when each answers `/readyz` with 200 (partitions assigned, tables recovered,
deadline index rebuilt), then how long stopping them all takes. With
`--compare-with REV` the same runs are made, alternately, with the workers of
another revision (a temporary git worktree). Only the broker must be running.

Each run is a child process of this script with the revision's code first on
its path (`--child`), so the workers it starts run that revision.
"""

from __future__ import annotations

import argparse
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--compare-with", metavar="REV", default=None)
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
