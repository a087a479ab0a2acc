"""Live mode: a partition's clock waits for the other partitions' progress marks, so an event
its producer put in another partition is rerouted and read before a deadline it meets fires."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from aiokafka import TopicPartition

import hitrun.agents.customer as customer
from hitrun.schemas.records import EARLIEST_TIME
from hitrun.streams import progress
from hitrun.streams.clock import ClockRecord, PartitionClock
from hitrun.streams.errors import SchemaViolation
from hitrun.streams.ingest import RawMessage, origin_of
from hitrun.streams.partitioning import partition_for_key
from tests.unit.agent_shell import (
    SETTINGS,
    START,
    Sink,
    checkout,
    offsets,
    payment,
    restart,
    run_batch,
    same_partition_as,
    stored,
)

N = SETTINGS.partitions
T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def at(minutes: int) -> datetime:
    return START + timedelta(minutes=minutes)


# -- the mark and its arithmetic ---------------------------------------------


def test_a_mark_reads_back_as_written() -> None:
    sources = {1: T0, 3: None, 7: T0 + timedelta(microseconds=5)}
    assert progress.decode_mark(progress.encode_mark(sources), 8) == sources


@pytest.mark.parametrize(
    "value",
    [
        b"not json",
        b"[]",
        b'{"type": "watermark", "sources": {}}',
        b'{"type": "source_progress"}',
        b'{"type": "source_progress", "sources": [], "x": 1}',
        b'{"type": "source_progress", "sources": {}, "extra": 1}',
        b'{"type": "source_progress", "sources": {"8": null}}',
        b'{"type": "source_progress", "sources": {"-1": null}}',
        b'{"type": "source_progress", "sources": {"one": null}}',
        b'{"type": "source_progress", "sources": {"1": 5}}',
        b'{"type": "source_progress", "sources": {"1": "2026-01-01T12:00:00"}}',
        b'{"type": "source_progress", "sources": {"1": "2026-02-30T12:00:00+00:00"}}',
        b'{"type": "source_progress", "sources": {"1": "9999-01-01T00:00:00+00:00"}}',
        None,
    ],
)
def test_anything_else_is_a_schema_violation(value: bytes | None) -> None:
    with pytest.raises(SchemaViolation):
        progress.decode_mark(value, 8)


def test_a_partition_is_read_as_far_as_its_slowest_topic_with_unread_records() -> None:
    read = {"a": T0, "b": T0 + timedelta(hours=1), "c": T0 + timedelta(hours=2)}
    wall = T0 + timedelta(days=1)
    behind = {"a": False, "b": True, "c": True}
    assert progress.source_progress("abc", read, lambda t: not behind[t], wall) == read["b"]
    # A topic with unread records and none read: nothing is known.
    assert progress.source_progress("abcd", read, lambda t: t != "d", wall) is None
    # Every topic read to its end: as far as the wall clock, or further if read further.
    assert progress.source_progress("abc", read, lambda t: True, wall) == wall
    assert progress.source_progress("abc", read, lambda t: True, T0) == read["c"]
    assert progress.source_progress("ab", {}, lambda t: True, wall) == wall


def test_a_partition_may_go_as_far_as_the_least_progress_of_the_others() -> None:
    later = T0 + timedelta(hours=1)
    assert progress.bound({0: later, 1: T0, 2: later}, 3, 4) == T0
    # Its own progress does not count.
    assert progress.bound({0: later, 1: later, 2: later, 3: T0}, 3, 4) == later
    assert progress.bound({0: later, 2: later}, 3, 4) == EARLIEST_TIME  # 1 unknown
    assert progress.bound({0: later, 1: None, 2: later}, 3, 4) == EARLIEST_TIME
    assert progress.bound({}, 0, 1) is None  # no other partition


# -- the agent ----------------------------------------------------------------


@pytest.fixture
def aligned(sink: Sink, monkeypatch: pytest.MonkeyPatch) -> Iterator[Sink]:
    monkeypatch.setattr(customer, "ALIGN_SOURCES", True)
    yield sink


def home(customer_id: str) -> int:
    return partition_for_key(customer_id.encode(), N)


def mark(partition: int, moment: datetime | None, **only: datetime | None) -> RawMessage:
    """Progress marks of every other partition at `moment` (`only`: p<n>=... overrides)."""
    sources = {q: moment for q in range(N) if q != partition}
    sources.update({int(name[1:]): value for name, value in only.items()})
    return RawMessage(
        SETTINGS.reroute_topic,
        partition,
        next(offsets),
        None,
        None,
        progress.encode_mark(sources),
        progress.MARK_HEADERS,
    )


def behind(topic: str, partition: int) -> Callable[[TopicPartition], bool]:
    """`caught_up` after a batch that leaves unread records in `topic`'s `partition` only."""
    return lambda tp: not (tp.topic == topic and tp.partition == partition)


def misplaced(msg: RawMessage) -> RawMessage:
    """`msg` as a producer with another partitioner wrote it: in the next partition."""
    return RawMessage(
        msg.topic, (msg.partition + 1) % N, msg.offset, None, msg.key, msg.value, msg.headers
    )


def rerouted(sink: Sink) -> list[RawMessage]:
    """The events the agent rerouted, as its customer's partition reads them."""
    return [
        RawMessage(r.topic, r.partition or 0, next(offsets), None, r.key, r.value, tuple(r.headers))
        for r in sink.records
        if r.topic == SETTINGS.reroute_topic and r.key is not None
    ]


def strikes(sink: Sink) -> list[str]:
    return [
        orjson.loads(r.value)["order_id"]
        for r in sink.records
        if r.topic == SETTINGS.topic_strikes and r.value is not None
    ]


def written_marks(sink: Sink) -> dict[int, dict[int, datetime | None]]:
    return {
        r.partition or 0: progress.decode_mark(r.value, N)
        for r in sink.records
        if r.topic == SETTINGS.reroute_topic and progress.is_mark(r.headers)
    }


def test_a_payment_misplaced_in_another_partition_is_applied_before_its_deadline_fires(
    aligned: Sink,
) -> None:
    buyer = "pm-buyer"
    p = home(buyer)
    # The buyer's partition reads the checkout (card: due at 60) and a neighbour's
    # event at 180; the payment at 30 sits in partition p+1, not read yet.
    run_batch(checkout(buyer, "o-paid", 0), checkout(same_partition_as(buyer), "o-n", 180))
    assert customer.metrics.value("hitrun_held_events") == 2
    # Partition p+1 is read: the payment is rerouted, with the mark that follows it.
    run_batch(misplaced(payment(buyer, "o-paid", 30)))
    assert strikes(aligned) == []
    run_batch(*rerouted(aligned), mark(p, at(200)))
    assert customer.metrics.value("hitrun_held_events") == 0
    assert "o-paid" not in strikes(aligned)
    # A mark bounds the clock; it is no event of this partition's and does not move it.
    assert customer.stream_clock(buyer) == at(180)
    assert aligned.letters() == []


def test_without_the_marks_the_same_payment_comes_too_late_and_the_strike_stands(
    sink: Sink,
) -> None:
    buyer = "pm-late"
    run_batch(checkout(buyer, "o-paid", 0), checkout(same_partition_as(buyer), "o-n", 180))
    run_batch(misplaced(payment(buyer, "o-paid", 30)))
    assert strikes(sink) == ["o-paid"]
    run_batch(*rerouted(sink))
    assert strikes(sink) == ["o-paid"]
    assert [letter["reason"] for letter in sink.letters()] == ["late_event"]


def test_the_clock_goes_as_far_as_the_slowest_partition_and_no_further(aligned: Sink) -> None:
    buyer = "pm-slow"
    p = home(buyer)
    slow = (p + 3) % N
    run_batch(
        checkout(buyer, "o-1", 0),
        checkout(same_partition_as(buyer), "o-2", 90),
        mark(p, at(200), **{f"p{slow}": at(45)}),
    )
    # The event at 0 applied, 90 held; everything read, the clock goes as far as the
    # slowest partition's mark lets it (no further than what was read).
    assert customer.stream_clock(buyer) == at(45)
    assert customer.metrics.value("hitrun_held_events") == 1
    run_batch(mark(p, at(200)))  # the slow partition's next mark
    assert customer.stream_clock(buyer) == at(90)
    assert "o-1" in strikes(aligned)


def tick(partition: int, moment: datetime) -> None:
    customer.on_tick(partition, int(moment.timestamp() * 1000))


def test_a_tick_held_back_by_the_marks_takes_the_rest_of_its_step_as_they_move(
    aligned: Sink,
) -> None:
    buyer = "pm-tick"
    p = home(buyer)
    slow = (p + 3) % N
    run_batch(checkout(buyer, "o-1", 0), mark(p, at(200), **{f"p{slow}": at(45)}))
    assert customer.stream_clock(buyer) == at(0)
    # A tick does not pass the slowest partition's mark.
    tick(p, at(500))
    assert customer.stream_clock(buyer) == at(45)
    # Its next marks move the clock on towards the tick's wall time, without a tick:
    # the card deadline (60) fires as soon as they pass it, not a tick interval later.
    run_batch(mark(p, at(200), **{f"p{slow}": at(50)}))
    assert customer.stream_clock(buyer) == at(50)
    assert strikes(aligned) == []
    run_batch(mark(p, at(200), **{f"p{slow}": at(120)}))
    assert customer.stream_clock(buyer) == at(120)
    assert strikes(aligned) == ["o-1"]
    # No further than the tick's wall time, however far the marks go.
    run_batch(mark(p, at(900)))
    assert customer.stream_clock(buyer) == at(500)
    run_batch(mark(p, at(1000)))
    assert customer.stream_clock(buyer) == at(500)


def test_a_held_back_tick_waits_while_its_partition_has_unread_records(aligned: Sink) -> None:
    buyer = "pm-tick-behind"
    p = home(buyer)
    run_batch(checkout(buyer, "o-1", 0), mark(p, at(45)))
    tick(p, at(500))
    assert customer.stream_clock(buyer) == at(45)
    # Records came after the tick: the payment that meets the deadline may be among them.
    run_batch(mark(p, at(900)), caught_up=behind(SETTINGS.topic_payments, p))
    assert customer.stream_clock(buyer) == at(45)
    assert strikes(aligned) == []
    run_batch(mark(p, at(900)))
    assert customer.stream_clock(buyer) == at(500)
    assert strikes(aligned) == ["o-1"]


def test_an_unknown_partition_holds_everything(aligned: Sink) -> None:
    buyer = "pm-unknown"
    p = home(buyer)
    run_batch(checkout(buyer, "o-1", 0), mark(p, at(200), **{f"p{(p + 1) % N}": None}))
    assert customer.metrics.value("hitrun_held_events") == 1
    assert customer.stream_clock(buyer) is None


def test_each_reroute_partition_gets_the_progress_of_every_owned_partition_but_its_own(
    aligned: Sink,
) -> None:
    buyer = "pm-writer"
    p = home(buyer)
    q = (p + 1) % N
    wall = datetime.now(UTC)
    # Partition q's payments still have unread records; the misplaced payment read
    # there (at 30) is how far q is known to be read. Partition p is read to its end.
    run_batch(
        checkout(buyer, "o-1", 0),
        misplaced(payment(buyer, "o-1", 30)),
        caught_up=behind(SETTINGS.topic_payments, q),
        owned={p, q},
    )
    marks = written_marks(aligned)
    assert set(marks) == set(range(N))
    assert marks[p] == {q: at(30)}
    assert marks[q][p] is not None and marks[q][p] >= wall  # read to its end: wall time
    assert marks[q].keys() == {p}
    for target in set(range(N)) - {p, q}:
        assert marks[target] == {p: marks[q][p], q: at(30)}
    # Each mark follows the reroute it vouches for.
    reroute = [r for r in aligned.records if r.topic == SETTINGS.reroute_topic]
    assert reroute[0].key == buyer.encode() and reroute[0].partition == p
    written = {"topic": SETTINGS.reroute_topic, "direction": "written"}
    assert customer.metrics.value("hitrun_progress_marks_total", **written) >= N


def test_an_event_stamped_far_ahead_does_not_count_as_progress(aligned: Sink) -> None:
    buyer = "pm-future"
    p, q = home(buyer), (home(buyer) + 1) % N
    future = payment(buyer, "o-f", 0)
    body: dict[str, Any] = orjson.loads(future.value or b"")
    body["occurred_at"] = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    hostile = RawMessage(
        future.topic, q, future.offset, None, future.key, orjson.dumps(body), future.headers
    )
    run_batch(hostile, caught_up=lambda tp: tp.partition != q, owned={q})
    assert written_marks(aligned)[p] == {q: None}


def test_a_malformed_mark_is_dead_lettered_and_changes_nothing(aligned: Sink) -> None:
    buyer = "pm-bad"
    p = home(buyer)
    bad = mark(p, at(500))
    run_batch(
        checkout(buyer, "o-1", 0),
        RawMessage(bad.topic, p, bad.offset, None, None, b'{"type": "x"}', bad.headers),
    )
    assert [letter["reason"] for letter in aligned.letters()] == ["schema_violation"]
    assert customer.metrics.value("hitrun_held_events") == 1


def test_marks_at_wall_time_do_not_make_older_events_late(aligned: Sink) -> None:
    buyer = "pm-history"
    p = home(buyer)
    now = datetime.now(UTC)
    run_batch(checkout(buyer, "o-1", 0), mark(p, now))
    run_batch(checkout(same_partition_as(buyer), "o-2", 10), mark(p, now))
    assert aligned.letters() == []
    assert customer.metrics.value("hitrun_held_events") == 0
    assert customer.stream_clock(buyer) == at(10)


def test_marks_follow_reading_and_an_idle_worker_writes_them_once_a_tick(
    aligned: Sink, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(customer, "PROGRESS_INTERVAL_S", 0.0)
    monkeypatch.setattr(customer, "IDLE_MARKS_S", 3600.0)
    processor = customer.CustomerProcessor()

    def marks_after(*messages: RawMessage) -> int:
        before = len(written_marks_list(aligned))
        for msg in messages:
            processor.apply(msg)
        processor.settle(lambda tp: True, {0, 1})
        return len(written_marks_list(aligned)) - before

    assert marks_after() == N  # the first settle: one mark per reroute partition
    assert marks_after() == 0  # idle: not before the idle interval
    assert marks_after(checkout("pm-cadence", "o-1", 0)) == N  # input read: marks follow
    # A mark read from the reroute topic is not input: the worker stays idle.
    assert marks_after(mark(home("pm-cadence"), at(5))) == 0
    monkeypatch.setattr(customer, "IDLE_MARKS_S", 0.0)
    assert marks_after() == N


def written_marks_list(sink: Sink) -> list[Any]:
    return [r for r in sink.records if r.topic == SETTINGS.reroute_topic and r.key is None]


def test_a_misplaced_event_read_again_after_a_restart_is_not_rerouted_twice(sink: Sink) -> None:
    buyer = "pm-again"
    q = (home(buyer) + 1) % N
    first, second = misplaced(payment(buyer, "o-1", 0)), misplaced(payment(buyer, "o-2", 5))
    # The clock record the partition was restored from: read up to `second`, not past it.
    timers = customer.timers.of(q)
    timers.restored = ClockRecord(PartitionClock(), {}, {SETTINGS.topic_payments: second.offset})
    labels = {"topic": SETTINGS.topic_payments, "type": "unknown", "outcome": "duplicate"}
    before = customer.metrics.value("hitrun_input_events_total", **labels)
    run_batch(first, second)
    (copy,) = rerouted(sink)
    assert copy.value == second.value
    assert customer.metrics.value("hitrun_input_events_total", **labels) == before + 1


def again(copy: RawMessage) -> RawMessage:
    """The same copy, written to the reroute topic a second time."""
    return RawMessage(
        copy.topic, copy.partition, next(offsets), None, copy.key, copy.value, copy.headers
    )


def test_a_second_copy_of_a_rerouted_event_is_a_duplicate_not_a_late_event(sink: Sink) -> None:
    buyer = "pm-copies"
    run_batch(checkout(buyer, "o-1", 0), checkout(buyer, "o-2", 1))
    run_batch(misplaced(payment(buyer, "o-1", 10)), misplaced(payment(buyer, "o-2", 11)))
    first, second = rerouted(sink)
    run_batch(first, second, checkout(same_partition_as(buyer), "o-n", 300))
    labels = {
        "topic": SETTINGS.reroute_topic,
        "type": "payment_attempted",
        "outcome": "duplicate",
    }
    before = customer.metrics.value("hitrun_input_events_total", **labels)
    # The worker of the wrong partition crashed after delivering the first copy and
    # reroutes it again: hours behind the clock now, and no late event.
    run_batch(again(first))
    assert customer.metrics.value("hitrun_input_events_total", **labels) == before + 1
    assert sink.letters() == []


def test_after_a_restart_a_held_copy_read_again_is_applied(sink: Sink) -> None:
    buyer = "pm-held"
    p = home(buyer)
    run_batch(checkout(buyer, "o-1", 0))
    run_batch(misplaced(payment(buyer, "o-1", 10)))
    (copy,) = rerouted(sink)
    # Read once (held when the partition stopped), recorded in the clock record...
    timers = customer.timers.of(p)
    timers.origins[(SETTINGS.topic_payments, (p + 1) % N)] = copy_origin(copy) + 1
    timers.restored = ClockRecord(
        PartitionClock(), {}, {SETTINGS.reroute_topic: copy.offset + 1}, START, dict(timers.origins)
    )
    # ...and read again from the committed offset: applied, the order paid.
    run_batch(copy)
    assert "o-1" not in stored(buyer).unpaid.open


def copy_origin(copy: RawMessage) -> int:
    return origin_of(copy).offset


def test_the_clock_record_keeps_origins_and_marks_and_reads_records_without_them() -> None:
    record = ClockRecord(
        PartitionClock(), {}, {}, None, {("shop.payments", 3): 17}, {1: T0, 2: None}
    )
    decoded = ClockRecord.decode(record.encode())
    assert decoded.origins == {("shop.payments", 3): 17}
    assert decoded.sources == {1: T0, 2: None}
    older = orjson.loads(record.encode())
    del older["origins"], older["sources"]
    assert ClockRecord.decode(orjson.dumps(older)).origins == {}
    assert ClockRecord.decode(orjson.dumps(older)).sources == {}


def test_no_mark_takes_back_progress_and_none_runs_ahead_of_the_wall_clock(
    aligned: Sink,
) -> None:
    buyer = "pm-max"
    p = home(buyer)
    q = (p + 1) % N
    # A new owner of q starts further back than the old one had read: q stays at 200.
    run_batch(mark(p, at(200)), mark(p, at(200), **{f"p{q}": at(100)}))
    assert customer.timers.of(p).bound(p) == at(200)
    run_batch(mark(p, at(200), **{f"p{q}": None}))
    assert customer.timers.of(p).bound(p) == at(200)
    # A mark from 2199 is believed up to the wall clock and its allowed skew.
    far = datetime(2199, 1, 1, tzinfo=UTC)
    run_batch(mark(p, far))
    limit = customer.timers.of(p).bound(p)
    assert limit is not None
    assert limit <= datetime.now(UTC) + customer.MAX_CLOCK_SKEW


def test_after_a_restart_the_restored_marks_wait_until_the_reroute_topic_is_read_as_far(
    aligned: Sink, monkeypatch: pytest.MonkeyPatch
) -> None:
    buyer = "pm-restored"
    p = home(buyer)
    # Partition p+1 reroutes a neighbour's checkout (at 190), then the buyer's payment
    # (at 30): in p's reroute topic the payment comes after a later event.
    run_batch(
        misplaced(checkout(same_partition_as(buyer), "o-n", 190)),
        misplaced(payment(buyer, "o-paid", 30)),
    )
    neighbour, paid = rerouted(aligned)
    vouching = mark(p, at(200))
    own = checkout(buyer, "o-paid", 0)  # by card: due at 60
    # p reads them all and the mark, and holds them (its payments topic is behind);
    # its clock record says: reroute topic read past the mark, every other at 200.
    run_batch(own, neighbour, paid, vouching, caught_up=behind(SETTINGS.topic_payments, p))
    assert customer.metrics.value("hitrun_held_events") == 3
    restart(monkeypatch, p)
    # Read again from the committed offsets, the first batch brings the reroute topic
    # only up to the neighbour's checkout: the restored marks do not count yet.
    reroute_behind = behind(SETTINGS.reroute_topic, p)
    run_batch(own, neighbour, caught_up=reroute_behind)
    assert customer.timers.of(p).bound(p) == EARLIEST_TIME
    assert customer.stream_clock(buyer) is None
    run_batch(paid, caught_up=reroute_behind)
    assert customer.timers.of(p).bound(p) == EARLIEST_TIME
    # Then the mark, read again (it counts as it did): the payment came before the deadline.
    run_batch(vouching)
    assert customer.stream_clock(buyer) == at(190)
    # (Other tests' customers left in the store may have deadlines of their own.)
    assert "o-paid" not in strikes(aligned)
    assert [letter for letter in aligned.letters() if letter["reason"] == "late_event"] == []


def test_the_restored_marks_count_once_the_reroute_topic_is_read_to_its_end(
    aligned: Sink, monkeypatch: pytest.MonkeyPatch
) -> None:
    buyer = "pm-end"
    p = home(buyer)
    run_batch(mark(p, at(200)), checkout(buyer, "o-1", 0))
    restart(monkeypatch, p)
    # Nothing of the reroute topic is read again (its committed offset is its end).
    run_batch(checkout(same_partition_as(buyer), "o-2", 100))
    assert customer.timers.of(p).bound(p) == at(200)
    assert customer.stream_clock(buyer) == at(100)


def test_a_partition_whose_marks_stop_while_others_arrive_is_waited_for_no_longer(
    aligned: Sink, monkeypatch: pytest.MonkeyPatch
) -> None:
    buyer = "pm-silent"
    p = home(buyer)
    q = (p + 1) % N
    silent = {f"p{q}": None}
    run_batch(
        checkout(buyer, "o-1", 0),
        checkout(same_partition_as(buyer), "o-2", 180),
        mark(p, at(200), **silent),
    )
    assert customer.metrics.value("hitrun_held_events") == 2
    before = customer.metrics.value("hitrun_progress_waits_abandoned_total")
    # Partition q's worker died, or its new owner is still recovering: the others'
    # marks keep coming, q's do not. Past the timeout (0 here) q is not waited for.
    monkeypatch.setattr(customer, "PROGRESS_TIMEOUT_S", 0.0)
    run_batch(mark(p, at(300), **silent))
    assert customer.metrics.value("hitrun_progress_waits_abandoned_total") == before + 1
    assert customer.metrics.value("hitrun_held_events") == 0
    assert "o-1" in strikes(aligned)
    # Once q's marks move again, it is waited for again.
    run_batch(mark(p, at(300), **{f"p{q}": at(250)}))
    assert customer.timers.of(p).bound(p) == at(250)


def test_a_partition_read_slowly_is_still_waited_for(
    aligned: Sink, monkeypatch: pytest.MonkeyPatch
) -> None:
    # q's owner is busy with other partitions' backlog: q's progress stands still, but
    # its marks keep giving it. An event misplaced in q may still come: no giving up.
    buyer = "pm-slow"
    p = home(buyer)
    q = (p + 1) % N
    slow = {f"p{q}": at(30)}
    run_batch(checkout(buyer, "o-1", 0), checkout(same_partition_as(buyer), "o-2", 180))
    monkeypatch.setattr(customer, "PROGRESS_TIMEOUT_S", 0.0)
    for _ in range(3):
        run_batch(mark(p, at(300), **slow))
    assert customer.timers.of(p).waived == set()
    assert customer.timers.of(p).bound(p) == at(30)
    assert "o-1" not in strikes(aligned)


def test_without_any_mark_arriving_no_partition_is_given_up(
    aligned: Sink, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The broker away: nothing arrives, so nothing tells a silent partition from an
    # unreachable one, and the held events wait.
    buyer = "pm-outage"
    monkeypatch.setattr(customer, "PROGRESS_TIMEOUT_S", 0.0)
    run_batch(checkout(buyer, "o-1", 0))
    run_batch()
    assert customer.metrics.value("hitrun_held_events") == 1
    assert customer.timers.of(home(buyer)).waived == set()
