"""The customer agent's shell driven without a broker: a fake record sink, raw messages, batches."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from aiokafka import TopicPartition

import hitrun.agents.customer as customer
from hitrun.agents.state import decode_state
from hitrun.streams.ingest import RawMessage
from hitrun.streams.partitioning import partition_for_key
from hitrun.streams.sink import OutRecord
from hitrun.streams.watermarks import signature

SETTINGS = customer.settings
START = datetime(2025, 5, 6, 10, 0, tzinfo=UTC)


class Sink:
    """The record sink as the agent uses it: put, mark, truncate, discard."""

    def __init__(self) -> None:
        self.records: list[OutRecord] = []
        # Where the agent expects its next state record of each partition to land.
        self.expected: dict[TopicPartition, int] = {}

    def expect(self, tp: TopicPartition, offset: int) -> None:
        self.expected[tp] = offset

    def put(self, record: OutRecord) -> None:
        self.records.append(record)

    def mark(self) -> int:
        return len(self.records)

    def truncate(self, mark: int) -> None:
        del self.records[mark:]

    def discard(self) -> None:
        self.records.clear()

    def __len__(self) -> int:
        return len(self.records)

    def letters(self) -> list[dict[str, Any]]:
        return [
            orjson.loads(r.value)
            for r in self.records
            if r.topic == SETTINGS.topic_dead_letters and r.value is not None
        ]


def install_sink(monkeypatch: pytest.MonkeyPatch) -> Iterator[Sink]:
    """Replace the agent's sink with a fake and leave the store, cache and timers as found."""
    # Only the memory store is left as found (tests/conftest.py imports the agent with it).
    assert SETTINGS.store.startswith("memory"), f"the agent was imported with {SETTINGS.store}"
    fake = Sink()
    monkeypatch.setattr(customer, "sink", fake)
    # Partitions wait for each other's progress marks only in the tests of that
    # (test_progress_marks.py): the others feed one partition at a time.
    monkeypatch.setattr(customer, "ALIGN_SOURCES", False)
    # Likewise the identity stage applies sightings as read, but in the tests of its
    # order (test_sighting_order.py).
    monkeypatch.setattr(customer, "ORDER_SIGHTINGS", False)
    store = customer.customers_table.data
    before = dict(store.items())
    customer.timers.clear()
    customer.cache.forget()
    yield fake
    customer.timers.clear()
    customer.cache.forget()
    for key in [k for k in store if k not in before]:
        del store[key]


offsets = iter(range(10**6))


def checkout(customer_id: str, order: str, minutes: int = 0, **extra: Any) -> RawMessage:
    body = {
        "type": "checkout_confirmed",
        "event_id": f"{order}-co",
        "customer_id": customer_id,
        "shop_id": "shop-1",
        "occurred_at": (START + timedelta(minutes=minutes)).isoformat(),
        "order_id": order,
        "total": {"amount_minor": 5000, "currency": "IDR"},
        "payment_method": "card",
    }
    return keyed(SETTINGS.topic_checkouts, customer_id, body, **extra)


def keyed(topic: str, customer_id: str, body: dict[str, Any], **extra: Any) -> RawMessage:
    """The next record of `topic`, keyed by the customer, in the customer's partition."""
    key = customer_id.encode()
    return RawMessage(
        topic=topic,
        partition=partition_for_key(key, SETTINGS.partitions),
        offset=next(offsets),
        timestamp_ms=None,
        key=key,
        value=orjson.dumps(body),
        **extra,
    )


def same_partition_as(customer_id: str, skip: int = 0) -> str:
    """Another customer id whose events go to the same partition (the `skip`+1-th found)."""
    home = partition_for_key(customer_id.encode(), SETTINGS.partitions)
    for n in range(1000):
        other = f"{customer_id}-neighbour-{n}"
        if partition_for_key(other.encode(), SETTINGS.partitions) == home:
            if not skip:
                return other
            skip -= 1
    raise AssertionError("no neighbour found")


def payment(customer_id: str, order: str, minutes: int = 0) -> RawMessage:
    body = {
        "type": "payment_attempted",
        "event_id": f"{order}-pay",
        "customer_id": customer_id,
        "shop_id": "shop-1",
        "occurred_at": (START + timedelta(minutes=minutes)).isoformat(),
        "order_id": order,
        "status": "succeeded",
        "amount": {"amount_minor": 5000, "currency": "IDR"},
        "method": "card",
    }
    return keyed(SETTINGS.topic_payments, customer_id, body)


def inquiry(customer_id: str, days: int) -> RawMessage:
    body = {
        "type": "inquiry_received",
        "event_id": f"{customer_id}-inq-{days}",
        "customer_id": customer_id,
        "shop_id": "shop-1",
        "occurred_at": (START + timedelta(days=days)).isoformat(),
        "inquiry_id": f"{customer_id}-{days}",
        "product_id": "sku-1",
        "channel": "chat",
    }
    return keyed(SETTINGS.topic_inquiries, customer_id, body)


def run_batch(
    *messages: RawMessage, caught_up: Any = lambda tp: True, owned: Any = frozenset()
) -> None:
    """Apply `messages` as one batch; by default every input is then read to its end."""
    processor = customer.CustomerProcessor()
    for msg in messages:
        processor.apply(msg)
    processor.settle(caught_up, owned)
    processor.end_batch()
    processor.confirmed({})


def restart(monkeypatch: pytest.MonkeyPatch, number: int) -> None:
    """A new owner of partition `number`: clock record and states from the store."""
    owned = {TopicPartition(SETTINGS.topic_checkouts, number)}
    monkeypatch.setattr(customer.app.assignor, "assigned_actives", lambda: owned)
    customer.timers.clear()
    customer.cache.forget()


def stored(customer_id: str) -> Any:
    value = customer.customers_table.data.get(customer_id.encode())
    return None if value is None else decode_state(value)


def forget_everything(store_before: dict[bytes, bytes]) -> None:
    """Drop the states stored since `store_before`, the clocks, indexes and cached states."""
    store = customer.customers_table.data
    for key in [k for k in store if k not in store_before]:
        del store[key]
    customer.timers.clear()
    customer.cache.forget()


def watermark_value(key: bytes, topic: str, partition: int, at: datetime) -> bytes:
    """A replay's watermark for one input partition, signed with `key`."""
    body = {
        "type": "watermark",
        "occurred_at": at.isoformat(),
        "source": "t",
        "signature": signature(key, topic, partition, at, "t"),
    }
    return orjson.dumps(body)
