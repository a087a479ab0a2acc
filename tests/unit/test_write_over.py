"""What the customer agent writes over another writer's state records, and where it expects
its own to land (streams/repair.py; the loop's side is in test_consume_loop.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from aiokafka import TopicPartition

import hitrun.agents.customer as customer
from hitrun.streams import faust_bridge
from hitrun.streams.partitioning import partition_for_key
from hitrun.streams.sink import OutRecord
from tests.unit.agent_shell import Sink, checkout, install_sink, run_batch

CHANGELOG = customer.changelog_topic_name


@pytest.fixture
def sink(monkeypatch: pytest.MonkeyPatch) -> Iterator[Sink]:
    yield from install_sink(monkeypatch)


def test_the_agent_writes_its_stored_value_of_each_key_over_another_writers(sink: Sink) -> None:
    run_batch(checkout("c-over", "o-1"))
    number = partition_for_key(b"c-over", customer.settings.partitions)
    stored_state = customer.customers_table.data.get(b"c-over")
    clock = customer.clock_key(number)
    stored_clock = customer.customers_table.data.get(clock)
    assert stored_state is not None and stored_clock is not None
    sink.records.clear()
    tp = TopicPartition(CHANGELOG, number)
    # The other writer touched the customer, the partition's clock record and a key this
    # worker holds nothing for: each gets what the store holds (a tombstone for nothing).
    customer.CustomerProcessor().rewrite({tp: {b"c-over", clock, b"c-never"}})
    # Each names this worker's writer token (streams/fencing.py).
    headers = customer.writers.headers(number, customer.app.consumer_generation_id)
    assert sorted(sink.records, key=lambda r: r.key or b"") == sorted(
        [
            OutRecord(CHANGELOG, b"c-over", stored_state, number, headers),
            OutRecord(CHANGELOG, clock, stored_clock, number, headers),
            OutRecord(CHANGELOG, b"c-never", None, number, headers),
        ],
        key=lambda r: r.key or b"",
    )


def test_after_a_recovery_the_agent_expects_its_state_records_right_after_what_it_read(
    sink: Sink, monkeypatch: pytest.MonkeyPatch
) -> None:
    ends = {
        TopicPartition(CHANGELOG, 0): 42,
        TopicPartition(CHANGELOG, 3): 0,
        TopicPartition("some-other-table-changelog", 0): 7,
    }
    monkeypatch.setattr(faust_bridge, "recovered_ends", lambda app: ends)
    customer.CustomerProcessor().prepare()
    assert sink.expected == {TopicPartition(CHANGELOG, 0): 42, TopicPartition(CHANGELOG, 3): 0}
