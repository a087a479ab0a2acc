"""Publishes input messages to Kafka at a steady rate, choosing partitions explicitly."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from hitrun.streams.config import Settings
from hitrun.streams.kafka_auth import client_options, started
from hitrun.streams.simulate import PARTITIONERS, SimMessage
from hitrun.streams.sink import OutRecord, send_partition
from hitrun.streams.watermarks import signature


@dataclass
class PublishStats:
    sent: int = 0
    elapsed_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Mark:
    """A watermark for every partition of every input topic: nothing older than `at` follows."""

    at: datetime
    source: str = "hitrun"


@dataclass(frozen=True, slots=True)
class Delivery:
    """Where the broker stored a message."""

    message: SimMessage
    topic: str
    partition: int
    offset: int


def role_topics(settings: Settings) -> dict[str, str]:
    """Input topic name for each message role."""
    return {
        "checkouts": settings.topic_checkouts,
        "payments": settings.topic_payments,
        "orders": settings.topic_orders,
        "inquiries": settings.topic_inquiries,
    }


async def publish_watermarks(settings: Settings, at: datetime, source: str = "hitrun") -> int:
    """Write a watermark at `at` to every partition of every input topic; returns how many."""
    producer = await started(
        lambda: AIOKafkaProducer(**client_options(settings), acks="all"), settings
    )
    try:
        futures = await _send_mark(producer, settings, Mark(at, source))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return len(futures)


async def _send_mark(
    producer: AIOKafkaProducer,
    settings: Settings,
    mark: Mark,
    skip: dict[tuple[str, int], int] | None = None,
) -> list[asyncio.Future[Any]]:
    if settings.watermark_key is None:
        raise ValueError("HITRUN_WATERMARK_KEY is needed to write watermarks the workers accept")
    key = settings.watermark_key.encode()
    body = {"type": "watermark", "occurred_at": mark.at.isoformat(), "source": mark.source}
    return [
        await producer.send(
            topic,
            orjson.dumps(body | {"signature": signature(key, topic, p, mark.at, mark.source)}),
            partition=p,
        )
        for topic in settings.watermarked_topics
        for p in range(settings.partitions)
        if not _skipped(skip, topic, p)
    ]


class _Batches:
    """Messages held per topic partition, then handed to the producer as whole record batches.

    `producer.send` costs tens of microseconds a message (a future and the
    accumulator's bookkeeping each); a record batch costs one of those. A
    partition's messages keep their order (streams/sink.py, `send_partition`).
    """

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self._producer = producer
        self._held: dict[tuple[str, int], list[SimMessage]] = {}
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, topic: str, partition: int, message: SimMessage) -> None:
        self._held.setdefault((topic, partition), []).append(message)
        self._count += 1

    async def flush(self) -> list[Delivery]:
        """Send every held message; once the broker has them all, where each one went."""
        held, self._held, self._count = self._held, {}, 0
        sent = []
        for (topic, partition), messages in held.items():
            records = [OutRecord(topic, m.key, m.value, partition) for m in messages]
            for tp, count, future in await send_partition(
                self._producer, topic, partition, records
            ):
                sent.append((tp, messages[:count], future))
                messages = messages[count:]
        results = await asyncio.gather(*(future for *_, future in sent))
        return [
            Delivery(message, tp.topic, tp.partition, result.offset + i)
            for (tp, messages, _), result in zip(sent, results, strict=True)
            for i, message in enumerate(messages)
        ]


def _skipped(skip: dict[tuple[str, int], int] | None, topic: str, partition: int) -> bool:
    """Take one from `skip`'s count for the topic partition, if any is left."""
    if not skip or skip.get((topic, partition), 0) <= 0:
        return False
    skip[(topic, partition)] -= 1
    return True


async def publish(
    settings: Settings,
    messages: Iterable[SimMessage | Mark],
    *,
    rate: float = 0.0,
    partitioner: str = "murmur2",
    seed: int = 1,
    on_progress: Callable[[PublishStats], None] | None = None,
    progress_every: int = 10_000,
    deliveries: list[Delivery] | None = None,
    one_at_a_time: bool = False,
    skip: dict[tuple[str, int], int] | None = None,
) -> PublishStats:
    """Send every message; `rate` messages per second (0: as fast as the broker takes them).

    `one_at_a_time` waits for each message to be written before sending the
    next, so the input topics' logs keep the messages' order across topics,
    as a shop's producers writing events as they happen do (slower).

    `skip` gives, per (topic, partition), how many of the records that would
    go there were written already (by an interrupted run of the same
    messages): those are not sent again, nor counted in `sent`.

    A `Mark` among the messages sends watermarks (after everything before it,
    since each partition keeps the order of its records); it is not counted in `sent`.
    """
    pick = PARTITIONERS[partitioner]
    rng = random.Random(seed)
    topics = role_topics(settings)
    producer = await started(
        lambda: AIOKafkaProducer(
            **client_options(settings),
            linger_ms=5,
            max_batch_size=256 * 1024,
            # Oversized test messages must reach the broker so hitrun can refuse them itself.
            max_request_size=4 * settings.max_message_bytes + 1024 * 1024,
            acks="all",
        ),
        settings,
    )
    stats = PublishStats()
    began = time.monotonic()
    batches = _Batches(producer)

    async def settle() -> None:
        delivered = await batches.flush()
        if deliveries is not None:
            deliveries.extend(delivered)

    try:
        for message in messages:
            if isinstance(message, Mark):
                await settle()
                await asyncio.gather(*await _send_mark(producer, settings, message, skip))
                continue
            topic = topics[message.role]
            partition = pick(message.key, settings.partitions, rng)
            if _skipped(skip, topic, partition):
                continue
            batches.add(topic, partition, message)
            stats.sent += 1
            if one_at_a_time or len(batches) >= 5000:
                await settle()
            if rate > 0:
                ahead = began + stats.sent / rate - time.monotonic()
                if ahead > 0:
                    await settle()
                    await asyncio.sleep(ahead)
            if on_progress is not None and stats.sent % progress_every == 0:
                stats.elapsed_s = time.monotonic() - began
                on_progress(stats)
        await settle()
    finally:
        await producer.stop()
    stats.elapsed_s = time.monotonic() - began
    return stats
