"""Event times are bounded: the contract refuses times outside its range, and in live mode an
event far ahead of wall time is dead-lettered as from_future and never moves the clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest
from aiokafka import TopicPartition

import hitrun.agents.customer as customer
from hitrun.schemas.records import EARLIEST_TIME, LATEST_TIME
from hitrun.streams.codec import decode_input
from hitrun.streams.errors import SchemaViolation
from tests.unit.agent_shell import (
    SETTINGS,
    Sink,
    checkout,
    restart,
    run_batch,
    same_partition_as,
    stored,
)

ACCEPTED = frozenset({"checkout_confirmed"})


def body(occurred_at: str) -> bytes:
    return orjson.dumps(
        {
            "type": "checkout_confirmed",
            "event_id": "e1",
            "customer_id": "c1",
            "shop_id": "s1",
            "occurred_at": occurred_at,
            "order_id": "o1",
            "total": {"amount_minor": 100, "currency": "IDR"},
            "payment_method": "card",
        }
    )


@pytest.mark.parametrize(
    "text",
    [
        "9999-12-31T23:30:00Z",
        "0001-01-01T00:00:00Z",
        "2200-01-01T00:00:00Z",
        "1969-12-31T23:59:59Z",
        "1970-01-01T00:30:00+01:00",  # 1969 in UTC
        "2199-12-31T23:30:00-01:00",  # 2200 in UTC
    ],
)
def test_times_outside_the_supported_range_are_refused_by_the_contract(text: str) -> None:
    with pytest.raises(SchemaViolation):
        decode_input(body(text), b"c1", ACCEPTED, 65536)


@pytest.mark.parametrize(
    "text", ["1970-01-01T00:00:00Z", "2199-12-31T23:59:59.999999Z", "2026-12-02T10:00:00+07:00"]
)
def test_times_inside_the_supported_range_are_accepted(text: str) -> None:
    event = decode_input(body(text), b"c1", ACCEPTED, 65536)
    assert EARLIEST_TIME <= event.occurred_at < LATEST_TIME


def test_a_live_event_far_ahead_of_wall_time_is_dead_lettered_and_moves_no_clock(
    sink: Sink,
) -> None:
    now = datetime.now(UTC)
    minutes_ahead = int((now - datetime(2025, 5, 6, 10, 0, tzinfo=UTC)).total_seconds() // 60)
    # A customer with an open card order (due in an hour) ...
    run_batch(checkout("fut-victim", "o-victim", minutes_ahead))
    # ... and, in the same partition, an event stamped in 2999 territory (within range: 2150).
    hostile = checkout(
        same_partition_as("fut-victim"), "o-hostile", minutes_ahead + 60 * 24 * 365 * 100
    )
    near = checkout(same_partition_as("fut-victim") + "-2", "o-near", minutes_ahead + 2)
    run_batch(hostile, near)
    letters = sink.letters()
    assert [letter["reason"] for letter in letters] == ["from_future"]
    assert letters[0]["source"]["offset"] == hostile.offset
    strikes = [r for r in sink.records if r.topic.endswith("strikes")]
    assert strikes == []  # the victim's order did not expire
    clock = customer.stream_clock("fut-victim")
    assert clock is not None and clock < now + timedelta(minutes=5)


def test_a_restarted_worker_takes_its_partitions_clock_back_from_the_table(
    sink: Sink, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_batch(checkout("clock-a", "o-a", 30))
    before = customer.stream_clock("clock-a")
    assert before is not None
    partition = checkout("clock-a", "x").partition
    owned = {TopicPartition(SETTINGS.topic_checkouts, partition)}
    monkeypatch.setattr(customer.app.assignor, "assigned_actives", lambda: owned)
    assert customer.customers_table.data[customer.clock_key(partition)]
    # A new assignment forgets every clock; the rebuild reads them back from the store.
    customer.timers.clear()
    customer.timers.of(partition)
    assert customer.stream_clock("clock-a") == before
    # And the clock record is no customer: the rebuild does not try to decode it as one.
    assert customer.metrics.value("hitrun_processing_errors_total", stage="rebuild") == 0


def test_records_read_again_after_a_restart_that_were_applied_are_skipped_not_judged_late(
    sink: Sink, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = checkout("again-a", "o-1", 0)
    later = checkout(same_partition_as("again-a"), "o-2", 60 * 24 * 30)  # a month on
    run_batch(first, later)
    partition = first.partition
    restart(monkeypatch, partition)
    sink.records.clear()
    # The worker restarts from an older committed offset and reads both again, then a new one.
    fresh = checkout(same_partition_as("again-a", skip=1), "o-3", 60 * 24 * 30 + 5)
    run_batch(first, later, fresh)
    assert sink.letters() == []  # not late: known to be applied already
    assert (
        customer.metrics.value(
            "hitrun_input_events_total",
            topic=SETTINGS.topic_checkouts,
            type="checkout_confirmed",
            outcome="duplicate",
        )
        >= 2
    )
    assert set(stored(same_partition_as("again-a", skip=1)).unpaid.open) == {"o-3"}
