"""Fuzzing the whole ingest and apply path: whatever headers, keys, values and timestamps a
producer sends, the agent never raises, and every message is processed or dead-lettered."""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hitrun.agents.customer as customer
from hitrun.schemas.registry import SCHEMA_DIR
from hitrun.streams.ingest import ORIGIN_HEADER, RawMessage
from hitrun.streams.partitioning import partition_for_key
from tests.unit.agent_shell import SETTINGS, install_sink

EXAMPLES = SCHEMA_DIR / "examples"
TEMPLATES: list[tuple[str, dict[str, Any]]] = [
    (topic, json.loads(path.read_text()))
    for topic, kind in (
        (SETTINGS.topic_checkouts, "checkout_confirmed"),
        (SETTINGS.topic_payments, "payment_attempted"),
        (SETTINGS.topic_orders, "order_status_changed"),
        (SETTINGS.topic_inquiries, "inquiry_received"),
    )
    for path in sorted((EXAMPLES / f"{kind}.v1").glob("valid--*.json"))
]
TOPICS = [SETTINGS.topic_checkouts, SETTINGS.topic_payments, SETTINGS.topic_orders]
TOPICS += [SETTINGS.topic_inquiries, SETTINGS.reroute_topic]

# The times that once stopped a partition, and more of their kind.
hostile_times = st.sampled_from(
    [
        "9999-12-31T23:30:00Z",
        "0001-01-01T00:00:00Z",
        "2999-01-01T00:00:00Z",
        "1970-01-01T00:00:00Z",
        "2199-12-31T23:59:59Z",
        "1969-12-31T23:59:59-01:00",
        "2024-02-30T10:00:00Z",
        "2024-06-01T10:00:00",
        "2024-06-01T10:00:00+25:00",
        "-2024-06-01T10:00:00Z",
        "",
    ]
)
plain_times = st.datetimes(
    min_value=datetime(2024, 1, 1),
    max_value=datetime(2024, 3, 1),
).map(lambda d: d.isoformat() + "Z")
numbers = st.one_of(
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, -1, 2**63, -(2**63), 10**30]),
    st.floats(allow_nan=False),
)


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"a": [value]}
    return value


junk = st.one_of(
    numbers,
    st.text(max_size=20),
    st.none(),
    st.booleans(),
    st.integers(1, 300).map(nested),
    st.lists(st.integers(), max_size=3),
)


@st.composite
def values(draw: st.DrawFn, customer_id: str) -> tuple[str, bytes | None]:
    """A topic and an event body for it: a valid example, often mutated, or bytes no JSON
    parser accepts."""
    topic, template = draw(st.sampled_from(TEMPLATES))
    shape = draw(st.integers(0, 19))
    if shape == 0:
        return topic, None
    if shape == 1:
        return topic, draw(st.binary(max_size=64))
    if shape == 2:  # invalid unicode inside otherwise fine JSON
        return topic, b'{"type": "checkout_confirmed", "customer_id": "\xff\xfe"}'
    body = dict(template)
    body["customer_id"] = customer_id
    body["occurred_at"] = draw(plain_times if shape > 8 else hostile_times)
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2]))):
        field = draw(st.sampled_from([*sorted(body), "extra"]))
        body[field] = draw(junk)
    try:
        return topic, orjson.dumps(body)
    except (TypeError, orjson.JSONEncodeError):  # integers beyond 64 bits
        return topic, json.dumps(body).encode()


headers = st.one_of(
    st.just(()),
    st.lists(
        st.tuples(
            st.sampled_from([ORIGIN_HEADER, "x-any", ""]),
            st.one_of(
                st.none(),
                st.binary(max_size=16),
                st.sampled_from(
                    [b"garbage", b"[1,2]", b'["t",0,-1,null]', b'["t",0,5,99]', b"\xff"]
                ),
            ),
        ),
        max_size=2,
    ).map(tuple),
)


@st.composite
def messages(draw: st.DrawFn) -> RawMessage:
    customer_id = draw(st.sampled_from(["c-1", "c-2", "c-3", "c-4", "ü-5"]))
    key_shape = draw(st.integers(0, 9))
    key: bytes | None
    if key_shape == 0:
        key = None
    elif key_shape == 1:
        key = draw(st.binary(max_size=8))
    else:
        key = customer_id.encode()
    home = partition_for_key(key or b"", SETTINGS.partitions)
    wrong = draw(st.integers(0, 9)) == 0
    partition = draw(st.integers(0, SETTINGS.partitions - 1)) if wrong else home
    topic, value = draw(values(customer_id))
    if draw(st.integers(0, 9)) == 0:
        topic = draw(st.sampled_from(TOPICS))
    return RawMessage(
        topic=topic,
        partition=partition,
        offset=draw(st.integers(0, 10**6)),
        timestamp_ms=draw(st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1))),
        key=key,
        value=value,
        headers=draw(headers),
    )


def outcomes() -> Counter[str]:
    counts: Counter[str] = Counter()
    for metric in customer.metrics.registry.collect():
        for sample in metric.samples:
            if sample.name == "hitrun_input_events_total":
                counts[sample.labels["outcome"]] += int(sample.value)
    return counts


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(messages(), min_size=1, max_size=12), st.integers(1, 4))
def test_any_input_is_processed_or_dead_lettered_and_nothing_raises(
    batch: list[RawMessage], batches: int
) -> None:
    with pytest.MonkeyPatch.context() as monkeypatch:
        shell = install_sink(monkeypatch)
        sink = next(shell)
        try:
            before = outcomes()
            processor = customer.CustomerProcessor()
            size = max(1, len(batch) // batches)
            for start in range(0, len(batch), size):
                for msg in batch[start : start + size]:
                    processor.apply(msg)  # must not raise
                processor.settle(lambda tp: True, ())
                processor.end_batch()
                processor.confirmed({})
            counted = outcomes() - before
            letters = sink.letters()
        finally:
            next(shell, None)
    assert sum(counted.values()) == len(batch), counted
    assert counted["dead_lettered"] == len(letters)
    # Every refusal is one of the contract's reasons; none is a bug in hitrun.
    assert "processing_error" not in {letter["reason"] for letter in letters}, letters
