"""`make bench-core`: hitrun's own work per event, without Kafka, against a baseline revision.

The bench-replay input (a seeded transactions file turned into checkout and
payment events with signed watermarks, as `hitrun replay` publishes them) is
fed as raw records, in batches, to the customer agent as the consume loop
drives it (`CustomerProcessor`: classify, reorder, detectors, timers, state
codec, alert records, changelog records), with a sink that only keeps the
records. What is timed is everything hitrun does between a fetched record and
a produced one; Kafka is not involved. The garbage collector runs with the
worker's threshold (`WORKER_GC_THRESHOLD`), in a revision that sets one.

Each run is a fresh process. With `--compare-with REV` the same runs are made
with the code of another revision (a temporary git worktree), alternately, and
both must produce the same output records (alerts, status, dead letters; the
changelog's bytes may differ between revisions) for the figure to count.
`--profile` adds a table of where the time goes, by part of the code.
`--instructions` counts instructions per input event with valgrind's
callgrind instead of timing: a run over the input less one over a fifth of
it, over the events between them. The count does not move with the
machine's other load, so it shows changes of a few percent that timing on a
shared machine cannot.
`--zone +07:00` writes the events' times at that offset (as a shop in that
zone sends them; the watermarks stay in UTC, as `hitrun replay` writes them).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import hashlib
import os
import pstats
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any

import orjson

BATCH = 2000
KEY = "bench-core-watermark-key"
# Under valgrind a run is about 50 times slower: a smaller input by default.
INSTRUCTION_TRANSACTIONS = 5_000

# Where a function's own time is counted, by the file it is defined in (first match).
PARTS = (
    (
        "decode and validate input",
        (
            "streams/codec.py",
            "streams/ingest.py",
            "schemas/",
            "fastjsonschema",
            "<string>",
            "json",
            "msgspec",
            "_strptime",
            "re/",
            "hmac",
            "hashlib",
            "streams/watermarks.py",
            "streams/partitioning.py",
        ),
    ),
    ("unpaid detector", ("agents/unpaid.py", "agents/policy.py")),
    ("retention and risk detectors", ("agents/retention.py", "agents/risk.py")),
    ("state codec", ("agents/state.py", "streams/state_codec.py")),
    ("alert records", ("agents/alerts.py", "agents/effects.py", "dataclasses.py")),
    ("clock, reorder buffer, timers", ("streams/clock.py", "heapq", "agents/customer.py")),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--transactions", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each revision; best counts")
    parser.add_argument("--compare-with", metavar="REV", default=None)
    parser.add_argument("--profile", action="store_true", help="also profile one run")
    parser.add_argument(
        "--zone",
        default=None,
        metavar="OFFSET",
        help="write the events' times at this UTC offset, e.g. +07:00 (default: UTC)",
    )
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="count instructions per event under valgrind instead of timing (deterministic; "
        f"--transactions defaults to {INSTRUCTION_TRANSACTIONS:,})",
    )
    parser.add_argument("--child", metavar="DIR", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(orjson.dumps(run(Path(args.child), args.profile)).decode())
        return
    if args.instructions and args.transactions == parser.get_default("transactions"):
        args.transactions = INSTRUCTION_TRANSACTIONS
    if args.instructions and shutil.which("valgrind") is None:
        raise SystemExit("bench-core: --instructions needs valgrind (apt-get install valgrind)")
    with tempfile.TemporaryDirectory(prefix="hitrun-bench-core-") as tmp:
        workdir = Path(tmp)
        write_input(workdir, args.transactions, args.seed, args.zone)
        if args.instructions:
            # A fifth of the input: the difference leaves out start-up and imports.
            (workdir / "small").mkdir()
            write_input(workdir / "small", args.transactions // 5, args.seed, args.zone)
        trees: dict[str, Path | None] = {"this checkout": None}
        if args.compare_with:
            tree = workdir / "baseline-tree"
            subprocess.run(
                ["git", "worktree", "add", "--detach", "-q", str(tree), args.compare_with],
                check=True,
            )
            if not (tree / "hitrun").exists():
                # Its code would be imported from the installed package: this checkout's.
                subprocess.run(["git", "worktree", "remove", "--force", str(tree)], check=False)
                raise SystemExit(
                    f"bench-core: {args.compare_with} predates the hitrun package; "
                    "compare with a later revision"
                )
            (tree / "bench").mkdir(exist_ok=True)
            shutil.copy(__file__, tree / "bench" / "core.py")
            trees[args.compare_with] = tree
        try:
            if args.instructions:
                count_instructions(trees, workdir)
            else:
                compare(trees, workdir, args)
        finally:
            if args.compare_with:
                subprocess.run(
                    ["git", "worktree", "remove", "--force", str(workdir / "baseline-tree")],
                    check=False,
                )


def compare(trees: dict[str, Path | None], workdir: Path, args: argparse.Namespace) -> None:
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
    for _ in range(args.repeat):
        for name, tree in trees.items():
            results[name].append(child(tree, workdir, profile=False))
    best = {name: min(runs, key=lambda r: r["seconds"]) for name, runs in results.items()}
    for name, result in best.items():
        runs = ", ".join(f"{r['us_per_event']:.1f}" for r in results[name])
        print(
            f"bench-core: {name}: {result['us_per_event']:.1f} us per input event "
            f"(best of {runs}); {result['events']} events, {result['messages']} records "
            f"with watermarks; out: {dict(sorted(result['out'].items()))}"
        )
    names = list(best)
    if len(names) == 2:
        this, base = (best[n] for n in names)
        if this["digest"] != base["digest"]:
            raise SystemExit(
                f"bench-core: the output records differ: {this['out']} against {base['out']}"
            )
        print(
            f"bench-core: same output records; {names[1]} / this checkout = "
            f"{base['seconds'] / this['seconds']:.2f}x"
        )
    if args.profile:
        shares = child(None, workdir, profile=True)["profile"]
        print("bench-core: where this checkout's time goes (cProfile, own time by part):")
        for part, share in shares:
            print(f"  {part:<32} {share:5.1%}")


def count_instructions(trees: dict[str, Path | None], workdir: Path) -> None:
    """Instructions per input event of each tree: callgrind's count of a run over the input
    less one over a fifth of it, over the events between them. Other processes on the
    machine do not change a count; string hashing is fixed so dicts are laid out alike."""
    runs = [
        (name, tree, data) for name, tree in trees.items() for data in (workdir / "small", workdir)
    ]
    with ThreadPoolExecutor(max_workers=2) as pool:  # one valgrind a core
        counted = list(pool.map(lambda r: child(r[1], r[2], profile=False, valgrind=True), runs))
    per_event: dict[str, float] = {}
    for i, name in enumerate(trees):
        small, large = counted[2 * i], counted[2 * i + 1]
        events = large["events"] - small["events"]
        per_event[name] = (large["instructions"] - small["instructions"]) / events
        print(
            f"bench-core: {name}: {per_event[name]:,.0f} instructions per input event "
            f"({large['events']} against {small['events']} events; callgrind); "
            f"out: {dict(sorted(large['out'].items()))}"
        )
    names = list(trees)
    if len(names) == 2:
        this, base = (counted[2 * i + 1] for i in range(2))
        if this["digest"] != base["digest"]:
            raise SystemExit(
                f"bench-core: the output records differ: {this['out']} against {base['out']}"
            )
        ratio = per_event[names[1]] / per_event[names[0]]
        print(f"bench-core: same output records; {names[1]} / this checkout = {ratio:.3f}x")


def child(
    tree: Path | None, workdir: Path, profile: bool, valgrind: bool = False
) -> dict[str, Any]:
    command = [sys.executable, "-m", "bench.core", "--child", str(workdir)]
    if profile:
        command.append("--profile")
    env = {**os.environ, **environment(workdir)}
    if valgrind:
        command = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *command]
        env["PYTHONHASHSEED"] = "0"
    done = subprocess.run(
        command,
        cwd=tree or Path(__file__).resolve().parent.parent,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"bench-core: the run in {tree or 'this checkout'} failed:\n{done.stderr}")
    result: dict[str, Any] = orjson.loads(done.stdout.splitlines()[-1])
    if valgrind:
        collected = re.search(r"Collected : (\d+)", done.stderr)
        if collected is None:
            raise SystemExit(f"bench-core: no instruction count from valgrind:\n{done.stderr}")
        result["instructions"] = int(collected.group(1))
    return result


def environment(workdir: Path) -> dict[str, str]:
    return {
        "HITRUN_CLOCK_MODE": "replay",
        "HITRUN_WATERMARK_KEY": KEY,
        "HITRUN_PARTITIONS": "8",
        "HITRUN_DATA_DIR": str(workdir / f"state-{os.getpid()}-{time.monotonic_ns()}"),
        "HITRUN_LOG_LEVEL": "warning",
        # The table's store is not what is measured here (and it is the same for both).
        "HITRUN_STORE": "memory://",
    }


def at_offset(value: bytes, zone: tzinfo) -> bytes:
    """An event's JSON with each of its times (`..._at`) written at `zone`'s offset."""
    body = orjson.loads(value)
    for name, field in body.items():
        if name.endswith("_at") and isinstance(field, str):
            body[name] = datetime.fromisoformat(field).astimezone(zone).isoformat()
    return orjson.dumps(body)


def write_input(workdir: Path, transactions: int, seed: int, zone: str | None = None) -> None:
    """The raw records, as `hitrun replay` would publish them, in a file of JSON lines;
    with `zone` (an offset such as +07:00), the events' times at that offset."""
    from bench.replay import write_transactions
    from hitrun.streams.config import Settings
    from hitrun.streams.partitioning import partition_for_key
    from hitrun.streams.publisher import Mark, role_topics
    from hitrun.streams.replay import with_watermarks
    from hitrun.streams.transactions import (
        FileFormat,
        read_transactions,
        transaction_events,
    )
    from hitrun.streams.watermarks import signature

    settings = Settings.from_env(environment(workdir))
    shop_zone = None if zone is None else datetime.fromisoformat(f"2000-01-01T00:00{zone}").tzinfo
    data = workdir / "transactions.csv"
    write_transactions(data, transactions, seed)
    read = read_transactions(data, FileFormat())
    events = transaction_events(read.transactions, source=read.digest)
    topics = role_topics(settings)
    offsets: Counter[tuple[str, int]] = Counter()
    with (workdir / "records.jsonl").open("wb") as out:

        def record(topic: str, partition: int, key: bytes | None, value: bytes) -> None:
            offset = offsets[(topic, partition)]
            offsets[(topic, partition)] += 1
            out.write(
                orjson.dumps([topic, partition, offset, key and key.decode(), value.decode()])
            )
            out.write(b"\n")

        for message in with_watermarks(events, settings.replay_horizon(), read.digest):
            if isinstance(message, Mark):
                for topic in settings.watermarked_topics:
                    for p in range(settings.partitions):
                        body = {
                            "type": "watermark",
                            "occurred_at": message.at.isoformat(),
                            "source": message.source,
                            "signature": signature(
                                KEY.encode(), topic, p, message.at, message.source
                            ),
                        }
                        record(topic, p, None, orjson.dumps(body))
            else:
                topic = topics[message.role]
                value = message.value if shop_zone is None else at_offset(message.value, shop_zone)
                partition = partition_for_key(message.key, settings.partitions)
                record(topic, partition, message.key, value)


def run(workdir: Path, profile: bool) -> dict[str, Any]:
    """One run in this process: apply every record, batch by batch, and time it."""
    import hitrun.agents.customer as customer
    from hitrun.streams.ingest import RawMessage

    messages = []
    events = 0
    for line in (workdir / "records.jsonl").read_bytes().splitlines():
        topic, partition, offset, key, value = orjson.loads(line)
        events += key is not None
        messages.append(
            RawMessage(topic, partition, offset, None, key and key.encode(), value.encode())
        )
    # The collector as the worker sets it (its threshold), in revisions that set one.
    from hitrun.streams import worker_command

    threshold = getattr(worker_command, "WORKER_GC_THRESHOLD", None)
    if threshold is not None:
        gc.set_threshold(*threshold)
    # And what it does with the objects of its imports, in revisions that do it.
    freeze = getattr(worker_command, "freeze_startup_objects", None)
    if freeze is not None:
        freeze()
    sink = keeping_sink()
    customer.sink = sink  # type: ignore[assignment]
    processor = customer.CustomerProcessor()
    changelog = customer.changelog_topic_name
    profiler = cProfile.Profile() if profile else None

    started = time.perf_counter()
    if profiler:
        profiler.enable()
    for start in range(0, len(messages), BATCH):
        for msg in messages[start : start + BATCH]:
            processor.apply(msg)
        # Replay mode: watermarks release the events; a live-mode settle has nothing to do.
        processor.end_batch()
        processor.confirmed({})
        sink.take(changelog)
    if profiler:
        profiler.disable()
    seconds = time.perf_counter() - started

    result: dict[str, Any] = {
        "events": events,
        "messages": len(messages),
        "seconds": seconds,
        "us_per_event": seconds / events * 1e6,
        "out": dict(sink.counts),
        "digest": sink.digest(),
    }
    if profiler:
        result["profile"] = shares(profiler)
    return result


def keeping_sink() -> Any:
    """The agent's fake sink of the unit tests, also counting and hashing what batches produced."""
    from tests.unit.agent_shell import Sink

    class KeepingSink(Sink):
        """The record sink as the agent uses it; what a batch produced is counted and hashed."""

        def __init__(self) -> None:
            super().__init__()
            self.counts: Counter[str] = Counter()
            self.values: list[bytes] = []

        def take(self, changelog: str) -> None:
            for record in self.records:
                if record.topic != changelog:
                    self.counts[record.topic] += 1
                    self.values.append(record.value or b"")
            self.records.clear()

        def digest(self) -> str:
            return hashlib.sha256(b"\n".join(sorted(self.values))).hexdigest()

    return KeepingSink()


def shares(profiler: cProfile.Profile) -> list[tuple[str, float]]:
    """Own time by part; a builtin's (datetime, dict, ...) goes to the parts that called it."""
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    own: Counter[str] = Counter()
    for (filename, _, _), (_, _, tottime, _, callers) in stats.items():
        if filename != "~" or not callers:
            own[part_of(filename)] += tottime
            continue
        called = sum(c[2] for c in callers.values()) or 1.0
        for (caller_file, _, _), c in callers.items():
            own[part_of(caller_file)] += tottime * c[2] / called
    total = sum(own.values())
    return [(part, t / total) for part, t in own.most_common()]


def part_of(filename: str) -> str:
    for part, markers in PARTS:
        if any(marker in filename for marker in markers):
            return part
    return "other"


if __name__ == "__main__":
    main()
