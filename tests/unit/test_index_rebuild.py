"""After an assignment the deadline index is rebuilt from the states' stored summaries, without
decoding the states; a summary written under other policies is not trusted."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from faust.types import TP

import hitrun.agents.customer as customer
from hitrun.agents.state import CustomerState, decode_state, encode_state
from hitrun.streams.partitioning import partition_for_key
from tests.unit.agent_shell import SETTINGS, Sink, checkout, payment, run_batch, stored

CUSTOMERS = ["rb-1", "rb-2", "rb-3"]


@pytest.fixture
def decoded(monkeypatch: pytest.MonkeyPatch, sink: Sink) -> Iterator[list[str | None]]:
    run_batch(
        checkout("rb-1", "o-1"),
        checkout("rb-2", "o-2", 5),
        checkout("rb-3", "o-3", 9),
        payment("rb-3", "o-3", 10),
    )
    seen: list[str | None] = []

    def counting(data: bytes, customer_id: str | None = None) -> CustomerState:
        seen.append(customer_id)
        return decode_state(data, customer_id)

    every = {TP(SETTINGS.topic_checkouts, p) for p in range(SETTINGS.partitions)}
    monkeypatch.setattr(customer.app.assignor, "assigned_actives", lambda: every)
    monkeypatch.setattr(customer, "decode_state", counting)
    yield seen


def rebuilt() -> dict[str, object]:
    customer.timers.clear()
    customer.timers.of(0)  # the first use after an assignment rebuilds every owned partition
    index: dict[str, object] = {}
    for cid in CUSTOMERS:
        partition = customer.timers.partitions[partition_for_key(cid.encode(), SETTINGS.partitions)]
        index[cid] = partition.index.due(cid)
    return index


def test_the_index_comes_from_the_summaries_alone(decoded: list[str | None]) -> None:
    expected = {cid: customer.next_due(stored(cid)) for cid in CUSTOMERS}
    decoded.clear()
    assert rebuilt() == expected
    assert decoded == []
    assert all(expected[cid] is not None for cid in ("rb-1", "rb-2"))


def test_a_summary_written_under_other_policies_is_not_trusted(
    decoded: list[str | None], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(customer, "WAKE_POLICY", customer.WAKE_POLICY + 1)
    decoded.clear()
    index = rebuilt()
    assert sorted(c for c in decoded if c in CUSTOMERS) == CUSTOMERS
    assert index == {cid: customer.next_due(stored(cid)) for cid in CUSTOMERS}


@pytest.fixture
def scans(monkeypatch: pytest.MonkeyPatch, sink: Sink) -> list[set[int]]:
    """The partitions each rebuild scans, with every partition owned and three customers'
    orders open (one of them paid)."""
    every = {TP(SETTINGS.topic_checkouts, p) for p in range(SETTINGS.partitions)}
    monkeypatch.setattr(customer.app.assignor, "assigned_actives", lambda: every)
    run_batch(checkout("rb-1", "o-1"), checkout("rb-2", "o-2", 5), checkout("rb-3", "o-3", 9))
    run_batch(payment("rb-3", "o-3", 10))
    seen: list[set[int]] = []
    scan = customer.owned_items

    def counting(store: Any, owned: set[int], partition_of: Any) -> Iterator[Any]:
        seen.append(set(owned))
        return scan(store, owned, partition_of)

    monkeypatch.setattr(customer, "owned_items", counting)
    return seen


def gauges() -> tuple[float | None, ...]:
    """Customers in state, open checkouts, blacklisted customers, as Prometheus reads them."""
    registry = customer.metrics.registry
    return tuple(
        registry.get_sample_value(name)
        for name in (
            "hitrun_customers_in_state",
            "hitrun_open_checkouts",
            "hitrun_blacklisted_customers",
        )
    )


def indexed(what: str) -> float:
    """The index rebuilds so far (`count`), or the partitions `kept` or `scanned` by them."""
    registry = customer.metrics.registry
    if what == "count":
        found = registry.get_sample_value("hitrun_index_rebuild_seconds_count")
    else:
        found = registry.get_sample_value("hitrun_index_partitions_total", {"how": what})
    return found or 0.0


def index_of(cid: str) -> object:
    home = partition_for_key(cid.encode(), SETTINGS.partitions)
    return customer.timers.of(home).index.due(cid)


def test_a_rebalance_keeps_the_indexes_of_the_partitions_that_stay(scans: list[set[int]]) -> None:
    expected = {cid: customer.next_due(stored(cid)) for cid in CUSTOMERS}
    counted = gauges()
    assert counted[1] == 2  # rb-1's and rb-2's orders are open
    rebuilds, kept = indexed("count"), indexed("kept")
    customer.CustomerProcessor().reset()  # between batches: everything applied is stored
    assert {cid: index_of(cid) for cid in CUSTOMERS} == expected
    assert scans == [set()]
    assert gauges() == counted
    assert indexed("count") == rebuilds + 1
    assert indexed("kept") == kept + SETTINGS.partitions
    # A full rebuild counts the same.
    customer.timers.clear()
    assert {cid: index_of(cid) for cid in CUSTOMERS} == expected
    assert scans[-1] == set(range(SETTINGS.partitions))
    assert gauges() == counted


def test_a_partition_whose_store_changed_meanwhile_is_scanned(scans: list[set[int]]) -> None:
    home = partition_for_key(b"rb-1", SETTINGS.partitions)
    customer.CustomerProcessor().reset()
    # Another worker owned the partition meanwhile: it paid rb-1's order, and its batch
    # wrote the partition's clock record with a batch id of its own.
    store = customer.customers_table.data
    state = stored("rb-1")
    state.unpaid.open.clear()
    store[b"rb-1"] = encode_state(state, None, customer.WAKE_POLICY)
    store[customer.clock_key(home)] = store[customer.clock_key(home)] + b" "
    scanned = indexed("scanned")
    assert index_of("rb-1") is None
    assert scans == [{home}]
    assert gauges()[1] == 1
    assert indexed("scanned") == scanned + 1


def test_changes_not_yet_confirmed_rebuild_every_partition(scans: list[set[int]]) -> None:
    processor = customer.CustomerProcessor()
    processor.apply(checkout("rb-4", "o-4", 20))
    processor.reset()  # the batch in hand is dropped
    customer.timers.of(0)
    assert scans == [set(range(SETTINGS.partitions))]
    assert index_of("rb-4") is None
    assert gauges()[1] == 2


def test_a_second_reset_before_the_rebuild_keeps_what_the_first_set_aside(
    scans: list[set[int]],
) -> None:
    expected = {cid: customer.next_due(stored(cid)) for cid in CUSTOMERS}
    customer.CustomerProcessor().reset()  # partitions revoked
    customer.CustomerProcessor().reset()  # and assigned
    assert {cid: index_of(cid) for cid in CUSTOMERS} == expected
    assert scans == [set()]
