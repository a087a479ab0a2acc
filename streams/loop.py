"""hitrun's consume loop: fetch → apply → publish → commit, one fetched batch at a time.

Each fetched batch is applied whole by the processor (the customer agent),
the records it produced are sent and confirmed by the broker, and only then
do its input offsets become committable. An offset is committed only when
every record before it in its partition has been applied and its outputs
confirmed; events the processor still holds (the replay reorder buffer) keep
their partition's commit position at the first of them. A rebalance waits for
the batch in hand and commits what is confirmed; a batch fetched before a
rebalance is dropped unapplied. While the broker is away the loop retries the
publish and the commit with backoff and reports itself not ready; a worker
never exits because the broker went away.

Faust's side of this (the fetch, seeks, commits, ownership) is
streams/faust_bridge.py.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

from aiokafka import TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from hitrun.streams.faust_bridge import Fenced, RecordMap
from hitrun.streams.ingest import RawMessage
from hitrun.streams.sink import Gap
from hitrun.streams.topics import TopicLayoutError

log = logging.getLogger(__name__)


CaughtUp = Callable[[TopicPartition], bool]


class Processor(Protocol):
    """The customer agent as the loop sees it."""

    def prepare(self) -> None:
        """The assignment's tables are recovered: build what is derived from them (the
        deadline indexes) before the first record, and before /readyz says ready."""

    def apply(self, msg: RawMessage) -> None:
        """Apply one input record; queue what it produces in the sink."""

    def settle(self, caught_up: CaughtUp, owned: set[int]) -> bool:
        """The batch is read: apply the held events that `caught_up` now lets through;
        True when anything was applied, a clock moved or a record was queued. `owned`:
        the partition numbers this worker owns."""

    def tick(self, partition: int, wall_ms: int) -> None:
        """Live mode: move the partition's clock to wall time and fire what is due."""

    def held(self) -> Mapping[TopicPartition, int]:
        """The lowest offset per input partition of the events held unapplied."""

    def end_batch(self) -> None:
        """The batch is applied: queue its state changes (changelog records) in the sink."""

    def confirmed(self, delivered: Mapping[TopicPartition, int]) -> None:
        """The broker has every record of the batch: make its state changes visible."""

    def reset(self) -> None:
        """Forget every derived in-memory state: the store and the log are the truth."""

    def rewrite(self, keys: Mapping[TopicPartition, set[bytes]]) -> None:
        """Queue, as state records, the stored value of each key of each state partition
        (written over another writer's records: streams/repair.py)."""


class Sink(Protocol):
    async def start(self) -> None:
        """Connect (and read the broker's time: streams/brokertime.py)."""

    async def flush(
        self, fence: Callable[[], Awaitable[None]] | None = None
    ) -> dict[TopicPartition, int]: ...
    def take_gaps(self) -> list[Gap]: ...
    def expected(self) -> dict[TopicPartition, int]: ...


class StateReader(Protocol):
    """Reads the state partitions (streams/repair.py's ChangelogReader)."""

    async def ends(self, tps: Iterable[TopicPartition]) -> dict[TopicPartition, int]: ...
    async def keys_in(self, gaps: Iterable[Gap]) -> dict[TopicPartition, set[bytes]]: ...


class Source(Protocol):
    """What the loop needs of the consumer (streams/faust_bridge.py's FaustSource)."""

    def stopping(self) -> bool: ...
    @property
    def flow_active(self) -> bool: ...
    async def fetch(self, wait_s: float) -> RecordMap: ...
    async def pass_on(self, tp: TopicPartition, records: Any) -> None: ...
    def highwater(self, tp: TopicPartition) -> int | None: ...
    def partition_count(self, topic: str) -> int | None: ...
    def start_offset(self, tp: TopicPartition) -> int | None: ...
    async def rewind(self, tp: TopicPartition, offset: int | None) -> None: ...
    def owned_partitions(self, topic: str) -> set[int]: ...
    def recovered(self) -> bool: ...
    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None: ...
    async def check_membership(self) -> None: ...


class BatchFailed(Exception):
    """Applying or publishing a batch failed in a way retrying cannot mend."""


@dataclass
class Backoff:
    """Delays between retries: doubling from `first` up to `most` seconds."""

    first: float = 0.2
    most: float = 5.0

    def delays(self) -> Any:
        delay = self.first
        while True:
            yield delay
            delay = min(delay * 2, self.most)


@dataclass
class LoopStatus:
    """What /readyz and the metrics read of the loop."""

    broker_error: str | None = None
    batches: int = 0
    # The processor is prepared for the current assignment (`Processor.prepare`).
    prepared: bool = False
    committed_at: float = field(default_factory=time.monotonic)


# Where the loop's time goes, by phase (`hitrun_loop_seconds_total`): waiting for records
# (idle time included), applying them (hitrun's own work), publishing the batch's records
# and waiting for the broker, writing its states to the local store, committing offsets.
PHASES = ("fetch", "apply", "publish", "store", "commit")


def _not_timed(phase: str, seconds: float) -> None:
    pass


# How often a fenced loop looks whether its worker has rejoined the group.
FENCED_WAIT_S = 0.05
# How long a revocation may spend looking for (and writing over) another writer's state
# records: the group waits for the revocation (the broker may be away, the worker stopping).
LEAVING_LOOK_S = 10.0


def _not_counted() -> None:
    pass


def _not_told(count: int) -> None:
    pass


def _system_ms() -> int:
    return int(time.time() * 1000)


def retriable(exc: BaseException) -> bool:
    """Is `exc` the broker being away (retry) rather than a refusal that will not change?"""
    if isinstance(exc, KafkaError):
        return bool(exc.retriable) or type(exc).__name__ in {
            "KafkaTimeoutError",
            "KafkaConnectionError",
            "NodeNotReadyError",
            "RequestTimedOutError",
        }
    return isinstance(exc, asyncio.TimeoutError | ConnectionError)


class ConsumeLoop:
    """Owns the path from fetch to commit for hitrun's input topics."""

    def __init__(
        self,
        processor: Processor,
        sink: Sink,
        *,
        topics: frozenset[str],
        clock_topics: tuple[str, ...],
        live: bool,
        tick_interval_s: float,
        commit_interval_s: float,
        on_fatal: Callable[[BaseException], None],
        backoff: Backoff | None = None,
        spent: Callable[[str, float], None] = _not_timed,
        fenced: Callable[[], None] = _not_counted,
        states: StateReader | None = None,
        overwritten: Callable[[int], None] = _not_told,
        wall_ms: Callable[[], int] = _system_ms,
        partitions: int | None = None,
    ) -> None:
        self.processor = processor
        self.sink = sink
        self.topics = topics
        # The input topics whose progress decides whether a partition is caught up.
        self.clock_topics = clock_topics
        self.live = live
        self.tick_interval_s = tick_interval_s
        self.commit_interval_s = commit_interval_s
        self.on_fatal = on_fatal
        self.backoff = backoff or Backoff()
        # Told the seconds of each phase (PHASES) as the loop spends them.
        self.spent = spent
        # Told of each batch dropped because the group had moved on (`Fenced`).
        self.fenced = fenced
        # Reads the state partitions when another writer's records turn up among this
        # worker's (`_write_over`); told how many keys were written over.
        self.states = states
        self.overwritten = overwritten
        # Wall time for live ticks, in epoch ms (the worker's: the broker's clock).
        self.wall_ms = wall_ms
        # The partition count every one of `topics` must have (HITRUN_PARTITIONS).
        self.partitions = partitions
        self.status = LoopStatus()
        self._lock = asyncio.Lock()
        # Bumped by every rebalance: a batch fetched in an older epoch is dropped.
        self._epoch = 0
        # The epoch in which a batch was found fenced: nothing more is applied in it.
        self._fenced_epoch: int | None = None
        self._next: dict[TopicPartition, int] = {}  # next offset to apply
        # Partitions sent back to their start in this assignment, with the first
        # offset of the batch refused for starting further on.
        self._rewound: dict[TopicPartition, int] = {}
        # Partitions whose fetched records were dropped at a rebalance.
        self._displaced: set[TopicPartition] = set()
        self._committed: dict[TopicPartition, int] = {}
        self._last_commit = time.monotonic()
        self._last_tick = 0.0
        self._source: Source | None = None

    # -- the loop ----------------------------------------------------------

    async def run(self, source: Source) -> None:
        """Fetch, apply, publish and commit until the consumer stops."""
        self._source = source
        try:
            # Before the first record is applied or tick taken: the sink reads the time.
            await self._retried(self.sink.start)
        except BatchFailed as exc:
            self.on_fatal(exc.__cause__ or exc)
            return
        while not source.stopping():
            epoch = self._epoch
            if epoch == self._fenced_epoch:
                # The group has moved on without this worker: nothing is fetched
                # until the consumer has rejoined it (a rebalance bumps the epoch).
                await asyncio.sleep(FENCED_WAIT_S)
                continue
            started = time.perf_counter()
            # Until prepared, fetch briefly: the preparation waits for the next turn.
            records = await source.fetch(1.0 if self.status.prepared else 0.1)
            self.spent("fetch", time.perf_counter() - started)
            ours: dict[TopicPartition, list[Any]] = {}
            for tp, batch in records.items():
                if tp.topic in self.topics:
                    ours[TopicPartition(tp.topic, tp.partition)] = batch
                else:
                    await source.pass_on(tp, batch)
            async with self._lock:
                if epoch != self._epoch or not source.flow_active or source.stopping():
                    # A rebalance started after the fetch: these records may no
                    # longer be ours. The consumer's position is past them,
                    # though, so those of them that stay (or come back) here are
                    # read again once the new assignment settles.
                    self._displaced.update(tp for tp, batch in ours.items() if batch)
                    continue
                try:
                    if not self.status.prepared and source.recovered():
                        self._check_layout(source)
                        self._prepare()
                    await self._rewind_displaced(source)
                    ours = await self._from_the_start(source, ours)
                    await self._batch(source, ours)
                    started = time.perf_counter()
                    # A replay's worker that has applied everything there is commits it at
                    # once: the replay (or the backlog) is done when it is committed.
                    at_end = not self.live and self._all_caught_up(source)
                    if await self._maybe_commit(source, force=at_end):
                        self.spent("commit", time.perf_counter() - started)
                except Fenced as exc:
                    self._drop_fenced(exc)
                except BatchFailed as exc:
                    self.on_fatal(exc.__cause__ or exc)
                    return

    def _drop_fenced(self, exc: Fenced) -> None:
        """The batch in hand was applied for partitions the group may have given to another
        worker: drop it unpublished (its state records unsent, nothing stored or committed)
        and apply nothing more until the rebalance that must follow."""
        log.warning(
            "the group has moved on without this worker (%s): the batch is dropped unpublished "
            "and nothing is applied until this worker rejoins",
            exc,
        )
        self.fenced()
        self._fenced_epoch = self._epoch
        self._forget()

    async def _rewind_displaced(self, source: Source) -> None:
        """Send partitions whose records a rebalance dropped back to where this assignment
        starts (its committed offset, or the beginning of the log when none is committed).

        Faust seeks to committed offsets after a rebalance, but not where none (or
        0) is committed, and records fetched after that seek may be dropped too:
        without this, a partition whose dropped records were its last would never
        read them again.
        """
        for tp in list(self._displaced):
            self._displaced.discard(tp)
            if tp in self._next:
                continue  # records of it were applied in this assignment
            try:
                await source.rewind(tp, source.start_offset(tp))
            except KafkaError as exc:
                self._displaced.add(tp)  # tried again with the next batch
                log.warning("rewinding %s failed: %r", tp, exc)
                return

    async def _from_the_start(
        self, source: Source, records: dict[TopicPartition, list[Any]]
    ) -> dict[TopicPartition, list[Any]]:
        """A partition's first records in an assignment must start where the assignment does.

        That is its committed offset, or the beginning of the log when the group
        has committed none. A batch fetched before a rebalance is dropped, but
        the consumer's position stays past it: where the partition comes back to
        this worker and nothing was committed for it, the consumer reads on from
        there, and the dropped records would never be applied. Such a partition
        is sent back to its start once, and its records are refused until they
        come from there.
        """
        kept: dict[TopicPartition, list[Any]] = {}
        for tp, batch in records.items():
            if tp in self._next or not batch:
                kept[tp] = batch
                continue
            start = source.start_offset(tp)
            first = batch[0].offset
            refused_from = self._rewound.get(tp)
            if refused_from is not None:
                if first > refused_from:
                    continue  # fetched before the rewind took effect
            elif first > (start or 0):
                log.info(
                    "%s[%d]: first record %d is past the assignment's start (%s); reading "
                    "again from there",
                    tp.topic,
                    tp.partition,
                    first,
                    "the beginning" if start is None else start,
                )
                self._rewound[tp] = first
                try:
                    await source.rewind(tp, start)
                except KafkaError as exc:  # the next batch of it tries again
                    del self._rewound[tp]
                    log.warning("rewinding %s failed: %r", tp, exc)
                continue
            kept[tp] = batch if start is None else [r for r in batch if r.offset >= start]
        return kept

    def _prepare(self) -> None:
        """Prepare the processor for this assignment, once its tables are recovered."""
        started = time.perf_counter()
        try:
            self.processor.prepare()
        except Exception as exc:
            raise BatchFailed(repr(exc)) from exc
        self.spent("apply", time.perf_counter() - started)
        self.status.prepared = True

    def _check_layout(self, source: Source) -> None:
        """Before an assignment is applied: every topic must still have the partition count
        the worker was started with.

        Partitions added to a topic while the group runs (an operator's
        `kafka-topics --alter`) come to the group with a rebalance; Faust then
        assigns the topics of each partition count apart, so one worker could
        apply a customer's checkouts while another owns the customer's state and
        payments. The worker stops instead, before applying anything of the
        assignment; started again, it refuses the layout too.
        """
        if self.partitions is None:
            return
        for topic in sorted(self.topics):
            count = source.partition_count(topic)
            if count is not None and count != self.partitions:
                layout = TopicLayoutError(
                    f"topic {topic} has {count} partitions now, HITRUN_PARTITIONS says "
                    f"{self.partitions}; co-partitioned topics must match (partitions added "
                    "to an input topic split its customers from their state: docs/architecture.md)"
                )
                raise BatchFailed(str(layout)) from layout

    async def _batch(self, source: Source, records: dict[TopicPartition, list[Any]]) -> None:
        applied = 0
        started = time.perf_counter()
        try:
            for tp, record in _interleaved(records):
                expected = self._next.get(tp)
                if expected is not None and record.offset < expected:
                    continue  # re-read after a seek: applied and confirmed already
                self.processor.apply(_raw(record))
                self._next[tp] = record.offset + 1
                applied += 1
            if source.recovered():
                applied += self.processor.settle(
                    lambda tp: self.tp_caught_up(source, tp),
                    source.owned_partitions(self.clock_topics[0]),
                )
            ticked = self._tick(source)
            if not applied and not ticked:
                return
            self.processor.end_batch()
        except Exception as exc:
            raise BatchFailed(repr(exc)) from exc
        published = time.perf_counter()
        self.spent("apply", published - started)
        delivered = await self._publish(source)
        gaps = self.sink.take_gaps()
        if gaps:
            # Another writer's state records landed among this batch's: either this
            # worker was removed and wrote after its successor (then it is no member
            # now, and the batch is dropped), or a removed one wrote after this worker.
            await self._still_member(source)
        stored = time.perf_counter()
        self.spent("publish", stored - published)
        self.processor.confirmed(delivered)
        self.spent("store", time.perf_counter() - stored)
        self.status.batches += 1
        if gaps:
            await self._write_over(source, gaps)

    def _tick(self, source: Source) -> bool:
        """Live mode: tick each owned partition whose input is caught up, once per interval."""
        if not self.live or not source.recovered():
            return False
        now = time.monotonic()
        if now - self._last_tick < self.tick_interval_s:
            return False
        self._last_tick = now
        wall_ms = self.wall_ms()
        ticked = False
        for partition in sorted(source.owned_partitions(self.clock_topics[0])):
            if self.caught_up(source, partition):
                self.processor.tick(partition, wall_ms)
                ticked = True
        return ticked

    def caught_up(self, source: Source, partition: int) -> bool:
        """Has every input topic of `partition` been applied up to its end offset?

        Wall time may move a partition's clock only then: after an outage the
        deadlines fire once the records that could pay them have been read.
        """
        return all(
            self.tp_caught_up(source, TopicPartition(topic, partition))
            for topic in self.clock_topics
        )

    def tp_caught_up(self, source: Source, tp: TopicPartition) -> bool:
        """Has `tp` been applied up to its end offset (as the last fetch response gave it)?"""
        end = source.highwater(tp)
        if end is None:
            return False  # no fetch response yet: unknown, so not caught up
        done = self._next.get(tp)
        if done is None:
            done = source.start_offset(tp) or 0
        return done >= end

    async def _publish(self, source: Source) -> dict[TopicPartition, int]:
        """Send the batch's records and wait for the broker, retrying while it is away.

        Its state records go only once the group coordinator has said this worker
        is still a member (`Source.check_membership`; raises `Fenced` otherwise).
        """
        delays = self.backoff.delays()
        while True:
            try:
                delivered = await self.sink.flush(source.check_membership)
            except Fenced:
                raise
            except Exception as exc:
                if not retriable(exc):
                    raise BatchFailed(f"publishing the batch failed: {exc!r}") from exc
                delay = next(delays)
                self.status.broker_error = f"publish: {type(exc).__name__}"
                log.warning(
                    "broker unavailable while publishing (%r); retrying in %.1fs", exc, delay
                )
                await asyncio.sleep(delay)
                continue
            if self.status.broker_error is not None:
                log.info("broker reachable again: batch published")
            self.status.broker_error = None
            return delivered

    async def _still_member(self, source: Source) -> None:
        """Raise `Fenced` unless the group coordinator counts this worker a member (asked
        again while it cannot answer)."""
        await self._retried(source.check_membership)

    async def _write_over(self, source: Source, gaps: list[Gap]) -> None:
        """Write this worker's stored value of every key another writer wrote in `gaps` over
        it, until this worker's records land where it expects them."""
        states = self.states
        if states is None:
            return
        while gaps:
            keys = await self._retried(partial(states.keys_in, gaps))
            count = sum(len(k) for k in keys.values())
            log.warning(
                "another writer's state records (a worker the group had removed) came in "
                "among this worker's, at %s: writing the stored value of their %d keys over them",
                ", ".join(f"{g.tp.topic}[{g.tp.partition}] {g.start}-{g.end - 1}" for g in gaps),
                count,
            )
            self.overwritten(count)
            self.processor.rewrite(keys)
            await self._publish(source)
            gaps = self.sink.take_gaps()

    async def _retried(self, ask: Callable[[], Awaitable[Any]]) -> Any:
        """`ask()`, again with backoff while the broker is away; `Fenced` goes through."""
        delays = self.backoff.delays()
        while True:
            try:
                return await ask()
            except Fenced:
                raise
            except Exception as exc:
                if not retriable(exc):
                    raise BatchFailed(f"asking the broker failed: {exc!r}") from exc
                await asyncio.sleep(next(delays))

    async def _write_over_before_leaving(self, source: Source) -> None:
        """At a revocation: another writer's records after this worker's last ones in a
        partition it is giving up would be what the next owner recovers last. Written over
        now, while this worker still owns the partition; a worker that is no member any
        more leaves them (it wrote nothing after them: its successor did, or will look)."""
        expected = self.sink.expected()
        if self.states is None or not expected:
            return
        states = self.states
        try:
            async with asyncio.timeout(LEAVING_LOOK_S):
                ends = await states.ends(expected)
                gaps = [Gap(tp, at, ends[tp]) for tp, at in expected.items() if ends[tp] > at]
                if not gaps:
                    return
                await source.check_membership()
                await self._write_over(source, gaps)
        except Fenced:
            return
        except Exception as exc:  # the rebalance goes on; the next owner reads what is there
            log.error("could not look for another writer's state records: %r", exc)

    # -- commits -----------------------------------------------------------

    def committable(self) -> dict[TopicPartition, int]:
        """Per input partition, the offset up to which everything is applied and confirmed."""
        held = self.processor.held()
        positions: dict[TopicPartition, int] = {}
        for tp, next_offset in self._next.items():
            position = min(next_offset, held.get(tp, next_offset))
            if position > self._committed.get(tp, -1):
                positions[tp] = position
        return positions

    def _all_caught_up(self, source: Source) -> bool:
        """Has every partition applied in this assignment been applied up to its end offset
        (as the last fetch responses gave them)?"""
        return bool(self._next) and all(self.tp_caught_up(source, tp) for tp in self._next)

    async def _maybe_commit(self, source: Source, force: bool = False) -> bool:
        """Commit what is committable, once per commit interval (or now: `force`); returns
        whether a commit was sent."""
        if not force and time.monotonic() - self._last_commit < self.commit_interval_s:
            return False
        self._last_commit = time.monotonic()
        offsets = self.committable()
        if not offsets:
            return False
        try:
            await source.commit(offsets)
        except CommitFailedError as exc:
            # The group moved on (a rebalance): another member owns these now.
            log.info("commit refused after a rebalance: %s", exc)
            return True
        except KafkaError as exc:
            self.status.broker_error = f"commit: {type(exc).__name__}"
            log.warning("commit failed (%r); the next one retries", exc)
            return True
        self._committed.update(offsets)
        self.status.committed_at = time.monotonic()
        return True

    # -- rebalances --------------------------------------------------------

    async def on_revoked(self) -> None:
        """Partitions are being taken away: finish the batch in hand, commit what is confirmed."""
        self._epoch += 1
        async with self._lock:
            if self._source is not None:
                await self._write_over_before_leaving(self._source)
                await self._maybe_commit(self._source, force=True)
            self._forget()

    async def on_assigned(self) -> None:
        """A new assignment: start again from the committed offsets, state from the store."""
        self._epoch += 1
        async with self._lock:
            self._forget()

    def _forget(self) -> None:
        self.status.prepared = False
        self._next.clear()
        self._rewound.clear()
        self._committed.clear()
        self.processor.reset()


def _interleaved(records: Mapping[TopicPartition, list[Any]]) -> Any:
    """Records partition by partition number, topics taking turns, each topic's in offset order.

    Within a partition number the input topics are read side by side, so a
    batch never applies one topic's records far ahead of another's.
    """
    by_partition: dict[int, list[tuple[TopicPartition, list[Any]]]] = {}
    for tp, batch in records.items():
        by_partition.setdefault(tp.partition, []).append((tp, batch))
    for partition in sorted(by_partition):
        lanes = sorted(by_partition[partition])
        if len(lanes) == 1:
            tp, batch = lanes[0]
            for record in batch:
                yield tp, record
            continue
        longest = max(len(batch) for _, batch in lanes)
        for i in range(longest):
            for tp, batch in lanes:
                if i < len(batch):
                    yield tp, batch[i]


def _raw(record: Any) -> RawMessage:
    return RawMessage(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        timestamp_ms=record.timestamp,
        key=record.key,
        value=record.value,
        headers=tuple(record.headers or ()),
    )
