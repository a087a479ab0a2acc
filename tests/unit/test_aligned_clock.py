"""Live mode: a partition's clock waits for its input topics that are behind, so a backlog
on one topic never makes another topic's events late or fires deadlines they could meet."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

import hitrun.agents.customer as customer
from tests.unit.agent_shell import (
    SETTINGS,
    Sink,
    checkout,
    payment,
    restart,
    run_batch,
    same_partition_as,
    stored,
)


def payments_behind(tp: Any) -> bool:
    """Every input topic is read to its end except the payments topic."""
    return tp.topic != SETTINGS.topic_payments


def strikes(sink: Sink) -> list[Any]:
    return [
        orjson.loads(r.value)
        for r in sink.records
        if r.topic == SETTINGS.topic_strikes and r.value is not None
    ]


def test_a_payment_still_in_a_backlog_is_applied_before_later_checkouts_move_the_clock(
    sink: Sink,
) -> None:
    neighbour = same_partition_as("al-payer")
    # Checkouts are read to 13:00 while the payments topic still has unread records.
    run_batch(
        checkout("al-payer", "o-paid", 0),  # card: due an hour later
        checkout(neighbour, "o-later", 180),
        caught_up=payments_behind,
    )
    assert customer.metrics.value("hitrun_held_events") == 2
    assert strikes(sink) == []
    # The backlog is read: the payment made 30 minutes after the checkout.
    run_batch(payment("al-payer", "o-paid", 30))
    assert customer.metrics.value("hitrun_held_events") == 0
    assert [a for a in strikes(sink) if a.get("order_id") == "o-paid"] == []
    assert stored("al-payer") is None or "o-paid" not in stored("al-payer").unpaid.open
    assert [letter["reason"] for letter in sink.letters()] == []


def test_without_the_backlog_the_same_order_expires(sink: Sink) -> None:
    neighbour = same_partition_as("al-unpaid")
    run_batch(checkout("al-unpaid", "o-unpaid", 0), checkout(neighbour, "o-n", 180))
    assert "o-unpaid" in {a.get("order_id") for a in strikes(sink)}


def test_a_topic_with_unread_records_and_none_read_holds_everything(sink: Sink) -> None:
    run_batch(checkout("al-hold", "o-h", 0), caught_up=payments_behind)
    assert customer.metrics.value("hitrun_held_events") == 1
    assert customer.stream_clock("al-hold") is None


def test_at_the_bound_the_oldest_held_events_are_applied(
    sink: Sink, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(customer, "MAX_HELD", 2)
    run_batch(
        checkout("al-b1", "o-b1", 0),
        checkout(same_partition_as("al-b1"), "o-b2", 1),
        checkout(same_partition_as("al-b1", skip=1), "o-b3", 2),
        caught_up=payments_behind,
    )
    assert customer.metrics.value("hitrun_held_events") == 2
    assert set(stored("al-b1").unpaid.open) == {"o-b1"}
    assert customer.metrics.value("hitrun_held_events_forced_total") >= 1


def checkouts_behind(tp: Any) -> bool:
    """Every input topic is read to its end except the checkouts topic."""
    return tp.topic != SETTINGS.topic_checkouts


def test_a_restart_does_not_trust_times_it_read_from_records_it_must_read_again(
    sink: Sink, monkeypatch: pytest.MonkeyPatch
) -> None:
    month = 60 * 24 * 30
    held = checkout("al-again", "o-again", 0)
    ahead = checkout(same_partition_as("al-again"), "o-ahead", month)
    # Both checkouts are read and held (the payments topic is behind), so the
    # loop commits neither: a restart reads them again.
    run_batch(held, ahead, caught_up=payments_behind)
    restart(monkeypatch, held.partition)
    # After the restart the payments are read first, up to a month on.
    run_batch(
        payment("al-again", "o-again", 30),
        payment(same_partition_as("al-again", skip=1), "o-other", month + 60),
        caught_up=checkouts_behind,
    )
    # Had the clock record said "checkouts read up to a month on", the clock
    # would be there now, and the checkout read again below would be late.
    assert customer.stream_clock("al-again") is None
    run_batch(held, ahead)
    assert [letter["reason"] for letter in sink.letters()] == []
    assert [a for a in strikes(sink) if a.get("order_id") == "o-again"] == []
    assert "o-again" not in stored("al-again").unpaid.open
