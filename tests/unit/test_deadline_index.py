"""The deadline index returns due customers in time order and skips superseded entries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from hitrun.streams.clock import DeadlineIndex, PartitionClock

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_due_customers_come_out_earliest_first() -> None:
    index = DeadlineIndex()
    index.schedule("b", T0 + timedelta(seconds=2))
    index.schedule("a", T0 + timedelta(seconds=1))
    index.schedule("c", T0 + timedelta(seconds=9))
    assert [c for _, c in index.pop_due(T0 + timedelta(seconds=5))] == ["a", "b"]
    assert index.next_due() == T0 + timedelta(seconds=9)
    assert len(index) == 1


def test_a_rescheduled_customer_fires_only_at_its_latest_deadline() -> None:
    index = DeadlineIndex()
    index.schedule("a", T0 + timedelta(seconds=1))
    index.schedule("a", T0 + timedelta(seconds=7))
    assert list(index.pop_due(T0 + timedelta(seconds=5))) == []
    assert list(index.pop_due(T0 + timedelta(seconds=7))) == [(T0 + timedelta(seconds=7), "a")]


def test_a_customer_with_nothing_pending_leaves_the_index() -> None:
    index = DeadlineIndex()
    index.schedule("a", T0)
    index.schedule("a", None)
    assert list(index.pop_due(T0 + timedelta(days=1))) == []
    assert index.next_due() is None


@given(st.lists(st.tuples(st.sampled_from("abcdef"), st.integers(0, 100)), max_size=60))
def test_pop_due_matches_a_scan_of_the_latest_schedule(entries: list[tuple[str, int]]) -> None:
    index = DeadlineIndex()
    latest: dict[str, datetime] = {}
    for customer, seconds in entries:
        due = T0 + timedelta(seconds=seconds)
        index.schedule(customer, due)
        latest[customer] = due
    now = T0 + timedelta(seconds=50)
    expected = sorted((d, c) for c, d in latest.items() if d <= now)
    assert index.has_due(now) or not expected
    assert list(index.pop_due(now)) == expected
    assert not index.has_due(now)  # every entry left is later (or stale and later)


@given(
    st.lists(
        st.one_of(
            st.tuples(
                st.just("schedule"), st.sampled_from("abcdefg"), st.integers(0, 10 * 24 * 60)
            ),
            st.tuples(st.just("clear"), st.sampled_from("abcdefg"), st.just(0)),
            st.tuples(st.just("pop"), st.just(""), st.integers(0, 24 * 60)),
            st.tuples(st.just("next"), st.just(""), st.just(0)),
        ),
        max_size=80,
    )
)
def test_over_many_hours_the_index_answers_as_a_scan_of_the_latest_schedule(
    operations: list[tuple[str, str, int]],
) -> None:
    # Deadlines days apart wait in the list of their hour until the clock reaches it.
    index = DeadlineIndex()
    latest: dict[str, datetime] = {}
    now = T0
    for operation, customer, minutes in operations:
        if operation == "schedule":
            due = T0 + timedelta(minutes=minutes)
            index.schedule(customer, due)
            latest[customer] = due
        elif operation == "clear":
            index.schedule(customer, None)
            latest.pop(customer, None)
        elif operation == "pop":
            now += timedelta(minutes=minutes)
            expected = sorted((d, c) for c, d in latest.items() if d <= now)
            # The quick question before each event never says no when someone is due.
            assert index.has_due(now) or not expected
            assert list(index.pop_due(now)) == expected
            for _, c in expected:
                del latest[c]
        else:
            assert index.next_due() == min(latest.values(), default=None)
        assert len(index) == len(latest)
        assert all(index.due(c) == d for c, d in latest.items())


def test_the_stream_clock_never_goes_back() -> None:
    clock = PartitionClock()
    assert clock.observe(T0 + timedelta(seconds=5)) == T0 + timedelta(seconds=5)
    assert clock.observe(T0) == T0 + timedelta(seconds=5)


def test_replay_buffer_releases_in_event_time_order_once_every_topic_has_passed() -> None:
    from hitrun.streams.clock import ReorderBuffer

    buffer = ReorderBuffer(("a", "b"))
    t = [T0 + timedelta(seconds=s) for s in range(10)]
    buffer.add("a", 0, t[1], "a1")
    buffer.add("a", 1, t[5], "a5")
    assert list(buffer.release()) == []  # topic b not read yet: a b event at t0 may still come
    buffer.add("b", 0, t[0], "b0")
    assert list(buffer.release()) == []  # b may have more events at t0 still to come
    buffer.add("b", 1, t[9], None)  # a watermark on b
    # a has been read up to t5 only: an a event at t5 may still come.
    assert list(buffer.release()) == [(t[0], "b0"), (t[1], "a1")]
    buffer.add("a", 2, t[6], None)
    assert list(buffer.release()) == [(t[5], "a5")]


@given(st.permutations(list(range(12))), st.integers(1, 3))
def test_replay_buffer_output_does_not_depend_on_the_interleaving(
    order: list[int], spread: int
) -> None:
    from hitrun.streams.clock import ReorderBuffer

    # Two topics, each in time order on its own, with events of the same instant
    # within and across topics (whole days in a transactions file); the
    # interleaving is arbitrary. The output is (time, topic, offset) order.
    a = [(T0 + timedelta(seconds=(2 * i) // spread), f"a{i}") for i in range(6)]
    b = [(T0 + timedelta(seconds=(2 * i + 1) // spread), f"b{i}") for i in range(6)]
    streams = {"a": list(a), "b": list(b)}
    picks = ["a" if n % 2 else "b" for n in order]
    buffer = ReorderBuffer(("a", "b"))
    out: list[object] = []
    offsets = {"a": 0, "b": 0}
    for topic in picks:
        if streams[topic]:
            at, item = streams[topic].pop(0)
            buffer.add(topic, offsets[topic], at, item)
            offsets[topic] += 1
            out.extend(i for _, i in buffer.release())
    for topic in ("a", "b"):
        buffer.add(topic, 99, T0 + timedelta(days=1), None)
    out.extend(i for _, i in buffer.release())
    assert out == [item for _, item in sorted(a + b)]


@given(
    st.lists(st.tuples(st.integers(0, 20), st.booleans()), min_size=1, max_size=30),
    st.integers(0, 30),
)
def test_persisted_read_times_come_only_from_records_a_restart_does_not_read_again(
    records: list[tuple[int, bool]], released: int
) -> None:
    """seen_times() per topic: the latest time read before the topic's lowest held offset."""
    from hitrun.streams.clock import ReorderBuffer

    buffer = ReorderBuffer(("a",))
    for offset, (seconds, is_event) in enumerate(records):
        buffer.add("a", offset, T0 + timedelta(seconds=seconds), "item" if is_event else None)
        buffer.seen_times()  # persisted after every batch: prunes as it goes
    list(buffer.release_before(T0 + timedelta(seconds=released)))
    lowest = buffer.lowest_held().get("a", len(records))
    read_before = [T0 + timedelta(seconds=s) for s, _ in records[:lowest]]
    expected = {"a": max(read_before)} if read_before else {}
    assert buffer.seen_times() == expected


def test_a_record_read_twice_is_held_twice_without_comparing_the_items() -> None:
    # Two reads of one record tie on (time, topic, offset); the items themselves (event
    # records) have no order, so the buffer must never compare them.
    from hitrun.streams.clock import ReorderBuffer

    class Unordered:
        def __lt__(self, other: object) -> bool:
            raise TypeError("items have no order")

    buffer = ReorderBuffer(("a",))
    first, second = Unordered(), Unordered()
    buffer.add("a", 0, T0, first)
    buffer.add("a", 0, T0, second)
    released = [item for _, item in buffer.release_before(None)]
    assert released == [first, second]
