"""The record sink: what one batch of the agent publishes, sent per partition and confirmed.

Faust's `Topic.send` and table writes hand records to its producer one at a
time, each through its producer buffer, a task and aiokafka's accumulator;
with an alert or a changelog record for most events, that was most of the
worker's time (docs/performance.md). The sink collects a batch's records,
builds one Kafka record batch per topic partition, sends each with a single
`send_batch`, and waits until the broker has acknowledged every one of them.
The agent acknowledges its input batch only after that, so a committed offset
never runs ahead of the records it produced, whatever Faust's producer does.

Records are stamped with the broker's time (streams/brokertime.py), which
the sink reads from each delivery to a LogAppendTime topic and, before its
first flush, from a probe record.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, cast

import msgspec
from aiokafka import AIOKafkaProducer, TopicPartition

from hitrun.streams.brokertime import BrokerTime
from hitrun.streams.partitioning import partition_for_key

log = logging.getLogger(__name__)

Headers = Sequence[tuple[str, bytes]]
# A record batch handed to the producer: its partition, record count and delivery future.
Sent = tuple[TopicPartition, int, "asyncio.Future[Any]"]
# Asked before a flush sends state records: raises unless this worker may still write them.
Fence = Callable[[], Awaitable[None]]


class Gap(msgspec.Struct, frozen=True):
    """Offsets [start, end) of a state partition that another writer took between two of
    this worker's state records there (or since the worker read the partition)."""

    tp: TopicPartition
    start: int
    end: int


class OutRecord(msgspec.Struct, frozen=True):
    """One record to publish; partition None: murmur2 of the key, like Kafka's Java client."""

    topic: str
    key: bytes | None
    value: bytes | None
    partition: int | None = None
    headers: Headers = ()


# The most bytes of one record batch: what a broker accepts by default (message.max.bytes,
# 1,048,588 bytes, a batch's limit). aiokafka's producer keeps one batch per partition
# waiting and one request per broker in flight, so a partition's batches go one round
# trip after another: with aiokafka's default of 16 KiB, a batch's 300 KB of state
# records for a partition took 19 round trips.
BATCH_BYTES = 1024 * 1024


class RecordSink:
    """Collects records with `put`; `flush` sends them and returns the last offset per partition."""

    def __init__(
        self,
        connection: Mapping[str, Any],
        client_id: str,
        state_topics: frozenset[str] = frozenset(),
        clock: BrokerTime | None = None,
        probe: OutRecord | None = None,
        batch_bytes: int = BATCH_BYTES,
    ) -> None:
        # Keyword arguments for the producer: servers, TLS, SASL (streams/kafka_auth.py).
        self._connection = dict(connection)
        self._client_id = client_id
        self._batch_bytes = batch_bytes
        # Records of these topics (the table's changelog) are sent only once
        # every other record of the flush is delivered: a crash in between then
        # leaves outputs without the state that says they were sent, and the
        # input is processed again (the same alert ids), never the other way
        # round (state saying "done" for alerts that never reached the broker).
        self._state_topics = state_topics
        # The broker's time, read from deliveries; it stamps the records sent. `probe`: a
        # record sent once as the producer starts, so the time is read before any other.
        self._clock = clock or BrokerTime()
        self._probe = probe
        self._producer: AIOKafkaProducer | None = None
        self._records: list[OutRecord] = []
        # Records of a failed flush, by (topic, partition), and the offsets a
        # failed flush did get delivered: both carry over to the next flush.
        self._undelivered: dict[tuple[str, int], list[OutRecord]] = {}
        self._delivered: dict[TopicPartition, int] = {}
        self._partition_counts: dict[str, int] = {}
        # Keyless records (dead letters of keyless messages) go round the partitions.
        self._spread = itertools.count()
        # Per state partition this worker writes: the offset its next record should get,
        # were it the partition's only writer (`expect`, then each delivered batch).
        self._next_state: dict[TopicPartition, int] = {}
        # Where another writer's records came in between (`take_gaps`).
        self._gaps: list[Gap] = []

    def __len__(self) -> int:
        return len(self._records) + sum(map(len, self._undelivered.values()))

    def put(self, record: OutRecord) -> None:
        self._records.append(record)

    def mark(self) -> int:
        """A point to go back to with `truncate` (records put since the last flush)."""
        return len(self._records)

    def truncate(self, mark: int) -> None:
        """Drop the records put after `mark`: the work that produced them was undone."""
        del self._records[mark:]

    async def start(self) -> None:
        if self._producer is None:
            producer = AIOKafkaProducer(
                **self._connection,
                client_id=self._client_id,
                # Every in-sync replica has each record before the batch is acknowledged.
                acks="all",
                # The sink batches itself and sends at once, a partition's records in as
                # few record batches as fit.
                linger_ms=0,
                max_batch_size=self._batch_bytes,
            )
            try:
                await producer.start()
            except BaseException:
                await producer.stop()  # its connections; the next flush starts a new one
                raise
            self._producer = producer
        if self._probe is not None:
            await self._read_the_time(self._producer, self._probe)
            self._probe = None

    async def _read_the_time(self, producer: AIOKafkaProducer, probe: OutRecord) -> None:
        """Send `probe` and read the broker's time from its delivery."""
        delivered = await producer.send_and_wait(
            probe.topic,
            probe.value,
            key=probe.key,
            partition=probe.partition,
            headers=list(probe.headers),
        )
        self._clock.heard(delivered.timestamp, delivered.timestamp_type)
        if not self._clock.known:
            log.warning(
                "topic %s keeps the producers' times (message.timestamp.type=CreateTime), so "
                "this worker cannot read the broker's clock and runs on its own: set it to "
                "LogAppendTime (README, Operations)",
                probe.topic,
            )

    async def stop(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

    def discard(self) -> None:
        """Drop every record not yet delivered (the batch that produced them is dropped), and
        what it expected of the state partitions (a rebalance may move them)."""
        self._records = []
        self._undelivered.clear()
        self._delivered.clear()
        self._next_state.clear()
        self._gaps.clear()

    def expect(self, tp: TopicPartition, offset: int) -> None:
        """This worker has read state partition `tp` up to `offset` (exclusive): its next
        record there should land at `offset`, unless another writer comes in between.

        A batch may be published before the assignment's tables count as recovered (and
        so before this is called): the expectation its records left stands.
        """
        self._next_state[tp] = max(offset, self._next_state.get(tp, offset))

    def expected(self) -> dict[TopicPartition, int]:
        """Per state partition, the offset this worker's next record there should get."""
        return dict(self._next_state)

    def take_gaps(self) -> list[Gap]:
        """The gaps found since the last call: records of another writer (a worker the
        group removed, that wrote after its successor had begun) among this worker's."""
        gaps, self._gaps = self._gaps, []
        return gaps

    async def flush(self, fence: Fence | None = None) -> dict[TopicPartition, int]:
        """Send every record put since the last successful flush; return once the broker has
        them all, with the last offset per partition.

        `fence` is awaited after the other records are delivered and before the
        state records are sent: when it raises, the state records stay unsent
        (a worker the group has moved on from must not write the state of
        partitions another worker now owns).

        Records of one partition keep the order they were put in. When any
        partition's records are not delivered, the producer's error is raised
        and those records stay for the next `flush`, which sends them again
        (a partition's records may then be written twice: at-least-once, with
        the same alert ids); the delivered partitions are not sent again.
        """
        if not self._records and not self._undelivered:
            return {}
        # Until a record is in `_undelivered` it stays in `_records`: starting the
        # producer or looking up a topic's partitions fails while the broker is
        # away, and the next flush must still have every record.
        await self.start()
        producer = self._producer
        assert producer is not None  # started just above
        undelivered = self._undelivered
        records, placed = self._records, 0
        try:
            for record in records:
                partition = record.partition
                if partition is None:
                    partition = await self._partition_of(producer, record.topic, record.key)
                undelivered.setdefault((record.topic, partition), []).append(record)
                placed += 1
        finally:
            self._records = records[placed:]
        outputs = [key for key in undelivered if key[0] not in self._state_topics]
        await self._send(producer, outputs)
        if undelivered and fence is not None:
            await fence()
        await self._send(producer, list(undelivered))
        last, self._delivered = self._delivered, {}
        return last

    async def _send(self, producer: AIOKafkaProducer, keys: list[tuple[str, int]]) -> None:
        """Send the undelivered records of these partitions; raise if any is not delivered."""
        undelivered = self._undelivered
        sent: list[tuple[tuple[str, int], list[Sent]]] = []
        failure: BaseException | None = None
        stamp = self._clock.now_ms()
        for topic, partition in keys:
            group = undelivered[topic, partition]
            try:
                sent.append(
                    (
                        (topic, partition),
                        await send_partition(producer, topic, partition, group, stamp),
                    )
                )
            except Exception as exc:  # the broker is away: retried by the next flush
                failure = failure or exc
        for key, batches in sent:
            outcomes = await asyncio.gather(*(f for _, _, f in batches), return_exceptions=True)
            errors = [o for o in outcomes if isinstance(o, BaseException)]
            if errors:
                failure = failure or errors[0]
                continue
            for (tp, count, _), delivered in zip(batches, outcomes, strict=True):
                # A batch's delivery gives its base offset; its records follow it.
                metadata = cast(Any, delivered)
                self._clock.heard(metadata.timestamp, metadata.timestamp_type)
                base = metadata.offset
                self._delivered[tp] = base + count - 1
                if tp.topic in self._state_topics:
                    self._note_state_batch(tp, base, count)
            del undelivered[key]
        if failure is not None:
            raise failure

    def _note_state_batch(self, tp: TopicPartition, base: int, count: int) -> None:
        """A record batch of ours landed at `base`: anything between the offset expected and
        `base` was written by someone else."""
        expected = self._next_state.get(tp)
        if expected is not None and base > expected:
            self._gaps.append(Gap(tp, expected, base))
        self._next_state[tp] = base + count

    async def _partition_of(self, producer: AIOKafkaProducer, topic: str, key: bytes | None) -> int:
        count = self._partition_counts.get(topic)
        if count is None:
            count = self._partition_counts[topic] = len(await producer.partitions_for(topic))
        if key is None:
            return next(self._spread) % count
        return partition_for_key(key, count)


async def send_partition(
    producer: AIOKafkaProducer,
    topic: str,
    partition: int,
    group: list[OutRecord],
    timestamp_ms: int | None = None,
) -> list[Sent]:
    """Hand one partition's records to the producer, in order, in as few record batches as
    they fit, stamped `timestamp_ms` (None: the producer's clock); returns each batch's
    partition, record count and delivery future."""
    tp = TopicPartition(topic, partition)
    sent: list[Sent] = []
    batch, count = producer.create_batch(), 0
    for record in group:
        if not _append(batch, record, timestamp_ms):
            sent.append((tp, count, await producer.send_batch(batch, topic, partition=partition)))
            batch, count = producer.create_batch(), 0
            if not _append(batch, record, timestamp_ms):
                raise ValueError(f"a record for {topic} does not fit in an empty batch")
        count += 1
    sent.append((tp, count, await producer.send_batch(batch, topic, partition=partition)))
    return sent


def _append(batch: Any, record: OutRecord, timestamp_ms: int | None) -> bool:
    """Add the record to an aiokafka batch; False when the batch is full."""
    added = batch.append(
        key=record.key, value=record.value, timestamp=timestamp_ms, headers=list(record.headers)
    )
    return added is not None
