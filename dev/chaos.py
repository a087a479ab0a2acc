"""Chaos runs: kill workers and stop the broker at random, then compare the alerts with a clean run.

A clean run and a chaos run get the same input on topics of their own (each
its own app id and consumer group). In the chaos run one of two workers is
SIGKILLed at random moments and restarted at once, or stalled (SIGSTOP) past
its session timeout and woken again, or the broker is stopped for a while and
started again while the workers keep running. When both runs
have committed every input record, their alerts are compared alert for
alert, by `alert_id` and body.

    python -m hitrun.dev.chaos                  # the short version (as in the test suite)
    python -m hitrun.dev.chaos --long           # make chaos: 20+ kills a mode, 30,000 transactions,
                                                # and a live run with both link policies on
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from hitrun.dev.localkafka import LocalKafka, free_port
from hitrun.dev.worker import WorkerProcess, delete_run_topics, topic_env, worker_env
from hitrun.streams.config import Settings
from hitrun.streams.publisher import Mark, publish
from hitrun.streams.replay import Progress, with_watermarks
from hitrun.streams.simulate import GroundTruth, SimMessage, TrafficShape, generate
from hitrun.streams.topics import ensure_topics, read_from
from hitrun.streams.transactions import FileFormat, read_transactions, transaction_events

ALERT_ROLES = ("reminders", "strikes", "blacklist", "retention")
# Both opt-in link policies (docs/detection.md, "Linked accounts").
LINK_POLICIES = {"HITRUN_LINKED_ACCOUNTS": "blacklist", "HITRUN_LINKED_STRIKES": "shared"}


@dataclass
class Outputs:
    """What one run produced: alerts by id (every copy), status records, dead letters."""

    alerts: dict[str, list[bytes]] = field(default_factory=dict)
    status: dict[bytes, bytes | None] = field(default_factory=dict)
    dead_letters: set[tuple[str, int, int, str]] = field(default_factory=set)
    reasons: Counter[str] = field(default_factory=Counter)  # of the distinct dead letters
    # The distinct dead letters as (topic, key, value, reason): what two runs share
    # even when their producers placed the messages in different partitions.
    refused: Counter[tuple[str, str | None, str | None, str]] = field(default_factory=Counter)
    inputs: int = 0


@dataclass
class Report:
    """One chaos run against its clean run."""

    mode: str
    inputs: int
    applied: int
    dead_lettered: int
    clean_alerts: int
    lost: list[str]
    extra: list[str]
    duplicated: int
    differing: list[str]
    status_differing: int
    # Dead letters (distinct, by reason) the chaos run wrote that the clean run did not, or
    # the other way round: a message must be dead-lettered exactly as in a clean run.
    dead_letters_differing: int
    kills: int
    outages: int
    alert_types: Counter[str] = field(default_factory=Counter)
    # Workers stalled past their session timeout and woken again (`pauser`).
    pauses: int = 0
    examples: list[str] = field(default_factory=list)
    # Blacklistings of the clean run that rest on a link (docs/detection.md, the
    # policies `linked_accounts: blacklist` and `linked_strikes: shared`).
    through_links: int = 0
    # Pairs of accounts unlinked because an identifier turned common, in either run:
    # compared like the rest (the identity stage links the same first K customers of
    # an identifier whatever the order it reads them in), counted to show the input
    # has some.
    crossed: int = 0
    # The lost, extra and differing alerts by type.
    disagreeing: Counter[str] = field(default_factory=Counter)

    @property
    def equal(self) -> bool:
        return not (
            self.lost
            or self.extra
            or self.differing
            or self.status_differing
            or self.dead_letters_differing
        )

    def line(self) -> str:
        return (
            f"{self.mode:<8} {self.inputs:>7} {self.applied:>7} {self.dead_lettered:>6} "
            f"{self.clean_alerts:>7} {len(self.lost):>5} {len(self.extra):>5} "
            f"{self.duplicated:>5} {len(self.differing):>5} {self.status_differing:>6} "
            f"{self.kills:>5} {self.outages:>7} {self.pauses:>6}"
        )


HEADER = (
    f"{'mode':<8} {'inputs':>7} {'applied':>7} {'dead':>6} {'alerts':>7} {'lost':>5} "
    f"{'extra':>5} {'dupl':>5} {'diff':>5} {'status':>6} {'kills':>5} {'outages':>7} "
    f"{'pauses':>6}"
)


def compare(mode: str, clean: Outputs, chaos: Outputs, kills: int, outages: int) -> Report:
    """Alert for alert: lost, extra, duplicated (same id again) and differing bodies."""
    crossed = _crossed(clean) | _crossed(chaos)

    lost = sorted(set(clean.alerts) - set(chaos.alerts))
    extra = sorted(set(chaos.alerts) - set(clean.alerts))
    differing = sorted(
        alert_id
        for alert_id, copies in chaos.alerts.items()
        if alert_id in clean.alerts and any(copy != clean.alerts[alert_id][0] for copy in copies)
    )
    duplicated = sum(len(copies) - 1 for copies in chaos.alerts.values())
    status_keys = set(clean.status) | set(chaos.status)
    status_differing = sum(clean.status.get(k) != chaos.status.get(k) for k in status_keys)
    bodies = [orjson.loads(copies[0]) for copies in clean.alerts.values()]
    types: Counter[str] = Counter(body["type"] for body in bodies)
    through_links = sum(
        body["type"] == "customer_blacklisted" and "linked" in body["reason"] for body in bodies
    )
    if clean.reasons != chaos.reasons:
        examples_reasons = [f"dead letters: clean {dict(clean.reasons)}, run {dict(chaos.reasons)}"]
    else:
        examples_reasons = []
    examples = (
        examples_reasons
        + [
            f"{label} {_describe(source.alerts[i][0])}"
            for label, ids, source in (("lost", lost, clean), ("extra", extra, chaos))
            for i in ids[:5]
        ]
        + [f"differing {_describe(chaos.alerts[i][0])}" for i in differing[:5]]
    )
    return Report(
        mode=mode,
        inputs=chaos.inputs,
        applied=chaos.inputs - len(chaos.dead_letters),
        dead_lettered=len(chaos.dead_letters),
        clean_alerts=len(clean.alerts),
        lost=lost,
        extra=extra,
        duplicated=duplicated,
        differing=differing,
        status_differing=status_differing,
        dead_letters_differing=sum(
            ((clean.refused - chaos.refused) + (chaos.refused - clean.refused)).values()
        ),
        kills=kills,
        outages=outages,
        alert_types=types,
        examples=examples,
        through_links=through_links,
        crossed=len({frozenset(pair) for pair in crossed}),
        disagreeing=Counter(
            orjson.loads(source.alerts[i][0])["type"]
            for ids, source in ((lost, clean), (extra, chaos), (differing, chaos))
            for i in ids
        ),
    )


def _crossed(outputs: Outputs) -> set[tuple[str, str]]:
    """The (customer, other) pairs, both ways, unlinked because an identifier turned common."""
    pairs: set[tuple[str, str]] = set()
    for copies in outputs.alerts.values():
        alert = orjson.loads(copies[0])
        if alert["type"] == "account_unlinked" and alert["cause"] == "identifier_common":
            pair = (alert["customer_id"], alert["linked_customer_id"])
            pairs |= {pair, pair[::-1]}
    return pairs


def _describe(body: bytes) -> str:
    alert = orjson.loads(body)
    return f"{alert['type']} customer={alert.get('customer_id')} order={alert.get('order_id')}"


# -- input ------------------------------------------------------------------


def replay_input(transactions: int, seed: int, workdir: Path) -> list[SimMessage | Mark]:
    """A seeded transactions file as `hitrun replay` publishes it: events and watermarks."""
    from bench.replay import write_transactions

    path = workdir / f"transactions-{seed}.csv"
    write_transactions(path, transactions, seed)
    result = read_transactions(path, FileFormat())
    horizon = Settings.from_env({}).replay_horizon()  # the default policy's, as the runs use
    events = transaction_events(result.transactions, source=result.digest)
    return list(with_watermarks(events, horizon, source="chaos", every=2_000))


def live_input(messages: int, seed: int, identities: bool = False) -> list[SimMessage | Mark]:
    """Simulated shop traffic whose event times drive the deadlines, ending with a watermark.

    The traffic starts 200 days ago, so every window it opens has closed by
    the final watermark (a minute ago: no later than the workers' clocks).
    `identities`: hashed identifiers, evaders and shared devices, customers
    spread over weeks so that evaders come back within the traffic.
    """
    now = datetime.now(UTC).replace(microsecond=0)
    shape = TrafficShape(seed=seed, start=now - timedelta(days=200), malformed_ratio=0.01)
    if identities:
        # About 90 days of new customers whatever the size: more would run past the
        # wall clock, and be dead-lettered `from_future` instead of applied.
        gap = timedelta(minutes=40) * min(1.0, 10_000 / messages)
        shape = replace(shape, customer_gap=gap, evaders=0.05, shared_device_users=0.1)
    traffic: list[SimMessage | Mark] = list(generate(shape, messages, GroundTruth()))
    traffic.append(Mark(now - timedelta(minutes=1), "chaos"))
    return traffic


# -- runs -------------------------------------------------------------------


def run_env(bootstrap: str, workdir: Path, mode: str, label: str) -> dict[str, str]:
    tag = f"{label}-{uuid.uuid4().hex[:8]}"
    (workdir / tag).mkdir(parents=True)
    return {
        "HITRUN_KAFKA_BOOTSTRAP": bootstrap,
        "HITRUN_APP_ID": f"chaos-{tag}",
        **topic_env(f"chaos-{tag}"),
        "HITRUN_PARTITIONS": "4",
        "HITRUN_DATA_DIR": str(workdir / tag / "state"),
        "HITRUN_COMMIT_INTERVAL": "200ms",
        "HITRUN_SESSION_TIMEOUT": "6s",
        "HITRUN_CLOCK_MODE": mode,
        "HITRUN_WATERMARK_KEY": f"chaos-{tag}",
        # The identity topics' records are signed and checked, as in production.
        "HITRUN_INTERNAL_KEY": f"chaos-internal-{tag}",
        # Live runs are driven by event time alone: wall-clock ticks would make
        # the outcome depend on when each record happened to be read.
        "HITRUN_TICK_INTERVAL": "3650d",
        # A partition waits for a killed worker's partitions until their new owner
        # reads them (the session timeout, then recovery). The default (3s) gives up
        # sooner, for availability, and then a misplaced event may meet a deadline
        # that fired (docs/detection.md): the runs test the loop, not that trade-off.
        "HITRUN_PROGRESS_TIMEOUT": "120s",
        "HITRUN_LOG_LEVEL": "warning",
    }


class Group:
    """Worker processes of one run, stopped by pid at the end."""

    def __init__(self, env: dict[str, str], workdir: Path, size: int) -> None:
        self.workers = [
            WorkerProcess(worker_env(env, n), workdir / f"{env['HITRUN_APP_ID']}-{n}.log")
            for n in range(size)
        ]

    def start(self) -> None:
        for worker in self.workers:
            worker.launch()
        for worker in self.workers:
            worker.wait_ready(120)

    def restart(self, n: int) -> None:
        self.workers[n].kill()
        self.workers[n].launch()

    def alive(self) -> bool:
        return all(w.process is not None and w.process.poll() is None for w in self.workers)

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()

    def log_tails(self) -> str:
        return "\n".join(w.log_tail(30) for w in self.workers)


# Disturbs a running group (kills, an outage); returns how many disturbances it made.
Disturb = Callable[[Group], int]


def run(
    bootstrap: str,
    workdir: Path,
    mode: str,
    traffic: list[SimMessage | Mark],
    label: str,
    disturb: Disturb | None = None,
    timeout: float = 600.0,
    partitioner: str = "murmur2",
    settings_env: Mapping[str, str] | None = None,
    rate: float = 0.0,
) -> tuple[Outputs, int]:
    """Publish `traffic` to a fresh run of two workers, disturbed by `disturb` meanwhile.

    `partitioner`: how the producer places keyed messages (streams/publisher.py);
    "crc32" (librdkafka's default) puts most of them in another partition than
    their customer's, for the workers to reroute. `rate`: messages a second
    (0: as fast as the broker takes them).
    """
    env = run_env(bootstrap, workdir, mode, label) | dict(settings_env or {})
    settings = Settings.from_env(env)
    group = Group(env, workdir, 2)
    # Replay traffic is published while the workers run, as `hitrun replay` does.
    # Live traffic is a backlog published first: were it published while the
    # workers read, the outcome of a payment close to its deadline would depend
    # on how far the producer's topics happened to be apart at that moment
    # (real producer delay, which a live run cannot replay alike).
    backlog = mode == "live"
    sent: list[int] = []

    def publish_all() -> None:
        sent.append(
            asyncio.run(publish(settings, traffic, partitioner=partitioner, rate=rate)).sent
        )

    try:
        asyncio.run(ensure_topics(settings))
        if backlog:
            publish_all()
        group.start()
        publisher = None if backlog else threading.Thread(target=publish_all, daemon=True)
        if publisher is not None:
            publisher.start()
        # Disturbances run here, in the main thread: the workers and brokers they
        # restart die with this process (dev/localkafka.py, die_with_parent).
        disturbed = disturb(group) if disturb is not None else 0
        if publisher is not None:
            publisher.join()
        if not sent:
            raise RuntimeError("publishing the input failed")
        wait_until_done(settings, timeout)
        # A worker is only ever killed by `disturb`, which starts it again: one that
        # exited by itself (a crash on a rebalance, say) is a failure of its own.
        if not group.alive():
            raise RuntimeError("a worker exited by itself during the run")
        outputs = asyncio.run(read_outputs(settings))
        outputs.inputs = sent[0]
        return outputs, disturbed
    except BaseException:
        print(group.log_tails(), file=sys.stderr)
        raise
    finally:
        group.stop()
        failed = delete_run_topics(env)
        if failed is not None:
            print(
                f"chaos: could not delete the topics of {settings.app_id}: {failed}",
                file=sys.stderr,
            )


class Quiet:
    """Tells when a run is done: no input record left uncommitted, and the outputs
    unchanged for `seconds` since then, however often input came in meanwhile (the
    workers' progress marks)."""

    def __init__(self, seconds: float = 3.0) -> None:
        self.seconds = seconds
        self._ends: Mapping[TopicPartition, int] | None = None
        self._since: float | None = None

    def done(self, remaining: int, ends: Mapping[TopicPartition, int] | None, now: float) -> bool:
        """After a look at `now`: `remaining` uncommitted, the outputs' `ends` (None when
        not looked at, with records remaining)."""
        if remaining > 0:
            self._since = None
            return False
        if ends != self._ends or self._since is None:
            self._ends, self._since = ends, now
            return False
        return now - self._since > self.seconds


def wait_until_done(settings: Settings, timeout: float) -> None:
    """Until every input record is committed and the outputs have stopped growing."""

    async def wait() -> None:
        deadline = time.monotonic() + timeout
        quiet = Quiet()
        left: dict[TopicPartition, int] = {}
        async with Progress(settings) as progress:
            while time.monotonic() < deadline:
                await asyncio.sleep(0.5)
                left = await progress.remaining_by_partition()
                remaining = sum(left.values())
                ends = None if remaining else await _output_ends(settings)
                if quiet.done(remaining, ends, time.monotonic()):
                    return
        # Which way it is stuck: input left uncommitted (where), or outputs still growing.
        stuck = (
            "uncommitted: "
            + ", ".join(f"{tp.topic}[{tp.partition}] {n}" for tp, n in sorted(left.items()))
            if left
            else "every input committed, the outputs still growing"
        )
        raise TimeoutError(f"the run did not finish in {timeout:.0f}s ({stuck})")

    asyncio.run(wait())


async def _output_ends(settings: Settings) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    await consumer.start()
    try:
        tps = [
            TopicPartition(topic, p)
            for topic in _output_topics(settings)
            for p in range(settings.partitions)
        ]
        ends: dict[TopicPartition, int] = await consumer.end_offsets(tps)
        return ends
    finally:
        await consumer.stop()


def _output_topics(settings: Settings) -> list[str]:
    return [
        *(settings.output_topics[r] for r in ALERT_ROLES),
        settings.topic_blacklist_status,
        settings.topic_dead_letters,
    ]


async def read_outputs(settings: Settings) -> Outputs:
    """Every record of the run's output topics, from the beginning to their current ends."""
    out = Outputs()
    alert_topics = {settings.output_topics[r] for r in ALERT_ROLES}
    since = {
        TopicPartition(topic, p): 0
        for topic in _output_topics(settings)
        for p in range(settings.partitions)
    }
    async for tp, record in read_from(settings, since):
        if tp.topic in alert_topics and record.value is not None:
            alert_id = orjson.loads(record.value)["alert_id"]
            out.alerts.setdefault(alert_id, []).append(record.value)
        elif tp.topic == settings.topic_blacklist_status and record.key is not None:
            out.status[record.key] = record.value  # the latest per customer
        elif tp.topic == settings.topic_dead_letters and record.value is not None:
            letter = orjson.loads(record.value)
            source = letter["source"]
            # Where the refused message was, in terms both runs share (their topics differ).
            where = (
                source["topic"].removeprefix(settings.app_id),
                source["partition"],
                source["offset"],
                letter["reason"],
            )
            if where not in out.dead_letters:
                out.dead_letters.add(where)
                out.reasons[letter["reason"]] += 1
                refused = (where[0], letter["key_b64"], letter["value_b64"], letter["reason"])
                out.refused[refused] += 1
    return out


# -- disturbances ----------------------------------------------------------


def killer(kills: int, seed: int, gap: tuple[float, float]) -> Disturb:
    """SIGKILL one of the workers at random moments, `kills` times, restarting it at once."""

    def disturb(group: Group) -> int:
        rng = random.Random(seed)
        for _ in range(kills):
            time.sleep(rng.uniform(*gap))
            group.restart(rng.randrange(len(group.workers)))
        return kills

    return disturb


def pauser(pauses: int, seed: int, pause_s: float, gap: tuple[float, float]) -> Disturb:
    """SIGSTOP one of the workers at random moments for `pause_s` seconds (longer than the
    session timeout: the group gives its partitions to the other), then SIGCONT it: it
    wakes with the batch it had in hand, as after a long stall of the process or the
    machine, and rejoins."""

    def disturb(group: Group) -> int:
        rng = random.Random(seed)
        for _ in range(pauses):
            time.sleep(rng.uniform(*gap))
            process = group.workers[rng.randrange(len(group.workers))].process
            if process is None:
                raise RuntimeError("a worker to pause was never started")
            process.send_signal(signal.SIGSTOP)
            try:
                time.sleep(pause_s)
            finally:
                process.send_signal(signal.SIGCONT)
        return pauses

    return disturb


def outage(broker: LocalKafka, after_s: float, down_s: float) -> Disturb:
    """Stop the broker `after_s` into the run for `down_s` seconds, then start it again."""

    def disturb(group: Group) -> int:
        time.sleep(after_s)
        broker.stop()
        time.sleep(down_s)
        broker.start(timeout=120)
        if not group.alive():
            raise RuntimeError("a worker exited during the broker outage:\n" + group.log_tails())
        return 1

    return disturb


# -- the modes ---------------------------------------------------------------


def chaos_kills(
    bootstrap: str,
    workdir: Path,
    mode: str,
    size: int,
    kills: int,
    seed: int,
    partitioner: str = "murmur2",
    identities: bool = False,
    settings_env: Mapping[str, str] | None = None,
    traffic: list[SimMessage | Mark] | None = None,
) -> Report:
    """A clean run and a run with `kills` random SIGKILLs on the same input (`traffic`,
    or `size` messages made for `mode`), the latter published with `partitioner` (the
    clean run with murmur2); `settings_env`: HITRUN_* settings of both runs."""
    if traffic is None and mode == "replay":
        traffic = replay_input(size, seed, workdir)
    elif traffic is None:
        traffic = live_input(size, seed, identities)
    clean, _ = run(bootstrap, workdir, mode, traffic, "clean", settings_env=settings_env)
    chaos, done = run(
        bootstrap,
        workdir,
        mode,
        traffic,
        "kills",
        killer(kills, seed, gap=(0.5, 3.0)),
        partitioner=partitioner,
        settings_env=settings_env,
    )
    return compare(mode, clean, chaos, kills=done, outages=0)


def chaos_pauses(
    bootstrap: str, workdir: Path, transactions: int, pauses: int, seed: int, rate: float
) -> Report:
    """A clean replay and one whose workers are stalled past their session timeout
    `pauses` times (`pauser`): the stalled worker's batch must not undo its successor's.

    The stalled run's input is published at `rate` messages a second, so that
    records keep coming while a stalled worker wakes, and after it has taken
    partitions back: what it does then shows whether its store is whole.
    """
    traffic = replay_input(transactions, seed, workdir)
    clean, _ = run(bootstrap, workdir, "replay", traffic, "clean")
    # Stalled for twice the session timeout (run_env: 6 s), a second or two apart.
    stalls = pauser(pauses, seed, 12.0, (0.5, 2.0))
    paused, done = run(bootstrap, workdir, "replay", traffic, "pauses", stalls, rate=rate)
    return replace(compare("replay", clean, paused, kills=0, outages=0), mode="pauses", pauses=done)


def chaos_outage(workdir: Path, size: int, down_s: float, seed: int) -> Report:
    """A clean run and a run whose broker (its own) is stopped for `down_s` seconds."""
    traffic = live_input(size, seed)
    with LocalKafka(workdir / "outage-kafka", port=free_port()) as broker:
        clean, _ = run(broker.bootstrap, workdir, "live", traffic, "clean")
        chaos, outages = run(
            broker.bootstrap, workdir, "live", traffic, "outage", outage(broker, 0.3, down_s)
        )
    return compare("outage", clean, chaos, kills=0, outages=outages)


@contextmanager
def broker(workdir: Path, existing: str | None) -> Iterator[str]:
    if existing:
        yield existing
        return
    with LocalKafka(workdir / "kafka", port=free_port()) as broker:
        yield broker.bootstrap


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hitrun.dev.chaos", description=__doc__)
    parser.add_argument("--long", action="store_true", help="20+ kills a mode, 30,000 transactions")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--bootstrap", default=None, help="an existing broker for the kill runs")
    args = parser.parse_args(argv)
    transactions, kills, down_s = (30_000, 20, 30.0) if args.long else (5_000, 5, 10.0)
    # Stalls of 12-14 s one after another, while the input still comes in.
    pauses, rate = (6, 700.0) if args.long else (2, 2_000.0)
    reports: list[Report] = []
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hitrun-chaos-")))
        bootstrap = stack.enter_context(broker(workdir, args.bootstrap))
        for mode in ("replay", "live"):
            size = transactions if mode == "replay" else 2 * transactions
            # Live: a producer partitioning like librdkafka (most events rerouted), and
            # customers with hashed identifiers, evaders among them (linked accounts).
            live = mode == "live"
            partitioner = "crc32" if live else "murmur2"
            reports.append(
                chaos_kills(bootstrap, workdir, mode, size, kills, args.seed, partitioner, live)
            )
            print(f"chaos: {reports[-1].line()}", flush=True)
        if args.long:
            # The live input again, with both opt-in link policies on, so that links
            # also blacklist (the suite runs a shorter one, murmur2 in both runs).
            policies = chaos_kills(
                bootstrap,
                workdir,
                "live",
                2 * transactions,
                kills,
                args.seed,
                "crc32",
                identities=True,
                settings_env=LINK_POLICIES,
            )
            reports.append(replace(policies, mode="policies"))
            print(f"chaos: {reports[-1].line()}", flush=True)
        reports.append(chaos_pauses(bootstrap, workdir, transactions, pauses, args.seed, rate=rate))
        print(f"chaos: {reports[-1].line()}", flush=True)
        reports.append(chaos_outage(workdir, 2 * transactions, down_s, args.seed))
        equal = all(r.equal for r in reports)
        if not equal:
            kept = keep_logs(workdir, Path(".hitrun") / "chaos-failed")
            print(f"chaos: the workers' logs are in {kept}", flush=True)
    print()
    print(HEADER)
    for report in reports:
        print(report.line())
    for report in reports:
        for example in report.examples:
            print(f"  {report.mode}: {example}")
    return 0 if equal else 1


def keep_logs(workdir: Path, under: Path) -> Path:
    """Copy the runs' worker logs out of `workdir` (removed at the end) to a new folder."""
    target = under / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    target.mkdir(parents=True, exist_ok=True)
    for log in workdir.glob("*.log"):
        shutil.copy2(log, target / log.name)
    return target


if __name__ == "__main__":
    sys.exit(main())
