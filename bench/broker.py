"""`make bench-broker`: the local broker's JVM options against a baseline's, in the same run.

Each run starts a fresh local broker (`dev/localkafka.py`, a new data
directory, free ports) with one set of extra JVM options, times it to ready,
then runs `hitrun replay` of one real-shaped transactions file (`bench/replay.py`,
`write_real_shaped`) `--replays` times against it, each with its own workers
and topics, as a user's first replays on a new machine do. It reads the
broker's CPU seconds from /proc per thread (the JIT's compiler threads apart)
before and after each replay. The options under test (default: none, the
broker's defaults) and the baseline's (default `-XX:TieredStopAtLevel=4`, full
tiered compilation with C2) run alternately `--repeat` times. Every replay
must apply all its events; the broker is stopped by process id after each run.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.replay import write_real_shaped
from hitrun.dev.localkafka import LocalKafka, free_port

ROOT = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Run:
    options: str
    ready_s: float
    cpu_at_ready_s: float
    replays: list[tuple[float, float, float, float]] = field(default_factory=list)
    # (command's wall time, its "processed in", broker CPU, of it the JIT's)


def broker_cpu(pid: int) -> tuple[float, float]:
    """CPU seconds of every thread of `pid` so far, and of its JIT compiler threads."""
    total = jit = 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # a thread that ended meanwhile
        seconds = (int(fields[11]) + int(fields[12])) / TICKS
        total += seconds
        if "Compiler" in name:
            jit += seconds
    return total, jit


def replay(bootstrap: str, file: Path, app_id: str) -> tuple[float, float]:
    """Run `hitrun replay FILE` with its own workers; its wall time and "processed in"."""
    env = {
        **os.environ,
        "HITRUN_KAFKA_BOOTSTRAP": bootstrap,
        "HITRUN_APP_ID": app_id,
        "HITRUN_WATERMARK_KEY": f"bench-broker-{app_id}",
    }
    command = [sys.executable, "-m", "hitrun.streams.cli", "replay", str(file)]
    started = time.monotonic()
    done = subprocess.run(
        [*command, "--time-column", "date"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    wall = time.monotonic() - started
    processed = re.search(r"processed in ([\d.]+)s", done.stdout)
    if done.returncode != 0 or processed is None:
        raise SystemExit(f"bench-broker: the replay failed:\n{done.stdout}\n{done.stderr}")
    return wall, float(processed.group(1))


def one_run(options: str, file: Path, replays: int, workdir: Path, tag: str) -> Run:
    broker = LocalKafka(workdir / tag, port=free_port(), jvm_options=shlex.split(options))
    started = time.monotonic()
    broker.start(timeout=180)
    try:
        assert broker.process is not None
        pid = broker.process.pid
        run = Run(options, time.monotonic() - started, broker_cpu(pid)[0])
        for n in range(replays):
            before = broker_cpu(pid)
            wall, processed = replay(broker.bootstrap, file, f"bench-broker-{tag}-{n}")
            after = broker_cpu(pid)
            run.replays.append((wall, processed, after[0] - before[0], after[1] - before[1]))
    finally:
        broker.stop()
    return run


def describe(run: Run) -> str:
    label = run.options or "(defaults)"
    parts = [f"ready {run.ready_s:.1f} s (broker CPU {run.cpu_at_ready_s:.1f} s)"]
    for n, (wall, processed, cpu, jit) in enumerate(run.replays, start=1):
        parts.append(
            f"replay {n}: {wall:.1f} s, processed in {processed:.1f} s, "
            f"broker CPU {cpu:.2f} s (JIT {max(jit, 0.0):.2f} s)"
        )
    return f"  {label}: " + "; ".join(parts)


def summary(runs: list[Run], options: str) -> tuple[float, float, float]:
    """Medians over the runs of `options`: ready time, broker CPU and command time a replay."""
    mine = [run for run in runs if run.options == options]
    return (
        statistics.median(run.ready_s for run in mine),
        statistics.median(cpu for run in mine for _, _, cpu, _ in run.replays),
        statistics.median(wall for run in mine for wall, _, _, _ in run.replays),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--options", default="", help="the broker's extra JVM options under test")
    parser.add_argument(
        "--baseline", default="-XX:TieredStopAtLevel=4", help="the baseline's extra JVM options"
    )
    parser.add_argument("--transactions", type=int, default=70_000)
    parser.add_argument("--replays", type=int, default=2, help="replays against each broker")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each, alternately")
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-broker-") as tmp:
        workdir = Path(tmp)
        file = workdir / "transactions.csv"
        write_real_shaped(file, args.transactions, args.seed)
        print(
            f"bench-broker: {args.transactions:,} real-shaped transactions, {args.replays} "
            f"replays a broker, {args.repeat} runs each, alternately",
            flush=True,
        )
        runs: list[Run] = []
        for n in range(args.repeat):
            for which, options in (("test", args.options), ("base", args.baseline)):
                runs.append(one_run(options, file, args.replays, workdir, f"{which}{n}"))
                print(describe(runs[-1]), flush=True)
    test, base = summary(runs, args.options), summary(runs, args.baseline)
    print(
        f"bench-broker: medians, {args.options or '(defaults)'} against {args.baseline}: "
        f"ready {test[0]:.1f} s vs {base[0]:.1f} s ({base[0] / test[0]:.2f}x); "
        f"broker CPU a replay {test[1]:.2f} s vs {base[1]:.2f} s ({base[1] / test[1]:.2f}x); "
        f"replay command {test[2]:.1f} s vs {base[2]:.1f} s ({base[2] / test[2]:.2f}x)"
    )


if __name__ == "__main__":
    main()
