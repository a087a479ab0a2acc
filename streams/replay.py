"""Historical replay: publish recorded events at their own times, wait, count the alerts."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from hitrun.streams.config import Settings
from hitrun.streams.kafka_auth import client_options, started
from hitrun.streams.publisher import Mark, PublishStats, publish
from hitrun.streams.simulate import SimMessage
from hitrun.streams.topics import ensure_topics, read_from, require_topics

# Watermarks every this many messages let the replay-mode worker release
# events as the replay goes, instead of holding all of them until the end.
WATERMARK_EVERY = 5_000


class ReplayError(RuntimeError):
    """The replay could not be published or was not consumed in time."""


@dataclass
class ReplayReport:
    """What a replay sent, how long each part took, and the alerts it produced by type."""

    messages: int = 0
    published_s: float = 0.0
    processed_s: float = 0.0
    alerts: Counter[str] = field(default_factory=Counter)
    # The published input records the workers dead-lettered instead of applying, by reason.
    not_applied: Counter[str] = field(default_factory=Counter)


def with_watermarks(
    messages: Iterable[SimMessage], horizon: timedelta, source: str, every: int = WATERMARK_EVERY
) -> Iterator[SimMessage | Mark]:
    """The messages (in event-time order) with watermarks between them and a final one.

    Each intermediate watermark sits just before the next message's time, so it
    promises nothing a later message breaks; the final one is `horizon` past the
    last message, so that every window still open at the end of the data closes.
    The messages are taken one at a time, as they are sent.
    """
    last: SimMessage | None = None
    for n, message in enumerate(messages):
        if n and n % every == 0:
            yield Mark(message.occurred_at - timedelta(microseconds=1), source)
        yield message
        last = message
    if last is not None:
        yield Mark(last.occurred_at + horizon + timedelta(seconds=1), source)


@dataclass
class ReplayStart:
    """Where a replay began: the input and output topics' end offsets before it published.

    Kept in a file under HITRUN_DATA_DIR until the replay has finished, so an
    interrupted replay can be resumed: the records its input partitions gained
    since are the ones it had written, and are not written again.
    """

    inputs: dict[TopicPartition, int]
    outputs: dict[TopicPartition, int]

    @staticmethod
    def path(settings: Settings, source: str) -> Path:
        return Path(settings.data_dir) / "replays" / f"{settings.app_id}--{source}.json"

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        encoded = {
            kind: [[tp.topic, tp.partition, offset] for tp, offset in sorted(offsets.items())]
            for kind, offsets in (("inputs", self.inputs), ("outputs", self.outputs))
        }
        path.write_bytes(orjson.dumps(encoded))

    @classmethod
    def load(cls, path: Path) -> ReplayStart:
        data = orjson.loads(path.read_bytes())
        inputs, outputs = (
            {TopicPartition(topic, partition): offset for topic, partition, offset in data[kind]}
            for kind in ("inputs", "outputs")
        )
        return cls(inputs, outputs)


async def replay(
    settings: Settings,
    messages: Iterable[SimMessage],
    *,
    source: str,
    stall_timeout_s: float = 120.0,
    say: Callable[[str], None] = print,
    resume: bool = False,
    rate: float = 0.0,
    total: int | None = None,
    watch: Callable[[], None] | None = None,
) -> ReplayReport:
    """Publish `messages` and the watermarks, wait until the worker group has consumed them all,
    and count the alerts published meanwhile.

    With `resume`, continue a replay of the same messages that was interrupted:
    what it had written already is not written again. `total` (the number of
    messages, when known) gives the publishing progress an ETA; `watch` is
    called while waiting and raises `ReplayError` when the workers are gone.
    """
    await ensure_topics(settings)
    outputs = sorted(set(settings.output_topics.values()))
    progress_path = ReplayStart.path(settings, source)
    skip: dict[tuple[str, int], int] = {}
    if resume:
        if not progress_path.exists():
            raise ReplayError(
                f"no unfinished replay of this file into {settings.app_id!r} to resume "
                f"({progress_path} does not exist); run it without --resume"
            )
        start = ReplayStart.load(progress_path)
        ends = await _end_offsets(settings, settings.watermarked_topics)
        skip = {(tp.topic, tp.partition): end - start.inputs.get(tp, 0) for tp, end in ends.items()}
        say(f"replay: resuming; {sum(skip.values())} records were written before")
    else:
        if progress_path.exists():
            raise ReplayError(
                f"a replay of this file into {settings.app_id!r} did not finish: --resume "
                f"continues it (or delete {progress_path} to start over)"
            )
        start = ReplayStart(
            await _end_offsets(settings, settings.watermarked_topics),
            await _end_offsets(settings, outputs),
        )
        start.save(progress_path)
    written_before = sum(skip.values())
    report = ReplayReport()
    started = time.monotonic()
    stats = await publish(
        settings,
        with_watermarks(messages, settings.replay_horizon(), source),
        skip=skip,
        rate=rate,
        on_progress=PublishProgress(say, total),
        progress_every=PUBLISH_PROGRESS_EVERY,
    )
    if any(left > 0 for left in skip.values()):
        raise ReplayError(
            "the input topics gained records that this replay did not write since it began: "
            "it cannot tell which of its own are missing"
        )
    report.messages = stats.sent + written_before
    report.published_s = time.monotonic() - started
    say(f"replay: published {stats.sent} messages in {report.published_s:.1f}s")
    await wait_until_consumed(settings, stall_timeout_s, say, watch)
    report.processed_s = time.monotonic() - started
    inputs_after = await _end_offsets(settings, settings.watermarked_topics)
    report.alerts = await count_alerts(settings, start.outputs)
    report.not_applied = await count_dead_letters(
        settings,
        start.outputs,
        {tp: (start.inputs.get(tp, 0), end) for tp, end in inputs_after.items()},
    )
    progress_path.unlink(missing_ok=True)
    return report


async def _end_offsets(settings: Settings, topics: Sequence[str]) -> dict[TopicPartition, int]:
    consumer = await started(lambda: AIOKafkaConsumer(**client_options(settings)), settings)
    try:
        # One metadata request for every topic: aiokafka otherwise learns of them
        # one at a time, a retry backoff (100 ms) apart, and waits out its request
        # timeout (40 s) for a topic that does not exist.
        await require_topics(consumer, set(topics))
        tps = [TopicPartition(t, p) for t in topics for p in range(settings.partitions)]
        ends: dict[TopicPartition, int] = await consumer.end_offsets(tps)
        return ends
    finally:
        await consumer.stop()


class Progress:
    """How many input records the worker group (`HITRUN_APP_ID`) has not committed yet, the
    identity stage's internal topics included (their records are the input's consequences).

    One admin client and one consumer serve every look, so that waiting does
    not open new connections ten times a second beside a busy worker.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        topics = (
            *settings.watermarked_topics,
            settings.reroute_topic,
            settings.identity_topic,
            settings.links_topic,
        )
        self._partitions = [
            TopicPartition(t, p) for t in topics for p in range(settings.partitions)
        ]
        self._missing = set(topics)  # not seen to exist yet: asked for until they do

    async def __aenter__(self) -> Progress:
        settings = self._settings
        self._consumer = await started(
            lambda: AIOKafkaConsumer(**client_options(settings), enable_auto_commit=False),
            settings,
        )
        self._admin = await started(
            lambda: AIOKafkaAdminClient(**client_options(settings)), settings
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._admin.close()
        await self._consumer.stop()

    async def remaining(self) -> int:
        return sum((await self.remaining_by_partition()).values())

    async def remaining_by_partition(self) -> dict[TopicPartition, int]:
        """Per input topic-partition, the records not committed yet (absent: none).

        A topic that does not exist holds nothing to wait for: the workers create
        the internal topics when they start, and a revision from before the
        identity stage never creates its two (`bench/replay.py --compare-with`).
        Asked for, the broker answers with stale metadata until the lookup times out.
        """
        if self._missing:
            self._missing -= set(await self._admin.list_topics())
        partitions = [tp for tp in self._partitions if tp.topic not in self._missing]
        ends = await self._consumer.end_offsets(partitions) if partitions else {}
        committed = await self._admin.list_consumer_group_offsets(self._settings.app_id)
        left: dict[TopicPartition, int] = {}
        for tp, end in ends.items():
            done = committed.get(tp)
            missing = end - (done.offset if done is not None and done.offset >= 0 else 0)
            if missing > 0:
                left[tp] = missing
        return left


class PublishProgress:
    """Says how far publishing is, every PUBLISH_PROGRESS_EVERY messages: count, rate, ETA."""

    def __init__(self, say: Callable[[str], None], total: int | None) -> None:
        self._say = say
        self._total = total

    def __call__(self, stats: PublishStats) -> None:
        rate = stats.sent / max(stats.elapsed_s, 1e-9)
        line = f"replay: published {stats.sent}"
        if self._total:
            left = max(self._total - stats.sent, 0)
            line += f" of {self._total} events ({rate:,.0f}/s, {_eta(left, rate)} left)"
        else:
            line += f" events ({rate:,.0f}/s)"
        self._say(line)


PUBLISH_PROGRESS_EVERY = 20_000
# How often waiting for the workers says how far they are.
PROCESS_PROGRESS_S = 5.0
# How often it looks at the group's committed offsets. The wait ends on average
# half of this after the last commit; a look costs about a millisecond of CPU.
LOOK_EVERY_S = 0.1


def _eta(left: float, rate: float) -> str:
    if rate <= 0:
        return "unknown time"
    seconds = left / rate
    return f"{seconds:.0f}s" if seconds < 120 else f"{seconds / 60:.0f} min"


async def wait_until_consumed(
    settings: Settings,
    stall_timeout_s: float,
    say: Callable[[str], None],
    watch: Callable[[], None] | None = None,
) -> None:
    """Return when the group has committed every input record (the worker confirms a batch's
    records before the batch is acknowledged); every PROCESS_PROGRESS_S, say how many are
    left, at what rate, and when they should be done.

    Raises `ReplayError` when nothing moves for `stall_timeout_s` (no worker is running),
    and lets `watch` raise it sooner (the workers it started are gone).
    """
    async with Progress(settings) as progress:
        last = await progress.remaining()
        moved_at = time.monotonic()
        reported, reported_left = time.monotonic(), last
        while last > 0:
            await asyncio.sleep(LOOK_EVERY_S)
            if watch is not None:
                watch()
            now_left = await progress.remaining()
            if now_left < last:
                last, moved_at = now_left, time.monotonic()
            elif time.monotonic() - moved_at > stall_timeout_s:
                by_partition = await progress.remaining_by_partition()
                where = ", ".join(
                    f"{tp.topic}[{tp.partition}]: {n}" for tp, n in sorted(by_partition.items())
                )
                raise ReplayError(
                    f"{last} input records still unconsumed and no progress for "
                    f"{stall_timeout_s:.0f}s ({where}): is a worker of group "
                    f"{settings.app_id!r} running (HITRUN_CLOCK_MODE=replay hitrun worker) "
                    "with the same HITRUN_WATERMARK_KEY?"
                )
            elapsed = time.monotonic() - reported
            if elapsed >= PROCESS_PROGRESS_S:
                rate = (reported_left - last) / elapsed
                say(
                    f"replay: {last} input records left to process "
                    f"({rate:,.0f}/s, {_eta(last, rate)} left)"
                )
                reported, reported_left = time.monotonic(), last


async def count_alerts(settings: Settings, since: dict[TopicPartition, int]) -> Counter[str]:
    """Alerts by type on the output topics from the `since` offsets to their current ends."""
    counts: Counter[str] = Counter()
    async for _tp, record in read_from(settings, since):
        if record.value is not None:
            counts[orjson.loads(record.value)["type"]] += 1
    return counts


async def count_dead_letters(
    settings: Settings,
    since: dict[TopicPartition, int],
    published: dict[TopicPartition, tuple[int, int]],
) -> Counter[str]:
    """Dead letters written since `since` whose source lies in the `published` offset ranges,
    by reason: the replay's input records that were refused instead of applied."""
    reasons: Counter[str] = Counter()
    seen: set[str] = set()  # a dead letter written again after a restart counts once
    letters = {
        tp: since.get(tp, 0)
        for tp in (
            TopicPartition(settings.topic_dead_letters, p) for p in range(settings.partitions)
        )
    }
    async for _tp, record in read_from(settings, letters):
        letter = orjson.loads(record.value) if record.value is not None else None
        if not letter or letter.get("dead_letter_id") in seen:
            continue
        source = letter.get("source") or {}
        span = published.get(TopicPartition(source.get("topic"), source.get("partition")))
        if span is not None and span[0] <= source.get("offset", -1) < span[1]:
            seen.add(letter["dead_letter_id"])
            reasons[letter["reason"]] += 1
    return reasons
