"""The effects `publish` passes over are the ones it has nothing to do for."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

import hitrun.agents.customer as customer
from hitrun.agents.alerts import to_alert
from hitrun.agents.effects import CloseOrder, RecordPurchase
from hitrun.agents.state import CustomerState
from tests.unit.agent_shell import Sink, install_sink

AT = datetime(2025, 5, 6, 10, 0, tzinfo=UTC)
EXAMPLES = {
    CloseOrder: CloseOrder("c-1", "shop-1", "o-1", "paid", AT),
    RecordPurchase: RecordPurchase("c-1", "shop-1", "o-1", AT, 1250, "EUR"),
}


@pytest.fixture
def sink(monkeypatch: pytest.MonkeyPatch) -> Iterator[Sink]:
    yield from install_sink(monkeypatch)


def test_every_unpublished_effect_has_an_example() -> None:
    assert set(EXAMPLES) == customer.UNPUBLISHED


@pytest.mark.parametrize("kind", sorted(EXAMPLES, key=lambda k: k.__name__))
def test_an_unpublished_effect_makes_no_alert(kind: type) -> None:
    assert to_alert(EXAMPLES[kind]) is None


@pytest.mark.parametrize("shares_strikes", [False, True])
def test_publishing_unpublished_effects_queues_nothing(
    sink: Sink, monkeypatch: pytest.MonkeyPatch, shares_strikes: bool
) -> None:
    monkeypatch.setattr(customer.link_rules, "shares_strikes", shares_strikes)
    customer.publish("c-1", CustomerState(), list(EXAMPLES.values()))
    assert sink.records == []
