"""The consume loop commits only what is applied and confirmed, rides out the broker, and
never applies a batch across a rebalance (fakes for the consumer, the agent and the sink)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError, RecordTooLargeError
from hypothesis import given, settings
from hypothesis import strategies as st

from hitrun.streams.faust_bridge import Fenced
from hitrun.streams.ingest import RawMessage
from hitrun.streams.loop import Backoff, ConsumeLoop
from hitrun.streams.sink import Gap
from hitrun.streams.topics import TopicLayoutError

CHECKOUTS = "shop.checkouts"
PAYMENTS = "shop.payments"


@dataclass
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None = b"c"
    value: bytes | None = b"{}"
    timestamp: int = 0
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass
class FakeProcessor:
    applied: list[tuple[str, int, int]] = field(default_factory=list)
    ticks: list[int] = field(default_factory=list)
    tick_walls: list[int] = field(default_factory=list)
    holding: dict[TopicPartition, int] = field(default_factory=dict)
    confirmed_batches: int = 0
    resets: int = 0
    fail_on: int | None = None
    # How many records had been applied at each preparation.
    prepared_after: list[int] = field(default_factory=list)
    rewritten: list[dict[TopicPartition, set[bytes]]] = field(default_factory=list)

    def prepare(self) -> None:
        self.prepared_after.append(len(self.applied))

    def apply(self, msg: RawMessage) -> None:
        if msg.offset == self.fail_on:
            raise RuntimeError("a bug")
        self.applied.append((msg.topic, msg.partition, msg.offset))

    def tick(self, partition: int, wall_ms: int) -> None:
        self.ticks.append(partition)
        self.tick_walls.append(wall_ms)

    def settle(self, caught_up: Any, owned: Any) -> bool:
        return False

    def held(self) -> Mapping[TopicPartition, int]:
        return self.holding

    def end_batch(self) -> None:
        pass

    def confirmed(self, delivered: Mapping[TopicPartition, int]) -> None:
        self.confirmed_batches += 1

    def reset(self) -> None:
        self.resets += 1

    def rewrite(self, keys: Mapping[TopicPartition, set[bytes]]) -> None:
        self.rewritten.append({tp: set(k) for tp, k in keys.items()})


@dataclass
class FakeSink:
    failures: list[BaseException] = field(default_factory=list)
    gate: asyncio.Event | None = None
    flushes: int = 0
    # Whether its batches hold state records (the fence is asked before they go).
    states: bool = False
    # The gaps each flush finds (past the list: none), and what it expects.
    gaps: list[list[Gap]] = field(default_factory=list)
    expects: dict[TopicPartition, int] = field(default_factory=dict)
    found: list[Gap] = field(default_factory=list)
    # Raised by `start`, one per call, before it succeeds.
    start_failures: list[BaseException] = field(default_factory=list)
    started: int = 0

    async def start(self) -> None:
        if self.start_failures:
            raise self.start_failures.pop(0)
        self.started += 1

    def take_gaps(self) -> list[Gap]:
        found, self.found = self.found, []
        return found

    def expected(self) -> dict[TopicPartition, int]:
        return dict(self.expects)

    async def flush(
        self, fence: Callable[[], Awaitable[None]] | None = None
    ) -> dict[TopicPartition, int]:
        self.flushes += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.failures:
            raise self.failures.pop(0)
        if self.states and fence is not None:
            await fence()
        if self.gaps:
            self.found = self.gaps.pop(0)
        return {}


@dataclass
class FakeSource:
    fetches: list[dict[TopicPartition, list[Any]]]
    ends: dict[TopicPartition, int] = field(default_factory=dict)
    commits: list[dict[TopicPartition, int]] = field(default_factory=list)
    flow_active: bool = True
    partitions: set[int] = field(default_factory=lambda: {0})
    before_fetch_returns: Any = None
    done: bool = False
    rewinds: list[tuple[TopicPartition, int | None]] = field(default_factory=list)
    # Per fetch, whether the tables are recovered then (past the list: recovered).
    recovery: list[bool] = field(default_factory=list)
    fetched: int = 0
    # What the next membership checks raise (None, and past the list: still a member).
    membership: list[BaseException | None] = field(default_factory=list)
    membership_checks: int = 0
    # Partition counts per topic in the cluster's metadata (absent: unknown).
    counts: dict[str, int] = field(default_factory=dict)

    def stopping(self) -> bool:
        return self.done

    async def fetch(self, wait_s: float) -> dict[TopicPartition, list[Any]]:
        if not self.fetches:
            self.done = True  # the consumer stops: the loop ends after this fetch
            return {}
        batch = self.fetches.pop(0)
        self.fetched += 1
        if self.before_fetch_returns is not None:
            await self.before_fetch_returns()
        await asyncio.sleep(0)
        return batch

    async def pass_on(self, tp: TopicPartition, records: Any) -> None:
        pass

    def partition_count(self, topic: str) -> int | None:
        return self.counts.get(topic)

    def highwater(self, tp: TopicPartition) -> int | None:
        return self.ends.get(tp)

    def start_offset(self, tp: TopicPartition) -> int | None:
        return None

    async def rewind(self, tp: TopicPartition, offset: int | None) -> None:
        self.rewinds.append((tp, offset))

    def owned_partitions(self, topic: str) -> set[int]:
        return self.partitions

    def recovered(self) -> bool:
        turn = self.fetched - 1
        return self.recovery[turn] if 0 <= turn < len(self.recovery) else True

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        self.commits.append(dict(offsets))

    async def check_membership(self) -> None:
        self.membership_checks += 1
        answer = self.membership.pop(0) if self.membership else None
        if answer is not None:
            raise answer

    @property
    def last_commit(self) -> dict[TopicPartition, int]:
        merged: dict[TopicPartition, int] = {}
        for commit in self.commits:
            merged.update(commit)
        return merged


def tp(topic: str, partition: int = 0) -> TopicPartition:
    return TopicPartition(topic, partition)


def records(topic: str, offsets: range, partition: int = 0) -> dict[TopicPartition, list[Any]]:
    return {tp(topic, partition): [Record(topic, partition, o) for o in offsets]}


def make_loop(
    processor: FakeProcessor, sink: FakeSink, *, live: bool = False, fatal: list[Any] | None = None
) -> ConsumeLoop:
    return ConsumeLoop(
        processor,
        sink,
        topics=frozenset({CHECKOUTS, PAYMENTS}),
        clock_topics=(CHECKOUTS, PAYMENTS),
        live=live,
        tick_interval_s=0.0,
        commit_interval_s=0.0,
        on_fatal=(fatal.append if fatal is not None else pytest.fail),
        backoff=Backoff(first=0.001, most=0.002),
    )


def test_applied_and_confirmed_offsets_are_committed() -> None:
    processor, sink = FakeProcessor(), FakeSink()
    source = FakeSource([records(CHECKOUTS, range(0, 3)), records(CHECKOUTS, range(3, 5))])
    asyncio.run(make_loop(processor, sink).run(source))
    assert [o for _, _, o in processor.applied] == [0, 1, 2, 3, 4]
    assert source.last_commit == {tp(CHECKOUTS): 5}
    assert processor.confirmed_batches == 2


def test_a_held_event_keeps_its_partition_commit_at_its_offset() -> None:
    processor, sink = FakeProcessor(holding={tp(CHECKOUTS): 2}), FakeSink()
    source = FakeSource([records(CHECKOUTS, range(0, 5)), records(PAYMENTS, range(0, 2))])
    asyncio.run(make_loop(processor, sink).run(source))
    assert source.last_commit == {tp(CHECKOUTS): 2, tp(PAYMENTS): 2}


def test_records_read_again_after_a_seek_are_not_applied_twice() -> None:
    processor, sink = FakeProcessor(), FakeSink()
    source = FakeSource([records(CHECKOUTS, range(0, 4)), records(CHECKOUTS, range(2, 6))])
    asyncio.run(make_loop(processor, sink).run(source))
    assert [o for _, _, o in processor.applied] == [0, 1, 2, 3, 4, 5]


def test_publishing_is_retried_while_the_broker_is_away_and_nothing_is_committed_meanwhile() -> (
    None
):
    processor = FakeProcessor()
    sink = FakeSink(failures=[KafkaConnectionError(), KafkaConnectionError()])
    source = FakeSource([records(CHECKOUTS, range(0, 3))])
    loop = make_loop(processor, sink)
    seen_errors: list[str | None] = []
    original = sink.flush

    async def watching_flush(fence: Any = None) -> dict[TopicPartition, int]:
        seen_errors.append(loop.status.broker_error)
        assert source.commits == []
        return await original(fence)

    sink.flush = watching_flush  # type: ignore[method-assign]
    asyncio.run(loop.run(source))
    assert sink.flushes == 3
    assert seen_errors[1:] == ["publish: KafkaConnectionError"] * 2
    assert loop.status.broker_error is None
    assert source.last_commit == {tp(CHECKOUTS): 3}


def test_a_refusal_that_retrying_cannot_mend_stops_without_committing() -> None:
    fatal: list[Any] = []
    processor, sink = FakeProcessor(), FakeSink(failures=[RecordTooLargeError()])
    source = FakeSource([records(CHECKOUTS, range(0, 3)), records(CHECKOUTS, range(3, 4))])
    asyncio.run(make_loop(processor, sink, fatal=fatal).run(source))
    assert len(fatal) == 1 and isinstance(fatal[0], RecordTooLargeError)
    assert source.commits == []
    assert processor.confirmed_batches == 0


def test_a_failing_apply_stops_without_committing_the_batch() -> None:
    fatal: list[Any] = []
    processor, sink = FakeProcessor(fail_on=1), FakeSink()
    source = FakeSource([records(CHECKOUTS, range(0, 3))])
    asyncio.run(make_loop(processor, sink, fatal=fatal).run(source))
    assert isinstance(fatal[0], RuntimeError)
    assert source.commits == [] and sink.flushes == 0


def test_the_processor_is_prepared_once_recovered_and_before_its_first_record() -> None:
    processor, sink = FakeProcessor(), FakeSink()
    source = FakeSource([{}, {}, records(CHECKOUTS, range(0, 3)), {}], recovery=[False, False])
    loop = make_loop(processor, sink)
    seen: list[bool] = []

    async def watch() -> None:
        seen.append(loop.status.prepared)

    source.before_fetch_returns = watch
    asyncio.run(loop.run(source))
    # Fetches 1-2 while recovering: not prepared; the third prepares before its records.
    assert seen == [False, False, False, True]
    assert processor.prepared_after == [0]
    assert loop.status.prepared


def test_a_worker_stops_before_applying_an_assignment_of_topics_that_gained_partitions() -> None:
    fatal: list[Any] = []
    processor, sink = FakeProcessor(), FakeSink()
    source = FakeSource(
        [records(CHECKOUTS, range(0, 2)), records(CHECKOUTS, range(2, 4))],
        counts={CHECKOUTS: 8, PAYMENTS: 4},
    )
    loop = make_loop(processor, sink, fatal=fatal)
    loop.partitions = 4
    asyncio.run(loop.run(source))
    assert len(fatal) == 1 and isinstance(fatal[0], TopicLayoutError)
    assert f"topic {CHECKOUTS} has 8 partitions now" in str(fatal[0])
    assert processor.applied == [] and processor.prepared_after == []
    assert source.commits == [] and sink.flushes == 0


def test_a_layout_as_started_is_prepared_as_usual() -> None:
    processor, sink = FakeProcessor(), FakeSink()
    source = FakeSource([records(CHECKOUTS, range(0, 2))], counts={CHECKOUTS: 4, PAYMENTS: 4})
    loop = make_loop(processor, sink)
    loop.partitions = 4
    asyncio.run(loop.run(source))
    assert processor.prepared_after == [0] and len(processor.applied) == 2


def test_a_rebalance_prepares_the_processor_again() -> None:
    processor, sink = FakeProcessor(), FakeSink()
    source = FakeSource([records(CHECKOUTS, range(0, 2)), {}, records(CHECKOUTS, range(2, 4))])
    loop = make_loop(processor, sink)
    prepared: list[bool] = []

    async def rebalance_after_the_first_batch() -> None:
        prepared.append(loop.status.prepared)
        if source.fetched == 2:
            await loop.on_assigned()
            prepared.append(loop.status.prepared)

    source.before_fetch_returns = rebalance_after_the_first_batch
    asyncio.run(loop.run(source))
    # The fetch the rebalance came in is dropped; the next one prepares again.
    assert prepared == [False, True, False, False]
    assert processor.prepared_after == [0, 2]
    assert loop.status.prepared


def test_a_failing_preparation_stops_the_worker_before_any_record() -> None:
    fatal: list[Any] = []
    processor, sink = FakeProcessor(), FakeSink()

    def broken() -> None:
        raise RuntimeError("the store cannot be read")

    processor.prepare = broken  # type: ignore[method-assign]
    source = FakeSource([records(CHECKOUTS, range(0, 3))])
    asyncio.run(make_loop(processor, sink, fatal=fatal).run(source))
    assert isinstance(fatal[0], RuntimeError)
    assert processor.applied == [] and source.commits == []


def test_a_batch_fetched_before_a_rebalance_is_dropped_unapplied() -> None:
    processor, sink = FakeProcessor(), FakeSink()
    source = FakeSource([records(CHECKOUTS, range(0, 3))])
    loop = make_loop(processor, sink)

    async def rebalance_during_fetch() -> None:
        await loop.on_revoked()

    source.before_fetch_returns = rebalance_during_fetch
    asyncio.run(loop.run(source))
    assert processor.applied == []
    assert source.commits == []
    assert processor.resets == 1


@pytest.mark.parametrize(
    ("live", "end", "commits"),
    [
        (False, 3, [{tp(CHECKOUTS): 3}]),  # a replay's worker read everything: commits now
        (False, 5, []),  # more to read: the commit interval decides
        (True, 3, []),  # live: the commit interval decides, caught up or not
    ],
)
def test_a_replay_worker_that_read_everything_commits_at_once(
    live: bool, end: int, commits: list[dict[TopicPartition, int]]
) -> None:
    processor, sink = FakeProcessor(), FakeSink()
    source = FakeSource([records(CHECKOUTS, range(0, 3))], ends={tp(CHECKOUTS): end})
    loop = make_loop(processor, sink, live=live)
    loop.commit_interval_s = 3600
    asyncio.run(loop.run(source))
    assert len(processor.applied) == 3
    assert source.commits == commits


def test_revocation_waits_for_the_batch_in_hand_and_commits_it() -> None:
    processor, sink = FakeProcessor(), FakeSink(gate=asyncio.Event())
    source = FakeSource([records(CHECKOUTS, range(0, 3))])
    loop = make_loop(processor, sink)
    loop.commit_interval_s = 3600  # only the revocation commits

    async def scenario() -> None:
        running = asyncio.create_task(loop.run(source))
        while sink.flushes == 0:
            await asyncio.sleep(0)
        revoking = asyncio.create_task(loop.on_revoked())
        await asyncio.sleep(0.01)
        assert not revoking.done()  # waits for the batch being published
        assert sink.gate is not None
        sink.gate.set()
        await revoking
        await running

    asyncio.run(scenario())
    assert source.commits == [{tp(CHECKOUTS): 3}]


def test_a_batch_the_group_moved_on_from_is_dropped_and_nothing_is_applied_until_a_rebalance() -> (
    None
):
    # A worker stalled past its session timeout: the group coordinator no longer counts
    # it a member when its batch is ready. Its state records must not be written.
    processor, sink = FakeProcessor(), FakeSink(states=True)
    source = FakeSource(
        [records(CHECKOUTS, range(0, 3)), records(CHECKOUTS, range(3, 5))],
        membership=[Fenced("UnknownMemberIdError")],
    )
    fenced: list[int] = []
    loop = make_loop(processor, sink)
    loop.fenced = lambda: fenced.append(1)

    async def scenario() -> None:
        running = asyncio.create_task(loop.run(source))
        while not fenced:
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.2)  # fenced: nothing more is fetched, applied or committed
        assert source.fetched == 1 and sink.flushes == 1
        assert processor.confirmed_batches == 0 and source.commits == []
        assert processor.resets == 1  # its states and records forgotten
        # The consumer rejoins: the partition is read again from its committed offset.
        await loop.on_revoked()
        await loop.on_assigned()
        source.fetches.insert(0, records(CHECKOUTS, range(0, 3)))
        await running

    asyncio.run(scenario())
    assert [o for _, _, o in processor.applied] == [0, 1, 2, 0, 1, 2, 3, 4]
    assert processor.confirmed_batches == 2
    assert source.commits and source.last_commit == {tp(CHECKOUTS): 5}
    assert source.membership_checks == 3


def test_a_membership_check_the_coordinator_cannot_answer_is_retried() -> None:
    processor, sink = FakeProcessor(), FakeSink(states=True)
    source = FakeSource(
        [records(CHECKOUTS, range(0, 3))],
        membership=[KafkaConnectionError(), KafkaConnectionError()],
    )
    asyncio.run(make_loop(processor, sink).run(source))
    assert source.membership_checks == 3
    assert processor.confirmed_batches == 1 and source.last_commit == {tp(CHECKOUTS): 3}


@dataclass
class FakeStates:
    """The state partitions: their ends, and the keys another writer put in each gap."""

    ends_now: dict[TopicPartition, int] = field(default_factory=dict)
    keys: dict[TopicPartition, set[bytes]] = field(default_factory=dict)
    read: list[list[Gap]] = field(default_factory=list)

    async def ends(self, tps: Any) -> dict[TopicPartition, int]:
        return {tp: self.ends_now[tp] for tp in tps}

    async def keys_in(self, gaps: Any) -> dict[TopicPartition, set[bytes]]:
        self.read.append(list(gaps))
        return self.keys


CHANGELOG = tp("app-customers-changelog")


def test_another_writers_state_records_are_written_over_by_the_owner() -> None:
    # A removed worker's records were on their way when it stalled, and landed among
    # this batch's: this worker is still a member, so it writes its own values over them.
    processor = FakeProcessor()
    gap = Gap(CHANGELOG, 40, 42)
    sink = FakeSink(states=True, gaps=[[gap]])
    states = FakeStates(keys={CHANGELOG: {b"c7", b"c9"}})
    source = FakeSource([records(CHECKOUTS, range(0, 3))])
    overwritten: list[int] = []
    loop = make_loop(processor, sink)
    loop.states, loop.overwritten = states, overwritten.append
    asyncio.run(loop.run(source))
    assert processor.confirmed_batches == 1
    assert states.read == [[gap]]
    assert processor.rewritten == [{CHANGELOG: {b"c7", b"c9"}}]
    assert sink.flushes == 2 and overwritten == [2]  # the batch, then what is written over
    assert source.membership_checks == 3  # the batch's fence, the gap, the rewrite's fence
    assert source.last_commit == {tp(CHECKOUTS): 3}


def test_a_worker_whose_records_landed_after_another_writers_drops_its_batch() -> None:
    # The stalled worker itself: its records landed after its successor's, and the
    # coordinator no longer counts it a member. Its store must not take the batch (it
    # would say it had read past the successor's records), nor its commit.
    processor = FakeProcessor()
    sink = FakeSink(states=True, gaps=[[Gap(CHANGELOG, 40, 42)]])
    # Still a member when the fence was asked; no longer once the records had landed
    # (the coordinator cannot answer at first: asked again).
    source = FakeSource(
        [records(CHECKOUTS, range(0, 3))],
        membership=[None, KafkaConnectionError(), Fenced("UnknownMemberIdError")],
    )
    states = FakeStates()
    loop = make_loop(processor, sink)
    loop.states = states
    fenced: list[int] = []
    loop.fenced = lambda: fenced.append(1)

    async def scenario() -> None:
        running = asyncio.create_task(loop.run(source))
        while not fenced:
            await asyncio.sleep(0.001)
        assert processor.confirmed_batches == 0 and source.commits == []
        assert states.read == [] and processor.rewritten == []
        assert source.membership_checks == 3 and sink.flushes == 1
        await loop.on_assigned()
        await running

    asyncio.run(scenario())


def revoked_after_a_batch(states: FakeStates) -> tuple[FakeProcessor, FakeSource]:
    """An owner that expects its next record of CHANGELOG at 50 applies a batch, then its
    partitions are revoked."""
    processor, sink = FakeProcessor(), FakeSink(expects={CHANGELOG: 50})
    source = FakeSource([records(CHECKOUTS, range(0, 2))])
    loop = make_loop(processor, sink)
    loop.states = states

    async def scenario() -> None:
        await loop.run(source)
        await loop.on_revoked()

    asyncio.run(scenario())
    return processor, source


def test_a_revoked_owner_writes_over_records_another_writer_put_after_its_last() -> None:
    states = FakeStates(ends_now={CHANGELOG: 53}, keys={CHANGELOG: {b"c3"}})
    processor, _ = revoked_after_a_batch(states)
    assert states.read == [[Gap(CHANGELOG, 50, 53)]]
    assert processor.rewritten == [{CHANGELOG: {b"c3"}}]


def test_a_revoked_owner_whose_partitions_nobody_else_wrote_reads_nothing() -> None:
    states = FakeStates(ends_now={CHANGELOG: 50})
    processor, source = revoked_after_a_batch(states)
    assert states.read == [] and processor.rewritten == []
    assert source.membership_checks == 0


def test_a_partition_whose_first_records_start_past_its_committed_offset_is_rewound() -> None:
    # No offset committed: the first records must be the log's first ones. A
    # consumer that kept its position past a dropped batch is sent back.
    processor, sink = FakeProcessor(), FakeSink()
    source = FakeSource([records(CHECKOUTS, range(7, 9)), records(CHECKOUTS, range(0, 9))])
    asyncio.run(make_loop(processor, sink).run(source))
    assert source.rewinds == [(tp(CHECKOUTS), None)]
    assert [o for _, _, o in processor.applied] == list(range(9))


def test_live_ticks_move_only_partitions_whose_input_is_caught_up() -> None:
    processor, sink = FakeProcessor(), FakeSink()
    source = FakeSource(
        [records(CHECKOUTS, range(0, 2)) | records(CHECKOUTS, range(0, 2), partition=1)],
        ends={
            tp(CHECKOUTS, 0): 2,
            tp(PAYMENTS, 0): 0,
            tp(CHECKOUTS, 1): 2,
            tp(PAYMENTS, 1): 5,  # payments of partition 1 not read yet
        },
        partitions={0, 1},
    )
    asyncio.run(make_loop(processor, sink, live=True).run(source))
    assert processor.ticks == [0]


def test_the_sink_reads_the_time_before_anything_is_applied_and_ticks_take_the_workers_time() -> (
    None
):
    processor = FakeProcessor()
    sink = FakeSink(start_failures=[KafkaConnectionError(), KafkaConnectionError()])
    source = FakeSource([records(CHECKOUTS, range(0, 2))], ends={tp(CHECKOUTS): 2, tp(PAYMENTS): 0})
    loop = make_loop(processor, sink, live=True)
    loop.wall_ms = lambda: 1_234_000
    started_before: list[int] = []

    async def watch() -> None:
        started_before.append(sink.started)

    source.before_fetch_returns = watch
    asyncio.run(loop.run(source))
    assert started_before == [1]  # started (retried twice) before the first fetch
    assert processor.tick_walls == [1_234_000]


def test_a_sink_that_cannot_start_for_a_lasting_reason_stops_the_worker() -> None:
    fatal: list[Any] = []
    processor, sink = FakeProcessor(), FakeSink(start_failures=[RecordTooLargeError()])
    source = FakeSource([records(CHECKOUTS, range(0, 2))])
    asyncio.run(make_loop(processor, sink, fatal=fatal).run(source))
    assert len(fatal) == 1 and isinstance(fatal[0], RecordTooLargeError)
    assert processor.applied == [] and source.fetched == 0


def test_a_partition_never_fetched_is_not_caught_up() -> None:
    processor, sink = FakeProcessor(), FakeSink()
    source = FakeSource([{}], ends={}, partitions={0})
    asyncio.run(make_loop(processor, sink, live=True).run(source))
    assert processor.ticks == []


@dataclass
class ReplayingSource(FakeSource):
    """A log of records per partition read as Faust's consumer reads it: after a rebalance a
    partition with a committed offset is read again from there, one without stays where the
    consumer's fetches had got to."""

    log_sizes: dict[TopicPartition, int] = field(default_factory=dict)
    chunks: list[int] = field(default_factory=list)
    rebalance_at: set[int] = field(default_factory=set)
    loop: ConsumeLoop | None = None
    position: dict[TopicPartition, int] = field(default_factory=dict)
    applied_at_commit: list[tuple[dict[TopicPartition, int], set[tuple[str, int, int]]]] = field(
        default_factory=list
    )
    processor: FakeProcessor | None = None
    fetch_count: int = 0
    starts: dict[TopicPartition, int] = field(default_factory=dict)

    async def fetch(self, wait_s: float) -> dict[TopicPartition, list[Any]]:
        self.fetch_count += 1
        if self.fetch_count > 400 or not self.chunks:
            self.done = True
            return {}
        size = self.chunks.pop(0)
        batch: dict[TopicPartition, list[Any]] = {}
        for part, end in self.log_sizes.items():
            start = self.position.get(part, 0)
            upto = min(start + size, end)
            if upto > start:
                batch[part] = [Record(part.topic, part.partition, o) for o in range(start, upto)]
                self.position[part] = upto
        if self.fetch_count in self.rebalance_at and self.loop is not None:
            # A rebalance lands between this fetch and its apply; afterwards
            # every partition is read again from its committed offset.
            await self.loop.on_revoked()
            await self.loop.on_assigned()
            self.position.update(self.last_commit)
            self.starts = dict(self.last_commit)
        return batch

    def start_offset(self, tp: TopicPartition) -> int | None:
        return self.starts.get(tp)

    async def rewind(self, tp: TopicPartition, offset: int | None) -> None:
        self.position[tp] = 0 if offset is None else offset

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        assert self.processor is not None
        self.applied_at_commit.append((dict(offsets), set(self.processor.applied)))
        await super().commit(offsets)


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 30), min_size=2, max_size=2),
    chunks=st.lists(st.integers(1, 12), min_size=1, max_size=40),
    rebalances=st.sets(st.integers(1, 40), max_size=6),
    held=st.dictionaries(st.sampled_from([0, 1]), st.integers(0, 30), max_size=2),
)
def test_no_offset_is_committed_before_every_record_below_it_was_applied(
    sizes: list[int], chunks: list[int], rebalances: set[int], held: dict[int, int]
) -> None:
    parts = [tp(CHECKOUTS), tp(PAYMENTS)]
    processor = FakeProcessor(holding={parts[i]: offset for i, offset in held.items()})
    source = ReplayingSource(
        fetches=[],
        log_sizes=dict(zip(parts, sizes, strict=True)),
        chunks=[*chunks, 50, 50],  # the last fetches read everything that is left
        # Rebalances happen among the random fetches, never in the final ones.
        rebalance_at={r for r in rebalances if r <= len(chunks)},
        processor=processor,
    )
    loop = make_loop(processor, FakeSink())
    source.loop = loop
    asyncio.run(loop.run(source))
    for offsets, applied in source.applied_at_commit:
        for part, offset in offsets.items():
            missing = [o for o in range(offset) if (part.topic, part.partition, o) not in applied]
            assert not missing, f"committed {part} at {offset} before applying {missing}"
            assert offset <= processor.holding.get(part, offset)
    for part, size in zip(parts, sizes, strict=True):
        assert {o for t, _, o in processor.applied if t == part.topic} == set(range(size))


def test_the_loop_tells_where_its_time_goes_phase_by_phase() -> None:
    # Each phase takes a known least time: a fetch waits 0.04 s, applying a record
    # takes 0.01 s, publishing waits 0.15 s, storing 0.1 s, a commit 0.01 s.
    class SlowProcessor(FakeProcessor):
        def apply(self, msg: RawMessage) -> None:
            time.sleep(0.01)
            super().apply(msg)

        def confirmed(self, delivered: Mapping[TopicPartition, int]) -> None:
            time.sleep(0.1)
            super().confirmed(delivered)

    class SlowSink(FakeSink):
        async def flush(self, fence: Any = None) -> dict[TopicPartition, int]:
            await asyncio.sleep(0.15)
            return await super().flush(fence)

    class SlowSource(FakeSource):
        async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
            await asyncio.sleep(0.01)
            await super().commit(offsets)

    async def slow_fetch() -> None:
        await asyncio.sleep(0.04)

    source = SlowSource([records(CHECKOUTS, range(0, 2)), records(CHECKOUTS, range(2, 4))])
    source.before_fetch_returns = slow_fetch
    loop = make_loop(SlowProcessor(), SlowSink())
    spent: list[tuple[str, float]] = []
    loop.spent = lambda phase, seconds: spent.append((phase, seconds))
    asyncio.run(loop.run(source))
    batch = ["fetch", "apply", "publish", "store", "commit"]
    # The first batch's apply phase comes after the preparation's (counted as applying).
    assert [phase for phase, _ in spent] == ["fetch", "apply", *batch[1:], *batch, "fetch"]
    total = {phase: sum(s for p, s in spent if p == phase) for phase in batch}
    assert total["fetch"] >= 2 * 0.04
    assert total["apply"] >= 4 * 0.01
    assert total["publish"] >= 2 * 0.15
    assert total["store"] >= 2 * 0.1
    assert total["commit"] >= 2 * 0.01
    # Applying is not charged the wait for the broker, nor publishing the store's writes.
    assert total["apply"] < 0.3
    assert total["publish"] < 0.3 + 0.15
