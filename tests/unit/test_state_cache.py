"""The agent's state cache: states it wrote stay decoded between batches, within a bound."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import hitrun.agents.customer as customer
from hitrun.agents.customer import StateCache
from hitrun.agents.state import CustomerState, decode_state, encode_state, stored_summary
from hitrun.streams.rocks import write_raw
from hitrun.streams.sink import OutRecord
from tests.unit.events import T0


class Sink:
    def __init__(self) -> None:
        self.records: list[OutRecord] = []

    def put(self, record: OutRecord) -> None:
        self.records.append(record)


@pytest.fixture
def sink(monkeypatch: pytest.MonkeyPatch) -> Iterator[Sink]:
    fake = Sink()
    monkeypatch.setattr(customer, "sink", fake)
    store = customer.customers_table.data
    before = dict(store.items())
    yield fake
    for key in [k for k in store if k not in before]:
        del store[key]


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    seen: list[bytes] = []

    def counting(data: bytes, customer_id: str | None = None) -> CustomerState:
        seen.append(data)
        return decode_state(data, customer_id)

    monkeypatch.setattr(customer, "decode_state", counting)
    return seen


def confirm(cache: StateCache) -> None:
    """What the agent and the loop do with a batch the broker confirmed."""
    for key, value in cache.stage(customer.stamp):
        customer.sink.put(OutRecord(customer.changelog_topic_name, key, value, 0))
    write_raw(customer.customers_table.data, cache.commit(customer.timers.tally), {})


def write(cache: StateCache, customer_id: str) -> CustomerState:
    state, _ = cache.load(customer_id)
    state.unpaid.seen[f"{customer_id}-e1"] = T0
    cache.store(customer_id, state, customer.next_due(state))
    return state


def test_a_state_written_in_one_batch_is_the_one_loaded_in_the_next(
    sink: Sink, decodes: list[bytes]
) -> None:
    cache = StateCache(keep=10)
    written = write(cache, "cache-c1")
    confirm(cache)
    stored = customer.customers_table.data[b"cache-c1"]
    assert decode_state(stored) == written
    # With the summary the index rebuild reads instead of decoding the state.
    assert stored_summary(stored) == customer.summarize(written)
    assert [r.key for r in sink.records] == [b"cache-c1"]
    loaded, stored = cache.load("cache-c1")
    assert loaded is written and stored
    assert decodes == []


def test_after_a_rebalance_states_are_decoded_from_the_store_again(
    sink: Sink, decodes: list[bytes]
) -> None:
    cache = StateCache(keep=10)
    write(cache, "cache-c2")
    confirm(cache)
    # Recovery after a rebalance may rewrite the store under the kept states.
    changed = CustomerState()
    changed.unpaid.seen["recovered"] = T0
    customer.customers_table.data[b"cache-c2"] = encode_state(changed)
    cache.forget()
    loaded, _ = cache.load("cache-c2")
    assert loaded == changed
    assert decodes == [encode_state(changed)]


def test_only_the_most_recently_written_states_are_kept(sink: Sink, decodes: list[bytes]) -> None:
    cache = StateCache(keep=2)
    for name in ("cache-a", "cache-b", "cache-c"):
        write(cache, name)
        confirm(cache)
    write(cache, "cache-a")  # decoded: it was the oldest of three
    confirm(cache)
    assert len(decodes) == 1
    cache.load("cache-c")
    cache.load("cache-a")
    assert len(decodes) == 1
    confirm(cache)
    cache.load("cache-b")  # pushed out by the rewrite of cache-a
    assert len(decodes) == 2


def test_a_deleted_state_is_not_kept(sink: Sink, decodes: list[bytes]) -> None:
    cache = StateCache(keep=10)
    write(cache, "cache-d")
    confirm(cache)
    state, _ = cache.load("cache-d")
    state.unpaid.seen.clear()
    cache.store("cache-d", state, customer.next_due(state))
    confirm(cache)
    assert b"cache-d" not in customer.customers_table.data
    assert sink.records[-1].value is None  # the changelog tombstone
    _, stored = cache.load("cache-d")
    assert not stored


def test_a_customer_never_stored_gets_no_tombstone(sink: Sink, decodes: list[bytes]) -> None:
    cache = StateCache(keep=10)
    state = write(cache, "cache-n")  # new in this batch, and empty again before its end
    state.unpaid.seen.clear()
    cache.store("cache-n", state, None)
    write(cache, "cache-s")  # stored in the batch before: emptied, it needs one
    confirm(cache)
    state, _ = cache.load("cache-s")
    state.unpaid.seen.clear()
    cache.store("cache-s", state, None)
    confirm(cache)
    assert [(r.key, r.value is None) for r in sink.records] == [
        (b"cache-s", False),
        (b"cache-s", True),
    ]
    assert b"cache-n" not in customer.customers_table.data
    assert b"cache-s" not in customer.customers_table.data


def test_a_batch_that_is_never_confirmed_leaves_the_store_as_it_was(
    sink: Sink, decodes: list[bytes]
) -> None:
    cache = StateCache(keep=10)
    write(cache, "cache-e")
    confirm(cache)
    stored = customer.customers_table.data[b"cache-e"]
    state, _ = cache.load("cache-e")
    state.unpaid.seen["cache-e-e2"] = T0
    cache.store("cache-e", state, customer.next_due(state))
    # Staged for the broker, which never confirms: the batch is dropped.
    assert [key for key, _ in cache.stage(customer.stamp)] == [b"cache-e"]
    cache.forget()
    # forget() also drops the kept states, which the dropped batch changed in place.
    assert customer.customers_table.data[b"cache-e"] == stored
    loaded, _ = cache.load("cache-e")
    assert "cache-e-e2" not in loaded.unpaid.seen
