"""Live mode, restarts one after another: what a partition's clock record says was read and
applied never goes back, so a second restart does not apply an event a second time.

A restarted worker reads its partitions again from the committed offsets, which
lag the clock record it restored. Were the record it writes meanwhile to say
less than the restored one (read up to the record just read again; released
before a time the new owner has not reached yet), a worker killed then would
leave the next owner a record by which events applied long ago are new: applied
again, behind a clock that had passed them, and the deadlines they settle fired.
"""

from __future__ import annotations

from datetime import timedelta

import orjson
import pytest

import hitrun.agents.customer as customer
from hitrun.agents.state import unstamped
from hitrun.streams.clock import ClockRecord, PartitionClock
from hitrun.streams.ingest import RawMessage
from hitrun.streams.partitioning import partition_for_key
from tests.unit.agent_shell import (
    SETTINGS,
    START,
    Sink,
    checkout,
    inquiry,
    payment,
    restart,
    run_batch,
    same_partition_as,
    stored,
)


def persisted(number: int) -> ClockRecord:
    return ClockRecord.decode(customer.customers_table.data[customer.clock_key(number)])


def counted(outcome: str) -> float:
    labels = {"topic": SETTINGS.topic_checkouts, "type": "checkout_confirmed", "outcome": outcome}
    return customer.metrics.value("hitrun_input_events_total", **labels)


def test_reading_again_from_the_committed_offset_does_not_take_back_what_was_read(
    sink: Sink, monkeypatch: pytest.MonkeyPatch
) -> None:
    buyer = "rr-read"
    first, second = checkout(buyer, "o-1", 0), checkout(buyer, "o-2", 5)
    run_batch(first, second)
    number = first.partition
    restart(monkeypatch, number)
    # Killed while reading again, after `first` and before `second`.
    run_batch(first)
    assert persisted(number).read_next[SETTINGS.topic_checkouts] == second.offset + 1
    restart(monkeypatch, number)
    duplicates, processed = counted("duplicate"), counted("processed")
    run_batch(first, second)
    assert counted("duplicate") == duplicates + 2
    assert counted("processed") == processed


def test_a_new_owner_holding_everything_does_not_take_back_what_was_released(
    sink: Sink, monkeypatch: pytest.MonkeyPatch
) -> None:
    buyer = "rr-release"
    first = checkout(buyer, "o-1", 0)
    run_batch(first)
    number = first.partition
    restart(monkeypatch, number)
    # The payments topic has records and none is read yet: the new owner holds a later
    # event of another customer, and is killed before reading on.
    later = checkout(same_partition_as(buyer), "o-n", 10)
    run_batch(later, caught_up=lambda tp: tp.topic != SETTINGS.topic_payments)
    assert customer.metrics.value("hitrun_held_events") == 1
    record = persisted(number)
    assert record.released_before is not None and record.released_before > START
    restart(monkeypatch, number)
    duplicates = counted("duplicate")
    run_batch(first, later)
    assert counted("duplicate") == duplicates + 1
    assert "o-n" in stored(same_partition_as(buyer)).unpaid.open


def test_an_event_read_after_its_time_was_released_is_applied_at_once(
    sink: Sink, monkeypatch: pytest.MonkeyPatch
) -> None:
    buyer = "rr-behind"
    run_batch(checkout(buyer, "o-1", 60))
    number = checkout(buyer, "probe").partition
    # A topic with unread records and none read holds everything back, but not an event
    # older than what the partition released already: it is applied.
    behind = checkout(same_partition_as(buyer), "o-behind", 30)
    run_batch(behind, caught_up=lambda tp: tp.topic != SETTINGS.topic_payments)
    assert customer.metrics.value("hitrun_held_events") == 0
    assert customer.timers.of(number).released_before > START + timedelta(minutes=60)


def test_a_record_saying_everything_read_was_applied_holds_up_to_its_latest_time() -> None:
    latest = START + timedelta(hours=2)
    seen = {SETTINGS.topic_checkouts: START, SETTINGS.topic_payments: latest}
    record = ClockRecord(PartitionClock(), seen, {}, None)
    assert record.applied_before() == latest + timedelta(microseconds=1)
    assert ClockRecord(PartitionClock(), {}, {}, START).applied_before() == START


def test_identity_records_read_again_after_a_restart_are_not_applied_twice(
    sink: Sink, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The identity stage applies a sighting at once, and its state is stored with the
    # partition's clock record: read again, it would announce the link a second time
    # (and an older sighting read again would take back newer strikes it carried).
    key = f"phone:{'cd' * 32}".encode()
    number = partition_for_key(key, SETTINGS.partitions)

    def sighting(who: str, offset: int) -> RawMessage:
        body = {"customer": who, "kind": "phone", "hash": "cd" * 32, "at": START.isoformat()}
        return RawMessage(SETTINGS.identity_topic, number, offset, None, key, orjson.dumps(body))

    seen = [sighting("rr-one", 0), sighting("rr-two", 1)]
    run_batch(*seen)
    reports = [r for r in sink.records if r.topic == SETTINGS.links_topic]
    assert len(reports) == 2  # each of the two hears of the other
    restart(monkeypatch, number)
    sink.records.clear()
    run_batch(*seen)
    assert [r for r in sink.records if r.topic == SETTINGS.links_topic] == []
    labels = {"topic": SETTINGS.identity_topic, "type": "unknown", "outcome": "duplicate"}
    assert customer.metrics.value("hitrun_input_events_total", **labels) >= 2


def torn_batch(sink: Sink, *messages: RawMessage, upto: str) -> None:
    """Apply `messages` as one batch whose worker dies sending its changelog records: the
    broker has them up to and including `upto`'s state, in the order they were sent."""
    processor = customer.CustomerProcessor()
    for msg in messages:
        processor.apply(msg)
    processor.settle(lambda tp: True, frozenset())
    start = len(sink.records)
    processor.end_batch()
    store = customer.customers_table.data
    for record in sink.records[start:]:
        if record.topic != customer.changelog_topic_name:
            continue
        if record.value is None:
            store.pop(record.key, None)
        else:
            store[record.key] = record.value
        if record.key == upto.encode():
            break


def bought_once_then_gone(buyer: str) -> list[RawMessage]:
    """A purchase, and a neighbour's checkout 100 days later: the buyer's retention window
    closes (a single_purchase flag) and the purchase leaves the buyer's dedupe window."""
    neighbour = same_partition_as(buyer)
    assert neighbour > buyer  # its state is sent after the buyer's
    minutes_100_days = 100 * 24 * 60
    return [
        checkout(buyer, "o-1", 0),
        payment(buyer, "o-1", 5),
        checkout(neighbour, "o-n", minutes_100_days),
    ]


def alerts(sink: Sink, kind: str) -> list[dict[str, object]]:
    return [
        orjson.loads(r.value)
        for r in sink.records
        if r.value is not None
        and r.topic != customer.changelog_topic_name
        and orjson.loads(r.value).get("type") == kind
    ]


def test_a_batch_whose_worker_died_sending_its_states_is_applied_again_to_the_others_only(
    sink: Sink, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The worker died with the clock record and the buyer's state at the broker, not the
    # neighbour's. Applied again to the buyer, the purchase (forgotten by the dedupe
    # window, after the flag) would count as the flagged buyer's return.
    buyer = "rr-torn"
    batch = bought_once_then_gone(buyer)
    torn_batch(sink, *batch, upto=buyer)
    assert len(alerts(sink, "single_purchase")) == 1
    before = customer.customers_table.data[buyer.encode()]
    restart(monkeypatch, batch[0].partition)
    run_batch(*batch)
    assert alerts(sink, "customer_returned") == []
    assert unstamped(customer.customers_table.data[buyer.encode()]) == unstamped(before)
    assert "o-n" in stored(same_partition_as(buyer)).unpaid.open


def test_a_second_restart_before_the_first_caught_up_still_knows_the_states_that_arrived(
    sink: Sink, monkeypatch: pytest.MonkeyPatch
) -> None:
    buyer = "rr-torn-twice"
    batch = bought_once_then_gone(buyer)
    number = batch[0].partition
    torn_batch(sink, *batch, upto=buyer)
    restart(monkeypatch, number)
    # Killed again after reading the first record only: the record written then keeps
    # what the first batch did for the buyer.
    run_batch(batch[0], caught_up=lambda tp: False)
    assert persisted(number).tiers
    restart(monkeypatch, number)
    run_batch(*batch)
    assert alerts(sink, "customer_returned") == []
    assert "o-n" in stored(same_partition_as(buyer)).unpaid.open
    # Once every key holds the batch, the tier is no longer carried.
    run_batch(checkout(buyer, "o-2", 100 * 24 * 60 + 10))
    assert persisted(number).tiers == ()


def test_a_clock_record_holds_when_every_state_of_its_batch_arrived() -> None:
    before = ClockRecord(PartitionClock(), {}, {SETTINGS.topic_checkouts: 3}, START)
    record = ClockRecord(
        PartitionClock(START, START),
        {},
        {SETTINGS.topic_checkouts: 7},
        START + timedelta(hours=1),
        batch=4,
        states=2,
        deleted=("gone",),
        previous=before,
    )
    decoded = ClockRecord.decode(record.encode())
    assert decoded == record
    arrived = decoded.restored(frozenset({"a", "b"}), lambda key: False)
    assert arrived.read_next == record.read_next and arrived.tiers == ()
    # One stamped state missing, or a deleted one still stored: the record before holds,
    # and the batch holds for the keys it reached (a deleted one that is gone among them).
    for stamped, stored_keys, reached in (
        (frozenset({"a"}), set(), {"a", "gone"}),
        (frozenset({"a", "b"}), {"gone"}, {"a", "b"}),
    ):
        torn = decoded.restored(stamped, stored_keys.__contains__)
        assert torn.read_next == before.read_next
        assert [(t.batch, t.keys) for t in torn.tiers] == [(4, reached)]
        for key in ("a", "gone", "c"):
            applied = torn.already_applied(SETTINGS.topic_checkouts, 5, START, key)
            assert applied == (key in reached)
        assert ClockRecord.decode(torn.encode()).tiers == torn.tiers


def test_a_batch_cut_short_after_deleting_a_state_is_not_applied_again_to_it(
    sink: Sink, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The batch closes the asker's window (an inquiry_only alert) and deletes its state;
    # the worker died with the tombstone at the broker, not the neighbour's state. The
    # asker's second inquiry, applied again to no state, would open a window of its own
    # and flag the asker a second time.
    asker = "rr-torn-deleted"
    neighbour = same_partition_as(asker)
    first = inquiry(asker, 0)
    number = first.partition
    run_batch(first)
    cut = [inquiry(asker, 6), checkout(neighbour, "o-n", 100 * 24 * 60)]
    torn_batch(sink, *cut, upto=asker)
    assert [a["inquiries"] for a in alerts(sink, "inquiry_only")] == [2]
    assert stored(asker) is None
    assert stored(neighbour) is None  # its state did not arrive
    restart(monkeypatch, number)
    run_batch(first, *cut)
    assert [a["inquiries"] for a in alerts(sink, "inquiry_only")] == [2]
    assert stored(asker) is None
    assert "o-n" in stored(neighbour).unpaid.open


def test_a_batch_cut_short_after_a_confirmed_one_restores_the_confirmed_ones_clock(
    sink: Sink, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The record of a batch carries the one before it; that one's clock must be the
    # clock as that batch left it, not the partition's clock moving on: restored
    # ahead, the events read again would be dead-lettered late.
    buyer = "rr-torn-second"
    neighbour = same_partition_as(buyer)
    first = checkout(buyer, "o-1", 0)
    number = first.partition
    run_batch(first)
    # Cut short with the buyer's state sent, not the neighbour's (sent after it).
    cut = [checkout(neighbour, "o-n", 24 * 60), checkout(buyer, "o-2", 2 * 24 * 60)]
    torn_batch(sink, *cut, upto=buyer)
    restart(monkeypatch, number)
    assert customer.timers.of(number).clock.events == START
    run_batch(first, *cut)
    assert [letter["reason"] for letter in sink.letters()] == []
    neighbours = stored(neighbour).unpaid
    assert "o-n" in neighbours.open or "o-n" in neighbours.expired
