"""After an assignment the deadline index is rebuilt from the states' stored summaries, without
decoding the states; a summary written under other policies is not trusted."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from faust.types import TP

import hitrun.agents.customer as customer
from hitrun.agents.state import CustomerState, decode_state
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
