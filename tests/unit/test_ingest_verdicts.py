"""Every raw message gets exactly one verdict: accepted, rerouted to its partition, or refused."""

from __future__ import annotations

import base64

import orjson
import pytest
from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from hypothesis import given, settings
from hypothesis import strategies as st

from hitrun.schemas.records import CheckoutConfirmed
from hitrun.streams.errors import REASONS
from hitrun.streams.ingest import (
    ORIGIN_HEADER,
    Accepted,
    IngestRules,
    RawMessage,
    Rejected,
    Reroute,
    classify,
)
from hitrun.streams.partitioning import murmur2, partition_for_key
from hitrun.streams.simulate import MALFORMATIONS, TrafficShape, _malformed

RULES = IngestRules(
    accepted_types={
        "shop.checkouts": frozenset({"checkout_confirmed"}),
        "shop.payments": frozenset({"payment_attempted"}),
    },
    reroute_topic="hitrun.reroute",
    partitions=8,
    max_message_bytes=4096,
)


def checkout(customer: str = "cust-1") -> bytes:
    return orjson.dumps(
        {
            "type": "checkout_confirmed",
            "event_id": "e1",
            "customer_id": customer,
            "shop_id": "s1",
            "occurred_at": "2026-03-01T10:00:00+07:00",
            "order_id": "o1",
            "total": {"amount_minor": 1000, "currency": "IDR"},
            "payment_method": "card",
        }
    )


def message(value: bytes | None, key: bytes | None = b"cust-1", **kw: object) -> RawMessage:
    fields: dict[str, object] = {
        "topic": "shop.checkouts",
        "partition": partition_for_key(b"cust-1", 8),
        "offset": 41,
        "timestamp_ms": 1_772_334_000_000,
        "key": key,
        "value": value,
    }
    fields.update(kw)
    return RawMessage(**fields)  # type: ignore[arg-type]


def test_valid_event_in_its_customers_partition_is_accepted() -> None:
    verdict = classify(message(checkout()), RULES)
    assert isinstance(verdict, Accepted)
    assert isinstance(verdict.event, CheckoutConfirmed)
    assert verdict.event.total.amount_minor == 1000


def test_valid_event_in_the_wrong_partition_is_rerouted_to_the_murmur2_partition() -> None:
    home = partition_for_key(b"cust-1", 8)
    wrong = (home + 3) % 8
    verdict = classify(message(checkout(), partition=wrong, offset=7), RULES)
    assert isinstance(verdict, Reroute)
    assert verdict.partition == home
    origin = dict(verdict.headers)[ORIGIN_HEADER]
    assert orjson.loads(origin) == ["shop.checkouts", wrong, 7, 1_772_334_000_000]


def test_rerouted_event_arriving_in_its_partition_is_accepted() -> None:
    home = partition_for_key(b"cust-1", 8)
    origin = (ORIGIN_HEADER, orjson.dumps(["shop.checkouts", 0, 7, None]))
    msg = message(checkout(), topic="hitrun.reroute", partition=home, headers=(origin,))
    assert isinstance(classify(msg, RULES), Accepted)


def test_rerouted_event_still_misplaced_is_dead_lettered_at_its_origin() -> None:
    home = partition_for_key(b"cust-1", 8)
    origin = (ORIGIN_HEADER, orjson.dumps(["shop.checkouts", 5, 7, None]))
    msg = message(checkout(), topic="hitrun.reroute", partition=(home + 1) % 8, headers=(origin,))
    verdict = classify(msg, RULES)
    assert isinstance(verdict, Rejected)
    letter = verdict.dead_letter
    assert letter.reason == "misrouted"
    assert (letter.source.topic, letter.source.partition, letter.source.offset) == (
        "shop.checkouts",
        5,
        7,
    )


@pytest.mark.parametrize("reason", MALFORMATIONS)
def test_each_malformation_is_refused_with_its_own_reason_and_original_bytes(reason: str) -> None:
    import random
    from datetime import UTC, datetime

    sim = _malformed(
        reason, random.Random(3), datetime(2026, 3, 1, tzinfo=UTC), RULES.max_message_bytes
    )
    msg = message(sim.value, key=sim.key, partition=0, offset=99)
    verdict = classify(msg, RULES)
    assert isinstance(verdict, Rejected)
    letter = verdict.dead_letter
    assert letter.reason == reason
    assert letter.detail
    assert base64.b64decode(letter.value_b64 or "") == sim.value
    assert letter.key_b64 == (None if sim.key is None else base64.b64encode(sim.key).decode())
    assert (letter.source.topic, letter.source.partition, letter.source.offset) == (
        "shop.checkouts",
        0,
        99,
    )


def test_tombstone_is_refused_not_crashed_on() -> None:
    verdict = classify(message(None), RULES)
    assert isinstance(verdict, Rejected)
    assert verdict.dead_letter.value_b64 is None


def test_dead_letter_id_is_deterministic_per_source_coordinates() -> None:
    a = classify(message(b"nope", offset=5), RULES)
    b = classify(message(b"nope", offset=5), RULES)
    c = classify(message(b"nope", offset=6), RULES)
    assert isinstance(a, Rejected) and isinstance(b, Rejected) and isinstance(c, Rejected)
    assert a.dead_letter.dead_letter_id == b.dead_letter.dead_letter_id
    assert a.dead_letter.dead_letter_id != c.dead_letter.dead_letter_id


def test_every_reason_code_is_in_the_dead_letter_schema() -> None:
    from hitrun.schemas import load_schema

    enum = load_schema("dead_letter.v1")["properties"]["reason"]["enum"]
    assert set(REASONS) == set(enum)
    assert set(MALFORMATIONS) <= set(REASONS)


# Signed murmur2 hashes from the reference test of Kafka's Java client (UtilsTest).
JAVA_MURMUR2 = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


@pytest.mark.parametrize(("key", "java_hash"), JAVA_MURMUR2.items())
@pytest.mark.parametrize("partitions", [1, 8, 12, 1000])
def test_partition_for_key_matches_the_java_default_partitioner(
    key: bytes, java_hash: int, partitions: int
) -> None:
    assert partition_for_key(key, partitions) == (java_hash & 0x7FFFFFFF) % partitions


def test_shape_default_start_is_timezone_aware() -> None:
    assert TrafficShape().start.tzinfo is not None


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=64))
def test_murmur2_is_kafkas_on_any_bytes(data: bytes) -> None:
    assert murmur2(data) == aiokafka_murmur2(data) & 0xFFFFFFFF
