"""The record sink sends each partition's records in order, in as few batches as fit."""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaConnectionError

from hitrun.streams.brokertime import BrokerTime
from hitrun.streams.faust_bridge import Fenced
from hitrun.streams.partitioning import partition_for_key
from hitrun.streams.sink import BATCH_BYTES, Gap, OutRecord, RecordSink


@dataclass
class FakeBatch:
    room: int
    records: list[tuple[bytes | None, bytes | None, list[Any]]] = field(default_factory=list)
    timestamps: list[int | None] = field(default_factory=list)

    def append(
        self,
        *,
        key: bytes | None,
        value: bytes | None,
        timestamp: int | None,
        headers: list[Any],
    ) -> object | None:
        if len(self.records) == self.room:
            return None
        self.records.append((key, value, headers))
        self.timestamps.append(timestamp)
        return object()


@dataclass
class Delivered:
    offset: int
    # As aiokafka gives them: the broker's append time and type 1 from a LogAppendTime
    # topic, -1 and type 0 (CreateTime) otherwise.
    timestamp: int = -1
    timestamp_type: int = 0


class FakeProducer:
    """Batches hold `room` records; each topic partition's log starts at offset 100. The
    topics in `log_append` are stamped by the broker's clock, `broker_ms`."""

    def __init__(
        self,
        room: int,
        partitions: int,
        log_append: frozenset[str] = frozenset(),
        broker_ms: int = 0,
    ) -> None:
        self.room = room
        self.partitions = partitions
        self.log_append = log_append
        self.broker_ms = broker_ms
        self.sent: list[tuple[str, int, FakeBatch]] = []
        self.ends: dict[tuple[str, int], int] = {}
        self.probes: list[tuple[str, bytes | None, int | None]] = []

    def delivered(self, topic: str, offset: int) -> Delivered:
        if topic in self.log_append:
            return Delivered(offset, self.broker_ms, 1)
        return Delivered(offset)

    async def send_and_wait(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None,
        partition: int | None,
        headers: list[Any],
    ) -> Delivered:
        self.probes.append((topic, value, partition))
        return self.delivered(topic, 0)

    def create_batch(self) -> FakeBatch:
        return FakeBatch(self.room)

    async def send_batch(
        self, batch: FakeBatch, topic: str, *, partition: int
    ) -> asyncio.Future[Delivered]:
        self.sent.append((topic, partition, batch))
        base = self.ends.get((topic, partition), 100)
        self.ends[topic, partition] = base + len(batch.records)
        future: asyncio.Future[Delivered] = asyncio.get_running_loop().create_future()
        future.set_result(self.delivered(topic, base))
        return future

    async def partitions_for(self, topic: str) -> set[int]:
        return set(range(self.partitions))


def flush(
    records: list[OutRecord], room: int = 3, partitions: int = 4
) -> tuple[FakeProducer, dict[TopicPartition, int]]:
    sink = RecordSink({"bootstrap_servers": ["127.0.0.1:1"]}, client_id="test")
    producer = FakeProducer(room, partitions)
    sink._producer = producer  # type: ignore[assignment]
    for record in records:
        sink.put(record)

    async def run() -> dict[TopicPartition, int]:
        return await sink.flush()

    return producer, asyncio.run(run())


def test_a_partitions_records_keep_their_order_across_batches_and_its_last_offset_is_returned() -> (
    None
):
    records = [OutRecord("alerts", b"c1", f"v{n}".encode(), partition=2) for n in range(7)]
    producer, last = flush(records, room=3)
    assert [len(b.records) for _, _, b in producer.sent] == [3, 3, 1]
    values = [value for _, _, b in producer.sent for _, value, _ in b.records]
    assert values == [f"v{n}".encode() for n in range(7)]
    assert last == {TopicPartition("alerts", 2): 106}


def test_a_keyed_record_without_a_partition_goes_where_murmur2_puts_its_key() -> None:
    producer, _ = flush([OutRecord("alerts", b"customer-9", b"x")], partitions=4)
    ((topic, partition, _),) = producer.sent
    assert (topic, partition) == ("alerts", partition_for_key(b"customer-9", 4))


def test_each_topic_partition_gets_its_own_batch_and_headers_travel_with_the_record() -> None:
    records = [
        OutRecord("a", b"k", b"1", partition=0, headers=(("h", b"v"),)),
        OutRecord("b", b"k", b"2", partition=0),
        OutRecord("a", b"k", None, partition=1),
    ]
    producer, last = flush(records)
    assert sorted((t, p) for t, p, _ in producer.sent) == [("a", 0), ("a", 1), ("b", 0)]
    first = next(b for t, p, b in producer.sent if (t, p) == ("a", 0))
    assert first.records == [(b"k", b"1", [("h", b"v")])]
    assert last[TopicPartition("a", 1)] == 100


def test_an_empty_flush_sends_nothing() -> None:
    producer, last = flush([])
    assert producer.sent == [] and last == {}


class FlakyProducer(FakeProducer):
    """Fails the deliveries of `failing` topics until told otherwise; records what it sent."""

    def __init__(self, failing: set[str]) -> None:
        super().__init__(room=100, partitions=2)
        self.failing = failing

    async def send_batch(
        self, batch: FakeBatch, topic: str, *, partition: int
    ) -> asyncio.Future[Delivered]:
        future = await super().send_batch(batch, topic, partition=partition)
        if topic in self.failing:
            failed: asyncio.Future[Delivered] = asyncio.get_running_loop().create_future()
            failed.set_exception(KafkaConnectionError())
            return failed
        return future


def test_state_records_are_sent_only_after_every_output_is_delivered() -> None:
    sink = RecordSink(
        {"bootstrap_servers": ["127.0.0.1:1"]}, client_id="t", state_topics=frozenset({"changelog"})
    )
    producer = FlakyProducer(failing={"alerts"})
    sink._producer = producer  # type: ignore[assignment]
    sink.put(OutRecord("changelog", b"c1", b"state", partition=0))
    sink.put(OutRecord("alerts", b"c1", b"alert", partition=1))

    async def run() -> None:
        try:
            await sink.flush()
        except KafkaConnectionError:
            pass
        else:
            raise AssertionError("an undelivered alert must fail the flush")
        # The alert was not delivered: the state that says it was sent was not sent at all.
        assert [t for t, _, _ in producer.sent] == ["alerts"]
        producer.failing.clear()
        last = await sink.flush()  # the broker is back: both go, the alert first
        assert [t for t, _, _ in producer.sent] == ["alerts", "alerts", "changelog"]
        assert set(last) == {TopicPartition("alerts", 1), TopicPartition("changelog", 0)}

    asyncio.run(run())


def test_the_fence_is_asked_after_the_outputs_and_a_refusal_keeps_the_state_records_unsent() -> (
    None
):
    sink = RecordSink(
        {"bootstrap_servers": ["127.0.0.1:1"]}, client_id="t", state_topics=frozenset({"changelog"})
    )
    producer = FakeProducer(room=10, partitions=2)
    sink._producer = producer  # type: ignore[assignment]
    asked: list[list[str]] = []
    refuse = [True]

    async def fence() -> None:
        asked.append([topic for topic, _, _ in producer.sent])
        if refuse[0]:
            raise Fenced("another worker owns the partition now")

    async def run() -> None:
        sink.put(OutRecord("changelog", b"c1", b"state", partition=0))
        sink.put(OutRecord("alerts", b"c1", b"alert", partition=1))
        with pytest.raises(Fenced):
            await sink.flush(fence)
        # Asked once the alert was delivered; the state record was never sent.
        assert asked == [["alerts"]]
        assert [t for t, _, _ in producer.sent] == ["alerts"]
        refuse[0] = False
        last = await sink.flush(fence)  # still a member: only the state record is left to send
        assert [t for t, _, _ in producer.sent] == ["alerts", "changelog"]
        assert set(last) == {TopicPartition("alerts", 1), TopicPartition("changelog", 0)}
        # A flush without state records does not ask.
        sink.put(OutRecord("alerts", b"c2", b"alert", partition=0))
        await sink.flush(fence)
        assert len(asked) == 2

    asyncio.run(run())


def test_state_records_that_do_not_land_where_expected_mark_another_writers_gap() -> None:
    # Only state partitions are watched: this worker is their one writer.
    sink = RecordSink(
        {"bootstrap_servers": ["127.0.0.1:1"]}, client_id="t", state_topics=frozenset({"changelog"})
    )
    producer = FakeProducer(room=2, partitions=2)  # every log starts at offset 100
    sink._producer = producer  # type: ignore[assignment]
    changelog = TopicPartition("changelog", 0)
    sink.expect(changelog, 97)  # the recovery read up to 97; 97-99 came from someone else
    sink.expect(TopicPartition("changelog", 1), 100)

    async def run() -> None:
        for n in range(3):  # two record batches: 100-101, 102
            sink.put(OutRecord("changelog", b"c%d" % n, b"state", partition=0))
        sink.put(OutRecord("changelog", b"d", b"state", partition=1))
        sink.put(OutRecord("alerts", b"c1", b"alert", partition=0))  # not a state partition
        await sink.flush()
        assert sink.take_gaps() == [Gap(changelog, 97, 100)]
        assert sink.take_gaps() == []
        assert sink.expected() == {changelog: 103, TopicPartition("changelog", 1): 101}
        producer.ends["changelog", 0] = 105  # another writer: 103-104
        sink.put(OutRecord("changelog", b"c1", b"state", partition=0))
        await sink.flush()
        assert sink.take_gaps() == [Gap(changelog, 103, 105)]
        sink.discard()  # a rebalance: expect nothing until the next recovery says
        assert sink.expected() == {}
        # A batch published before the recovery's end was told: its records' place stands.
        sink.put(OutRecord("changelog", b"c1", b"state", partition=0))
        await sink.flush()
        sink.expect(changelog, 97)
        assert sink.expected() == {changelog: 107}
        assert sink.take_gaps() == []

    asyncio.run(run())


class NoMetadataProducer(FakeProducer):
    """Cannot say how many partitions a topic has until `broker_back` is set."""

    broker_back = False

    async def partitions_for(self, topic: str) -> set[int]:
        if not self.broker_back:
            raise KafkaConnectionError("no metadata")
        return await super().partitions_for(topic)


def values_sent(producer: FakeProducer) -> list[bytes | None]:
    return [value for _, _, batch in producer.sent for _, value, _ in batch.records]


def test_records_survive_a_flush_whose_producer_cannot_start() -> None:
    # A worker whose first batch meets a broker outage: the sink's producer is
    # started by that first flush, and its failure must not drop the batch.
    sink = RecordSink({"bootstrap_servers": ["127.0.0.1:1"]}, client_id="t")
    producer = FakeProducer(room=100, partitions=2)
    starts: list[str] = []

    async def start() -> None:
        if not starts:
            starts.append("failed")
            raise KafkaConnectionError("Unable to bootstrap")
        starts.append("started")
        sink._producer = producer  # type: ignore[assignment]

    sink.start = start  # type: ignore[method-assign]
    for n in range(3):
        sink.put(OutRecord("alerts", b"c1", f"a{n}".encode(), partition=0))

    async def run() -> dict[TopicPartition, int]:
        try:
            await sink.flush()
        except KafkaConnectionError:
            pass
        else:
            raise AssertionError("a flush whose producer cannot start must fail")
        assert len(sink) == 3
        return await sink.flush()

    last = asyncio.run(run())
    assert starts == ["failed", "started"]
    assert values_sent(producer) == [b"a0", b"a1", b"a2"]
    assert last == {TopicPartition("alerts", 0): 102}


def test_records_survive_a_flush_that_cannot_look_up_a_topics_partitions() -> None:
    sink = RecordSink({"bootstrap_servers": ["127.0.0.1:1"]}, client_id="t")
    producer = NoMetadataProducer(room=100, partitions=2)
    sink._producer = producer  # type: ignore[assignment]
    sink.put(OutRecord("alerts", b"c1", b"placed", partition=1))
    sink.put(OutRecord("dead-letters", b"c2", b"keyed"))  # needs the partition count
    sink.put(OutRecord("alerts", b"c3", b"after", partition=1))

    async def run() -> None:
        try:
            await sink.flush()
        except KafkaConnectionError:
            pass
        else:
            raise AssertionError("a flush without metadata must fail")
        assert producer.sent == [] and len(sink) == 3
        producer.broker_back = True
        await sink.flush()

    asyncio.run(run())
    # Each record exactly once, a partition's records in the order they were put.
    assert sorted(values_sent(producer)) == [b"after", b"keyed", b"placed"]
    alerts = [v for t, _, b in producer.sent if t == "alerts" for _, v, _ in b.records]
    assert alerts == [b"placed", b"after"]


class FakeClock:
    """A system clock and a monotonic clock, moved by hand."""

    def __init__(self, wall: float, monotonic: float) -> None:
        self.wall, self.mono = wall, monotonic

    def time(self) -> float:
        return self.wall

    def monotonic(self) -> float:
        return self.mono


def test_the_probe_reads_the_brokers_time_before_anything_else_and_records_carry_it() -> None:
    fake = FakeClock(wall=1_000_000.0 + 7200, monotonic=50.0)  # two hours ahead
    clock = BrokerTime(fake.time, fake.monotonic)
    probe = OutRecord("reroute", None, b"probe", 0)
    sink = RecordSink(
        {"bootstrap_servers": ["127.0.0.1:1"]}, client_id="t", clock=clock, probe=probe
    )
    producer = FakeProducer(room=10, partitions=2, log_append=frozenset({"reroute"}))
    producer.broker_ms = 1_000_000_000
    sink._producer = producer  # type: ignore[assignment]
    sink.put(OutRecord("alerts", b"k", b"v", 1))

    async def run() -> None:
        await sink.start()
        assert producer.probes == [("reroute", b"probe", 0)]
        fake.mono += 2.5  # the broker's clock runs on as the monotonic one does
        await sink.flush()
        await sink.start()  # the probe goes once

    asyncio.run(run())
    assert len(producer.probes) == 1
    ((topic, partition, batch),) = producer.sent
    assert (topic, partition) == ("alerts", 1)
    assert batch.timestamps == [1_000_002_500]  # the broker's time, not the system clock's
    assert clock.offset_s() == pytest.approx(7200 - 2.5)


def test_the_clock_reads_only_log_append_times_and_never_goes_back() -> None:
    fake = FakeClock(wall=2_000.0, monotonic=10.0)
    clock = BrokerTime(fake.time, fake.monotonic)
    assert not clock.known and clock.now_ms() == 2_000_000 and math.isnan(clock.offset_s())
    clock.heard(5_000_000, 0)  # CreateTime: the producer's own clock, not the broker's
    assert not clock.known
    clock.heard(1_000_000, 1)
    assert clock.now_ms() == 1_000_000
    fake.mono += 1.0
    assert clock.now_ms() == 1_001_000
    # A reading that arrived late (the response took its time) is a lower bound: kept out.
    clock.heard(1_000_500, 1)
    assert clock.now_ms() == 1_001_000
    clock.heard(1_001_200, 1)
    assert clock.now_ms() == 1_001_200
    fake.wall += 3600  # the system clock steps: the worker's time does not
    assert clock.now_ms() == 1_001_200
    assert clock.now() == datetime.fromtimestamp(1_001.2, tz=UTC)


def test_records_keep_their_order_and_get_a_create_time_when_no_broker_time_is_known() -> None:
    fake = FakeClock(wall=3_000.0, monotonic=1.0)
    sink = RecordSink(
        {"bootstrap_servers": ["127.0.0.1:1"]},
        client_id="t",
        clock=BrokerTime(fake.time, fake.monotonic),
        probe=OutRecord("reroute", None, b"probe", 0),
    )
    producer = FakeProducer(room=10, partitions=2)  # no LogAppendTime topic
    sink._producer = producer  # type: ignore[assignment]
    sink.put(OutRecord("alerts", b"k", b"v", 0))

    async def run() -> None:
        await sink.flush()

    asyncio.run(run())
    assert producer.probes == [("reroute", b"probe", 0)]
    assert producer.sent[0][2].timestamps == [3_000_000]  # the system clock's


def test_the_sinks_producer_puts_a_partitions_state_records_of_a_batch_in_one_record_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """aiokafka keeps one batch per partition waiting and one request per broker in flight:
    each record batch of a partition is a round trip of its own. Its default batch of
    16 KiB held a few dozen states."""
    made: list[AIOKafkaProducer] = []

    class Unstarted(AIOKafkaProducer):  # the real producer, never connected
        def __init__(self, **options: Any) -> None:
            super().__init__(**options)
            made.append(self)

        async def start(self) -> None:
            pass

    monkeypatch.setattr("hitrun.streams.sink.AIOKafkaProducer", Unstarted)
    sink = RecordSink({"bootstrap_servers": ["127.0.0.1:1"]}, client_id="t")

    async def run() -> None:
        await sink.start()
        batch = made[0].create_batch()
        # 600 states of 550 bytes: what a batch of 6,000 events writes to one of 8 partitions.
        for n in range(600):
            added = batch.append(key=f"c{n:07d}".encode(), value=bytes(550), timestamp=0)
            assert added is not None, f"record {n} did not fit"
        await made[0].stop()

    asyncio.run(run())
    assert BATCH_BYTES <= 1_048_588  # a broker's default message.max.bytes


def test_the_worker_sets_its_sinks_record_batch_size() -> None:
    from hitrun.agents import customer

    assert customer.sink._batch_bytes == customer.settings.produce_batch_bytes == BATCH_BYTES
