"""The publisher hands the broker whole record batches and says where each message went."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest

from hitrun.streams import publisher
from hitrun.streams.config import Settings
from hitrun.streams.partitioning import partition_for_key
from hitrun.streams.publisher import Delivery, publish
from hitrun.streams.simulate import SimMessage
from tests.unit.test_record_sink import FakeProducer

PARTITIONS = 4


class StartedFake(FakeProducer):
    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass


def message(n: int) -> SimMessage:
    customer = f"cust-{n % 5}"
    role = "checkouts" if n % 2 else "payments"
    at = datetime(2026, 1, 1, tzinfo=UTC)
    return SimMessage(role, customer.encode(), f"m{n}".encode(), at, customer, "test")


def run(
    monkeypatch: pytest.MonkeyPatch, messages: list[SimMessage], **kwargs: Any
) -> tuple[StartedFake, list[Delivery]]:
    producer = StartedFake(room=3, partitions=PARTITIONS)

    async def fake_started(make: Any, settings: Settings) -> StartedFake:
        return producer

    monkeypatch.setattr(publisher, "started", fake_started)
    settings = Settings.from_env({"HITRUN_PARTITIONS": str(PARTITIONS)})
    deliveries: list[Delivery] = []
    stats = asyncio.run(publish(settings, messages, deliveries=deliveries, **kwargs))
    assert stats.sent == len(deliveries)
    return producer, deliveries


def test_each_partition_gets_its_messages_in_order_in_full_batches(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    messages = [message(n) for n in range(40)]
    producer, deliveries = run(monkeypatch, messages)
    assert sorted(d.message.value for d in deliveries) == sorted(m.value for m in messages)
    logs: dict[tuple[str, int], list[bytes | None]] = {}
    for topic, partition, batch in producer.sent:
        assert 1 <= len(batch.records) <= 3
        logs.setdefault((topic, partition), []).extend(value for _, value, _ in batch.records)
    for (topic, partition), values in logs.items():
        mine = [d for d in deliveries if (d.topic, d.partition) == (topic, partition)]
        # The order of the input, and the offsets the log gave each message.
        assert values == [d.message.value for d in mine]
        assert [d.offset for d in sorted(mine, key=lambda d: d.offset)] == list(
            range(100, 100 + len(values))
        )
        expected = [
            m.value
            for m in messages
            if topic.endswith(m.role) and partition_for_key(m.key or b"", PARTITIONS) == partition
        ]
        assert values == expected


def test_one_at_a_time_sends_each_message_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    producer, deliveries = run(monkeypatch, [message(n) for n in range(6)], one_at_a_time=True)
    assert [len(batch.records) for *_, batch in producer.sent] == [1] * 6
    assert [d.message.value for d in deliveries] == [f"m{n}".encode() for n in range(6)]
