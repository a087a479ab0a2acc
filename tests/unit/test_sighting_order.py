"""The identity stage applies sightings in event-time order, whichever partition sent them.

With more than one partition, the sightings of one identifier come from the
partitions of the customers who used it, interleaved as the broker delivers
them. The stage holds each until every partition's identity mark says that
partition has sent all its sightings before that time, so which customers an
identifier links before it turns common (more than K of them) is the same in
every run.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import orjson
import pytest
from aiokafka import TopicPartition

import hitrun.agents.customer as customer
from hitrun.agents.linking import InternalRecords
from hitrun.streams import progress
from hitrun.streams.auth import SIGNATURE_HEADER, record_signature
from hitrun.streams.clock import ClockRecord, PartitionClock, Tier
from hitrun.streams.ingest import RawMessage
from hitrun.streams.partitioning import partition_for_key
from tests.unit.agent_shell import SETTINGS, START, Sink, forget_everything, restart

HASH = "5e" * 32
KEY = f"phone:{HASH}".encode()
HOME = partition_for_key(KEY, SETTINGS.partitions)
TOPIC = SETTINGS.identity_topic
K = customer.link_policy.common_after
offsets = iter(range(1, 10**6))


@pytest.fixture
def ordered(sink: Sink, monkeypatch: pytest.MonkeyPatch) -> Iterator[Sink]:
    monkeypatch.setattr(customer, "ORDER_SIGHTINGS", True)
    monkeypatch.setattr(customer, "PROGRESS_TIMEOUT_S", 3600.0)
    yield sink


def sighting(who: str, minutes: int, offset: int | None = None) -> RawMessage:
    body = {
        "customer": who,
        "kind": "phone",
        "hash": HASH,
        "at": (START + timedelta(minutes=minutes)).isoformat(),
    }
    number = next(offsets) if offset is None else offset
    return RawMessage(TOPIC, HOME, number, None, KEY, orjson.dumps(body))


def mark(sent: dict[int, datetime | None], offset: int | None = None) -> RawMessage:
    """An identity mark on the identifier's partition: partition -> sent before."""
    number = next(offsets) if offset is None else offset
    value = progress.encode_mark(sent)
    return RawMessage(TOPIC, HOME, number, None, None, value, list(progress.MARK_HEADERS))


def everyone(minutes: int) -> dict[int, datetime | None]:
    return {n: START + timedelta(minutes=minutes) for n in range(SETTINGS.partitions)}


def marks_counted(topic: str, direction: str) -> float:
    return customer.metrics.value("hitrun_progress_marks_total", topic=topic, direction=direction)


def feed(processor: customer.CustomerProcessor, *messages: RawMessage) -> None:
    """One batch, confirmed: its states and clock record stored."""
    for msg in messages:
        processor.apply(msg)
    processor.end_batch()
    processor.confirmed({})


def reports(sink: Sink) -> list[dict[str, Any]]:
    return [
        orjson.loads(r.value or b"")
        for r in sink.records
        if r.topic == SETTINGS.links_topic and r.value is not None
    ]


def crossing(sink: Sink, arrival: list[int]) -> list[dict[str, Any]]:
    """K + 1 customers use one phone, a minute apart; their sightings arrive in
    `arrival` order, then a mark of every partition releases them."""
    store_before = dict(customer.customers_table.data.items())
    sink.records.clear()
    messages = [sighting(f"so-{n}", n) for n in range(K + 1)]
    feed(customer.CustomerProcessor(), *(messages[n] for n in arrival), mark(everyone(60)))
    found = reports(sink)
    forget_everything(store_before)
    return found


def test_an_identifier_that_turns_common_links_the_same_first_k_whatever_the_arrival(
    ordered: Sink, monkeypatch: pytest.MonkeyPatch
) -> None:
    in_time = list(range(K + 1))
    latest_first = [K, *range(K)]
    first = crossing(ordered, in_time)
    assert first == crossing(ordered, latest_first)
    # The K earliest linked each other; the last made the phone common, and they were
    # told to drop it. The last one linked no one.
    shared = {(r["customer"], r["other"]) for r in first if r["type"] == "shared"}
    assert shared == {(f"so-{a}", f"so-{b}") for a in range(K) for b in range(K) if a != b}
    dropped = [r["customer"] for r in first if r["type"] == "dropped"]
    assert dropped == [f"so-{n}" for n in range(K)]
    # Applied as they arrive, the latest-first order would have linked the last one.
    monkeypatch.setattr(customer, "ORDER_SIGHTINGS", False)
    assert crossing(ordered, latest_first) != first


def test_sightings_wait_for_every_partitions_mark_and_hold_back_the_commit(
    ordered: Sink,
) -> None:
    processor = customer.CustomerProcessor()
    one, two = sighting("so-a", 0), sighting("so-b", 1)
    read_before = marks_counted(TOPIC, "read"), marks_counted(SETTINGS.reroute_topic, "read")
    short_of_one = everyone(60)
    silent = (HOME + 1) % SETTINGS.partitions
    del short_of_one[silent]
    feed(processor, one, two, mark(short_of_one))
    assert reports(ordered) == []
    assert processor.held() == {TopicPartition(TOPIC, HOME): one.offset}
    # The silent partition has sent up to just after the first sighting: it is released.
    feed(processor, mark({silent: START + timedelta(seconds=30)}))
    assert reports(ordered) == []  # alone on the phone: nothing to tell
    assert processor.held() == {TopicPartition(TOPIC, HOME): two.offset}
    feed(processor, mark({silent: START + timedelta(minutes=60)}))
    assert sorted(r["customer"] for r in reports(ordered)) == ["so-a", "so-b"]
    assert processor.held() == {}
    # Counted as the identity topic's marks, not as the reroute topic's.
    read = marks_counted(TOPIC, "read"), marks_counted(SETTINGS.reroute_topic, "read")
    assert (read[0] - read_before[0], read[1] - read_before[1]) == (3, 0)
    # A sighting behind what is released (a late event's) is applied at once.
    ordered.records.clear()
    feed(processor, sighting("so-late", 5))
    assert sorted(r["customer"] for r in reports(ordered)) == ["so-a", "so-b", "so-late", "so-late"]


def test_after_a_restart_released_sightings_are_not_applied_again_and_held_ones_wait(
    ordered: Sink, monkeypatch: pytest.MonkeyPatch
) -> None:
    one, two, three = sighting("so-x", 0), sighting("so-y", 1), sighting("so-z", 90)
    first_mark = mark(everyone(60))
    feed(customer.CustomerProcessor(), one, two, three, first_mark)
    assert sorted(r["customer"] for r in reports(ordered)) == ["so-x", "so-y"]
    # A new owner reads again from the lowest held offset (the loop commits no further).
    restart(monkeypatch, HOME)
    ordered.records.clear()
    processor = customer.CustomerProcessor()
    feed(processor, one, two, three, first_mark)
    assert reports(ordered) == []
    labels = {"topic": TOPIC, "type": "identifier_sighting", "outcome": "duplicate"}
    assert customer.metrics.value("hitrun_input_events_total", **labels) >= 2
    assert processor.held() == {TopicPartition(TOPIC, HOME): three.offset}
    feed(processor, mark(everyone(120)))
    assert sorted(r["customer"] for r in reports(ordered)) == ["so-x", "so-y", "so-z", "so-z"]


def test_a_mark_hitrun_did_not_write_is_dead_lettered_and_releases_nothing(
    ordered: Sink, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = sighting("so-held", 0)
    garbage = RawMessage(TOPIC, HOME, next(offsets), None, None, b"{}", progress.MARK_HEADERS)
    feed(customer.CustomerProcessor(), held, garbage)
    key = b"internal-key-of-the-workers"
    monkeypatch.setattr(customer, "internal", InternalRecords([key]))
    unsigned = mark(everyone(60))
    value = unsigned.value or b""
    signed = RawMessage(
        TOPIC,
        HOME,
        next(offsets),
        None,
        None,
        value,
        [*progress.MARK_HEADERS, (SIGNATURE_HEADER, record_signature(key, TOPIC, b"", value))],
    )
    processor = customer.CustomerProcessor()
    feed(processor, unsigned)
    assert [letter["reason"] for letter in ordered.letters()] == [
        "schema_violation",
        "unauthenticated",
    ]
    assert processor.held() == {TopicPartition(TOPIC, HOME): held.offset}
    feed(processor, signed)
    assert processor.held() == {}


def test_settle_writes_identity_marks_when_a_partition_has_sent_further(
    ordered: Sink, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(customer, "REPLAY", False)
    monkeypatch.setattr(customer, "IDLE_MARKS_S", 3600.0)
    monkeypatch.setattr(customer, "settle_live", lambda *args: False)  # the clock as set here
    partition = customer.timers.of(0)
    partition.clock.observe(START + timedelta(hours=1))
    processor = customer.CustomerProcessor()
    topics = (TOPIC, SETTINGS.links_topic, SETTINGS.reroute_topic)
    written_before = [marks_counted(topic, "written") for topic in topics]

    def settle() -> list[dict[int, datetime | None]]:
        ordered.records.clear()
        # The progress interval has passed, not the idle one.
        processor._staged_marks_at = time.monotonic() - customer.PROGRESS_INTERVAL_S - 0.01
        processor.settle(lambda tp: True, {0})
        marks = [r for r in ordered.records if r.topic == TOPIC]
        assert all(progress.is_mark(r.headers) for r in marks)
        assert not marks or sorted(r.partition for r in marks) == list(range(SETTINGS.partitions))
        return [progress.decode_mark(r.value, SETTINGS.partitions) for r in marks]

    # Holding nothing, it has sent up to its clock, to every identity partition.
    assert settle() == [{0: START + timedelta(hours=1)}] * SETTINGS.partitions
    written = [marks_counted(t, "written") - n for t, n in zip(topics, written_before, strict=True)]
    assert written == [SETTINGS.partitions, SETTINGS.partitions, 0]
    assert settle() == []  # no news, no marks
    partition.clock.observe(START + timedelta(hours=2))
    assert settle()[0] == {0: START + timedelta(hours=2)}
    # Holding events, only up to what it released: the held ones send theirs later.
    partition.released_before = START + timedelta(hours=1, minutes=30)
    partition.buffer.add(SETTINGS.topic_checkouts, 7, START + timedelta(hours=3), object())
    assert settle()[0] == {0: START + timedelta(hours=1, minutes=30)}
    # Holding one of that very instant (a partition read up to it, its bound its time):
    # just before it. The identity stage applies a mark's own instant, and would
    # otherwise apply that instant's sightings in the order they came.
    partition.buffer.add(
        SETTINGS.topic_checkouts, 9, START + timedelta(hours=1, minutes=30), object()
    )
    assert settle()[0] == {0: START + timedelta(hours=1, minutes=30) - timedelta(microseconds=1)}
    # Live, an idle worker says it again every idle interval: it is not taken for silent.
    processor._staged_marks_at = time.monotonic() - 3600.0
    ordered.records.clear()
    processor.settle(lambda tp: True, {0})
    assert len([r for r in ordered.records if r.topic == TOPIC]) == SETTINGS.partitions
    # On the links topic, how far its identity stage has sent reports: what it released.
    partition.sightings.before = START + timedelta(minutes=20)
    links = [r for r in ordered.records if r.topic == SETTINGS.links_topic]
    assert sorted(r.partition for r in links) == list(range(SETTINGS.partitions))
    assert progress.decode_mark(links[0].value, SETTINGS.partitions) == {0: customer.EARLIEST_TIME}
    settle()
    links = [r for r in ordered.records if r.topic == SETTINGS.links_topic]
    assert progress.decode_mark(links[0].value, SETTINGS.partitions) == {
        0: START + timedelta(minutes=20)
    }


def report(body: dict[str, Any], minutes: int) -> RawMessage:
    body = {**body, "at": (START + timedelta(minutes=minutes)).isoformat()}
    who = body["customer"].encode()
    number = partition_for_key(who, SETTINGS.partitions)
    return RawMessage(SETTINGS.links_topic, number, next(offsets), None, who, orjson.dumps(body))


def link_alerts(sink: Sink, arrival: list[int]) -> list[tuple[str, str]]:
    """A and B share a device, then an address (two kinds: a strong link), then the
    device turns common. The three reports come from two identity partitions, in
    `arrival` order, then a mark of every partition releases them."""
    store_before = dict(customer.customers_table.data.items())
    sink.records.clear()
    a, b = "so-link-a", "so-link-b"
    shared = {"type": "shared", "customer": a, "other": b, "other_listed": []}
    at = (START + timedelta(minutes=10)).isoformat()
    reports = [
        report({**shared, "kind": "device", "prefix": "d" * 12, "evidence_at": at}, 10),
        report({**shared, "kind": "shipping_address", "prefix": "a" * 12, "evidence_at": at}, 20),
        report({"type": "dropped", "customer": a, "kind": "device", "prefix": "d" * 12}, 30),
    ]
    home = reports[0].partition
    # A's partition has applied its own input past the reports, as it has by the time
    # the marks let them through (`release_held`).
    customer.timers.of(home).clock.observe(START + timedelta(minutes=60))
    links_mark = RawMessage(
        SETTINGS.links_topic,
        home,
        next(offsets),
        None,
        None,
        progress.encode_mark(everyone(60)),
        list(progress.MARK_HEADERS),
    )
    feed(customer.CustomerProcessor(), *(reports[n] for n in arrival), links_mark)
    found = [
        (alert["type"], alert.get("cause", ""))
        for r in sink.records
        if r.topic != customer.changelog_topic_name and r.value is not None
        for alert in [orjson.loads(r.value)]
        if alert.get("customer_id") == a and "link" in str(alert.get("type"))
    ]
    forget_everything(store_before)
    return found


def test_a_customer_hears_of_its_links_in_event_time_order_whatever_the_arrival(
    ordered: Sink, monkeypatch: pytest.MonkeyPatch
) -> None:
    in_time = link_alerts(ordered, [0, 1, 2])
    assert in_time == [("account_linked", ""), ("account_unlinked", "identifier_common")]
    # The device partition's reports came in before the address partition's.
    assert link_alerts(ordered, [0, 2, 1]) == in_time
    monkeypatch.setattr(customer, "ORDER_SIGHTINGS", False)
    assert link_alerts(ordered, [0, 2, 1]) == []  # as read: never strong at once


def test_the_clock_record_keeps_what_was_released_of_a_topic_released_apart() -> None:
    apart = {TOPIC: START + timedelta(minutes=5)}
    record = ClockRecord(PartitionClock(), {}, {TOPIC: 10}, START, apart=apart)
    again = ClockRecord.decode(record.encode())
    assert again.apart == apart
    assert again.already_applied(TOPIC, 9, START + timedelta(minutes=4))
    assert not again.already_applied(TOPIC, 9, START + timedelta(minutes=5))
    # Written before sightings were held: every sighting read was applied.
    old = orjson.loads(record.encode())
    del old["apart"]
    assert ClockRecord.decode(orjson.dumps(old)).apart == {}
    tier = Tier(3, {TOPIC: 10}, START, frozenset({"k"}), apart)
    assert Tier.decode(tier.encode()) == tier
    assert tier.applied(TOPIC, 9, START + timedelta(minutes=4))
    assert not tier.applied(TOPIC, 9, START + timedelta(minutes=6))
    assert not tier.covered_by({TOPIC: 10}, START, {})
    assert tier.covered_by({TOPIC: 10}, START, {TOPIC: START + timedelta(minutes=5)})


def test_a_mark_releases_the_records_of_its_own_instant(ordered: Sink) -> None:
    # At the end of a replay every clock rests at the final watermark, and a link
    # report can still make a customer announce its identifiers at that instant:
    # a record at the marks' time must not wait for a mark past it, which never comes.
    processor = customer.CustomerProcessor()
    feed(processor, sighting("so-edge-a", 0), sighting("so-edge-b", 0), mark(everyone(0)))
    assert sorted(r["customer"] for r in reports(ordered)) == ["so-edge-a", "so-edge-b"]
    assert processor.held() == {}
    # One of that instant sent after the mark is applied as it arrives.
    ordered.records.clear()
    feed(processor, sighting("so-edge-c", 0))
    assert len(reports(ordered)) == 4 and processor.held() == {}


def test_what_a_report_changes_on_the_blacklists_is_decided_at_its_time_not_the_clocks(
    sink: Sink, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Released after the stage's marks, a report finds its partition's clock wherever
    # that partition's own events took it, which differs from run to run: the
    # policies (a linked strike reversed undoes a blacklisting "now") use its time.
    decided_at: list[datetime] = []

    def follow(customer_id: str, state: Any, effects: Any, now: datetime) -> list[Any]:
        decided_at.append(now)
        return []

    monkeypatch.setattr(customer.link_rules, "follow", follow)
    told = report(
        {"type": "dropped", "customer": "so-late-clock", "kind": "device", "prefix": "d" * 12}, 10
    )
    customer.timers.of(told.partition).clock.observe(START + timedelta(days=3))
    feed(customer.CustomerProcessor(), told)
    assert decided_at == [START + timedelta(minutes=10)]


def test_a_record_from_the_future_is_dead_lettered_not_held(
    ordered: Sink, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Held until every mark reached its time, a record a year ahead (no worker writes
    # one: they send at event or clock times) would hold back its partition's commit.
    monkeypatch.setattr(customer, "REPLAY", False)
    ahead = datetime.now(START.tzinfo) + timedelta(days=365)
    body = {"customer": "so-future", "kind": "phone", "hash": HASH, "at": ahead.isoformat()}
    forged = RawMessage(TOPIC, HOME, next(offsets), None, KEY, orjson.dumps(body))
    processor = customer.CustomerProcessor()
    feed(processor, forged)
    assert [letter["reason"] for letter in ordered.letters()] == ["from_future"]
    assert processor.held() == {}
    # One within HITRUN_MAX_CLOCK_SKEW waits for the marks as any other.
    body["at"] = (datetime.now(START.tzinfo) + customer.MAX_CLOCK_SKEW / 2).isoformat()
    near = RawMessage(TOPIC, HOME, next(offsets), None, KEY, orjson.dumps(body))
    feed(processor, near)
    assert processor.held() == {TopicPartition(TOPIC, HOME): near.offset}
    assert len(ordered.letters()) == 1


def test_a_report_is_held_by_when_its_announcement_was_made_and_a_forged_one_is_refused(
    ordered: Sink, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A pair's report made by a later announcement goes by that announcement's time
    # (`sighted`), not by when the pair began: held until the marks pass it. One whose
    # announcement is a year ahead (no worker writes one) is dead-lettered, not held.
    monkeypatch.setattr(customer, "REPLAY", False)
    at = (START + timedelta(minutes=10)).isoformat()
    pair = {"type": "shared", "customer": "so-sighted", "other": "so-other", "kind": "device"}
    pair |= {"prefix": "d" * 12, "evidence_at": at, "other_listed": []}
    later = report({**pair, "sighted": (START + timedelta(hours=2)).isoformat()}, 10)
    stage = customer.timers.of(later.partition).reports
    stage.before = START + timedelta(hours=1)  # released up to the pair's start and past it
    processor = customer.CustomerProcessor()
    feed(processor, later)
    assert processor.held() == {TopicPartition(SETTINGS.links_topic, later.partition): later.offset}
    ahead = (datetime.now(START.tzinfo) + timedelta(days=365)).isoformat()
    forged = report({**pair, "sighted": ahead}, 10)
    feed(processor, forged)
    assert [letter["reason"] for letter in ordered.letters()] == ["from_future"]
    assert processor.held() == {TopicPartition(SETTINGS.links_topic, later.partition): later.offset}
    garbage = report({**pair, "sighted": "yesterday"}, 10)
    feed(processor, garbage)
    assert [letter["reason"] for letter in ordered.letters()] == ["from_future", "schema_violation"]


def test_a_links_mark_releases_only_the_reports_before_its_instant(ordered: Sink) -> None:
    # An identity stage's mark on the links topic is where it released its sightings
    # up to: a sighting of that very instant is still to be applied there, and its
    # report to come. The reports of that instant wait for a mark past it, so that
    # they are applied together, in order, whichever came first.
    store_before = dict(customer.customers_table.data.items())
    at = (START + timedelta(minutes=10)).isoformat()
    pair = {"type": "shared", "customer": "so-inst-a", "other": "so-inst-b", "kind": "device"}
    first = report({**pair, "prefix": "d" * 12, "evidence_at": at, "other_listed": []}, 10)

    def links_mark(minutes: int) -> RawMessage:
        value = progress.encode_mark(everyone(minutes))
        headers = list(progress.MARK_HEADERS)
        return RawMessage(
            SETTINGS.links_topic, first.partition, next(offsets), None, None, value, headers
        )

    customer.timers.of(first.partition).clock.observe(START + timedelta(minutes=11))
    processor = customer.CustomerProcessor()
    feed(processor, first, links_mark(10))
    assert processor.held() == {TopicPartition(SETTINGS.links_topic, first.partition): first.offset}
    feed(processor, links_mark(11))
    assert processor.held() == {}
    forget_everything(store_before)


def test_a_report_waits_until_its_customers_partition_has_applied_its_input_up_to_then(
    ordered: Sink, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A partition taken back to an older clock record by a restart goes over its input
    # again while the identity stage's marks have passed what it sent before: a report
    # of a later time must not find the customer's state as it was before (say,
    # without its own blacklisting yet). It waits, and goes once the partition's own
    # events and timers have reached its time.
    monkeypatch.setattr(customer, "settle_live", lambda *args: False)  # the clock as set here
    store_before = dict(customer.customers_table.data.items())
    at = (START + timedelta(minutes=10)).isoformat()
    pair = {"type": "shared", "customer": "so-wait-a", "other": "so-wait-b", "kind": "device"}
    told = report({**pair, "prefix": "d" * 12, "evidence_at": at, "other_listed": []}, 10)
    tp = TopicPartition(SETTINGS.links_topic, told.partition)
    partition = customer.timers.of(told.partition)
    partition.clock.observe(START + timedelta(minutes=5))
    mark = RawMessage(
        SETTINGS.links_topic,
        told.partition,
        next(offsets),
        None,
        None,
        progress.encode_mark(everyone(30)),
        list(progress.MARK_HEADERS),
    )
    processor = customer.CustomerProcessor()
    feed(processor, told, mark)
    assert processor.held() == {tp: told.offset}
    assert partition.reports.before == START + timedelta(minutes=5, microseconds=1)
    processor.settle(lambda tp: True, {told.partition})
    assert processor.held() == {tp: told.offset}  # nothing moved
    # The partition's own input reaches the report's time: the batch's settle applies it.
    partition.clock.observe(START + timedelta(minutes=10))
    ordered.records.clear()
    assert processor.settle(lambda tp: True, {told.partition})
    assert processor.held() == {}
    assert partition.reports.before == START + timedelta(minutes=10, microseconds=1)
    state, _ = customer.cache.load("so-wait-a")
    assert state.identity is not None and "so-wait-b" in state.identity.links
    forget_everything(store_before)


def test_a_sightings_last_use_is_checked_and_never_counts_after_the_announcement(
    ordered: Sink,
) -> None:
    # `used` (an announcement made again tells the last use) that is not a time is
    # dead-lettered; one after the announcement (no worker writes it) counts as a use at
    # the announcement, never later.
    def with_used(who: str, used: str) -> RawMessage:
        msg = sighting(who, 0)
        body = {**orjson.loads(msg.value or b""), "used": used}
        return RawMessage(TOPIC, HOME, msg.offset, None, KEY, orjson.dumps(body))

    bad = with_used("so-used-bad", "soon")
    later = with_used("so-used-later", (START + timedelta(days=30)).isoformat())
    processor = customer.CustomerProcessor()
    feed(processor, bad, later, mark(everyone(1)))
    assert [letter["reason"] for letter in ordered.letters()] == ["schema_violation"]
    state = customer.identifiers.load(customer.IDENTITY_KEY_PREFIX + KEY)
    seen = state.customers["so-used-later"]
    assert seen.first == seen.last == START
