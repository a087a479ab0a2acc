"""Writer tokens (streams/fencing.py): a removed worker's state records that land after its
successor's are not read; nothing a legitimate writer wrote is ever skipped."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import TopicPartition

import hitrun.agents.customer as customer
from hitrun.agents.state import decode_state
from hitrun.streams.fencing import HEADER, Rise, WriterTokens, token_of
from hitrun.streams.partitioning import partition_for_key
from tests.unit.agent_shell import Sink, checkout, install_sink, run_batch


def read(tokens: WriterTokens, partition: int, records: list[tuple[int, int | None]]) -> list[int]:
    """The offsets of the (offset, token) records read in that order that are admitted."""
    return [offset for offset, token in records if tokens.admit(partition, offset, token)]


def test_a_record_below_a_token_read_before_it_is_skipped_and_the_rest_are_read() -> None:
    tokens = WriterTokens()
    # Writer 3, then its successor 5; writer 3's late records among 5's; then 7.
    records = [(0, 3), (1, 3), (2, 5), (3, 3), (4, 5), (5, 3), (6, 7), (7, 5), (8, 7)]
    assert read(tokens, 0, records) == [0, 1, 2, 4, 6, 8]
    # Another partition has its own order.
    assert read(tokens, 1, [(0, 7), (1, 3)]) == [0]
    assert read(tokens, 2, [(0, 3), (1, 7)]) == [0, 1]


def test_records_without_a_token_are_read_and_move_nothing() -> None:
    tokens = WriterTokens()
    assert read(tokens, 0, [(0, None), (1, 4), (2, None), (3, 3), (4, None)]) == [0, 1, 2, 4]


def test_reading_again_from_an_earlier_offset_forgets_what_was_read_from_there() -> None:
    tokens = WriterTokens()
    assert read(tokens, 0, [(0, 2), (1, 2), (2, 6), (3, 2)]) == [0, 1, 2]
    # A standby sent back to offset 1: the token 6 at offset 2 is read again, and the
    # stale record after it is skipped again.
    assert read(tokens, 0, [(1, 2), (2, 6), (3, 2)]) == [1, 2]
    # Sent back to before the rise: what is read from there decides. Had the record at
    # offset 2 been compacted away, the one at 3 follows writer 2's own records.
    assert read(tokens, 0, [(1, 2), (3, 2)]) == [1, 3]


def test_a_token_is_the_generation_or_the_highest_token_seen_and_fixed_within_it() -> None:
    tokens = WriterTokens()
    assert tokens.token(0, 4) == 4
    tokens.wrote(0, 10)
    assert tokens.token(0, 4) == 4
    assert tokens.token(0, 9) == 9
    # The group started over (its metadata expired): generation 1, but the changelog
    # holds tokens up to 9. The writer takes 9: its records are read after the ones
    # before them (a removed worker's are not told apart until the generations pass 9).
    fresh = WriterTokens()
    assert read(fresh, 0, [(0, 9), (1, 9)]) == [0, 1]
    assert fresh.token(0, 1) == 9
    fresh.wrote(0, 5)
    assert fresh.token(0, 2) == 9, "its own records do not raise it"
    assert fresh.token(0, 12) == 12


def test_a_standby_writing_a_state_of_a_partition_it_does_not_own_does_not_outrank_the_owner() -> (
    None
):
    owner, standby, reader = WriterTokens(), WriterTokens(), WriterTokens()
    assert owner.token(0, 6) == 6
    assert read(standby, 0, [(0, 6), (1, 6)]) == [0, 1]
    # Both in generation 6: the standby's state record of the owner's partition and the
    # owner's records after it are all read.
    stray = standby.token(0, 6)
    assert read(reader, 0, [(0, 6), (1, 6), (2, stray), (3, 6)]) == [0, 1, 2, 3]


def test_a_successor_ranks_above_the_worker_it_replaced_whether_or_not_it_read_it() -> None:
    stalled, successor, reader = WriterTokens(), WriterTokens(), WriterTokens()
    assert read(stalled, 0, [(0, 2), (1, 2)]) == [0, 1]
    assert read(successor, 0, [(0, 2), (1, 2)]) == [0, 1]
    old = stalled.token(0, 3)
    new = successor.token(0, 4)  # the generation the stalled worker was removed in
    assert new > old
    # The successor writes at 2-3, the stalled worker's records land at 4, the successor
    # goes on at 5: a recovery reads the successor's and skips the stalled worker's.
    records = [(0, 2), (1, 2), (2, new), (3, new), (4, old), (5, new)]
    assert read(reader, 0, records) == [0, 1, 2, 3, 5]


def test_a_store_keeps_the_last_rise_and_a_restart_starts_from_it() -> None:
    kept: dict[int, Rise] = {}
    tokens = WriterTokens(stored=kept.get, store=kept.__setitem__)
    read(tokens, 3, [(0, 2), (1, 2), (2, 5)])
    assert tokens.token(3, 6) == 6
    tokens.wrote(3, 9)
    assert kept == {3: (9, 6)}
    # A restart reading the changelog's tail from offset 10 on.
    restarted = WriterTokens(stored=kept.get, store=kept.__setitem__)
    assert read(restarted, 3, [(10, 5), (11, 6), (12, 7)]) == [11, 12]
    assert restarted.token(3, 1) == 7


def test_the_token_header_is_read_back() -> None:
    tokens = WriterTokens()
    headers = tokens.headers(0, 12)
    assert headers == ((HEADER, b"12"),)
    assert token_of(headers) == 12
    assert token_of([("other", b"1"), (HEADER, b"7")]) == 7
    assert token_of(None) is None
    assert token_of([(HEADER, b"not a number")]) is None


def event(partition: int, offset: int, key: bytes, value: bytes | None, token: int | None) -> Any:
    headers = [] if token is None else [(HEADER, str(token).encode())]
    tp = TopicPartition(customer.changelog_topic_name, partition)
    message = SimpleNamespace(
        partition=partition, offset=offset, headers=headers, key=key, value=value, tp=tp
    )
    return SimpleNamespace(message=message, key=key, value=value)


@pytest.fixture
def sink(monkeypatch: pytest.MonkeyPatch) -> Iterator[Sink]:
    yield from install_sink(monkeypatch)


def test_the_table_applies_the_changelog_without_a_removed_workers_late_records(
    sink: Sink, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(customer, "writers", WriterTokens())
    skipped = customer.metrics.stale_states_skipped._value.get()
    run_batch(checkout("c-fenced", "o-first"))
    first = customer.customers_table.data[b"c-fenced"]
    run_batch(checkout("c-fenced", "o-second"))
    second = customer.customers_table.data[b"c-fenced"]
    number = partition_for_key(b"c-fenced", customer.settings.partitions)
    customer.customers_table.apply_changelog_batch(
        [
            event(number, 900, b"c-fenced", first, 5),
            event(number, 901, b"c-fenced", second, 6),
            event(number, 902, b"c-fenced", first, 5),  # the removed worker's, late
            event(number, 903, b"c-other", b"x", 6),
            event(number, 904, b"c-other", None, 5),  # and a late tombstone
        ]
    )
    assert customer.customers_table.data[b"c-fenced"] == second
    assert customer.customers_table.data[b"c-other"] == b"x", "the late tombstone was skipped"
    assert customer.metrics.stale_states_skipped._value.get() == skipped + 2
    orders = decode_state(customer.customers_table.data[b"c-fenced"], "c-fenced").unpaid.open
    assert set(orders) == {"o-first", "o-second"}


def test_every_state_record_names_its_writers_token_and_its_rise_is_kept(
    sink: Sink, monkeypatch: pytest.MonkeyPatch
) -> None:
    tokens = WriterTokens()
    monkeypatch.setattr(customer, "writers", tokens)
    monkeypatch.setattr(customer.app, "consumer_generation_id", 17)
    processor = customer.CustomerProcessor()
    processor.apply(checkout("c-token", "o-1"))
    processor.settle(lambda tp: True, frozenset())
    processor.end_batch()
    number = partition_for_key(b"c-token", customer.settings.partitions)
    states = [r for r in sink.records if r.topic == customer.changelog_topic_name]
    assert {r.key for r in states} >= {b"c-token", customer.clock_key(number)}
    assert all(token_of(r.headers) == 17 for r in states)
    # The broker has them up to offset 9,999: a reading of the partition from there on
    # ranks them as read.
    processor.confirmed({TopicPartition(customer.changelog_topic_name, number): 9_999})
    assert tokens.admit(number, 10_000, 16) is False
    assert tokens.admit(number, 10_001, 17) is True
