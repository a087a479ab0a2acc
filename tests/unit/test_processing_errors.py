"""No message stops a partition: one that raises is dead-lettered as processing_error, its
customer's state stays as it was, and the rest of the batch goes on (the agent's shell, no
broker)."""

from __future__ import annotations

import base64
from datetime import timedelta
from typing import Any

import orjson
import pytest

import hitrun.agents.customer as customer
from hitrun.agents.state import stored_summary
from hitrun.streams.clock import DeadlineIndex, to_micros
from hitrun.streams.ingest import ORIGIN_HEADER, RawMessage
from tests.unit.agent_shell import (
    SETTINGS,
    START,
    Sink,
    checkout,
    keyed,
    run_batch,
    same_partition_as,
    stored,
)


def test_a_message_whose_detector_raises_is_dead_lettered_and_the_batch_goes_on(
    sink: Sink, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = customer.unpaid.handle

    def handle(state: Any, event: Any, policies: Any, *rest: Any) -> Any:
        if event.customer_id == "pe-bad":
            raise ZeroDivisionError("a bug in a detector")
        return original(state, event, policies, *rest)

    monkeypatch.setattr(customer.unpaid, "handle", handle)
    bad = checkout("pe-bad", "o-bad", 1)
    run_batch(checkout("pe-good", "o-1"), bad, checkout("pe-good2", "o-2", 2))
    letters = sink.letters()
    assert [letter["reason"] for letter in letters] == ["processing_error"]
    assert "ZeroDivisionError: a bug in a detector" in letters[0]["detail"]
    assert letters[0]["source"]["offset"] == bad.offset
    assert base64.b64decode(letters[0]["value_b64"]) == bad.value
    assert stored("pe-bad") is None
    assert set(stored("pe-good").unpaid.open) == {"o-1"}
    assert set(stored("pe-good2").unpaid.open) == {"o-2"}
    assert (
        customer.metrics.value(
            "hitrun_processing_errors_total", stage="message", exception="ZeroDivisionError"
        )
        >= 1
    )


def test_a_failing_message_leaves_changes_made_earlier_in_the_batch_in_place(
    sink: Sink, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = customer.unpaid.handle

    def handle(state: Any, event: Any, policies: Any, *rest: Any) -> Any:
        if event.order_id == "o-second":
            state.open.clear()  # the core changes the state in place, then fails
            raise RuntimeError("halfway")
        return original(state, event, policies, *rest)

    monkeypatch.setattr(customer.unpaid, "handle", handle)
    run_batch(checkout("pe-same", "o-first"), checkout("pe-same", "o-second", 1))
    assert set(stored("pe-same").unpaid.open) == {"o-first"}
    # Only the failed message's outputs were dropped: the first checkout's changelog stays.
    changelog = [
        r
        for r in sink.records
        if r.topic == customer.changelog_topic_name
        and not r.key.startswith(customer.CLOCK_KEY_PREFIX)  # type: ignore[union-attr]
    ]
    assert [r.key for r in changelog] == [b"pe-same"]


def test_a_stored_state_that_cannot_be_decoded_dead_letters_that_customers_messages_only(
    sink: Sink,
) -> None:
    customer.customers_table.data[b"pe-corrupt"] = b"\x00not a state"
    run_batch(checkout("pe-corrupt", "o-c"), checkout("pe-fine", "o-f", 1))
    assert [letter["reason"] for letter in sink.letters()] == ["processing_error"]
    assert "StateFormatError" in sink.letters()[0]["detail"]
    assert "customer pe-corrupt" in sink.letters()[0]["detail"]
    assert customer.customers_table.data[b"pe-corrupt"] == b"\x00not a state"
    assert set(stored("pe-fine").unpaid.open) == {"o-f"}


def test_a_customer_whose_timers_raise_does_not_stop_the_other_customers_deadlines(
    sink: Sink, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_batch(checkout("pe-t1", "o-t1"), checkout("pe-t2", "o-t2"))
    original = customer.unpaid.advance

    def advance(state: Any, customer_id: str, now: Any, policies: Any, *rest: Any) -> Any:
        if customer_id == "pe-t1":
            raise KeyError("timer bug")
        return original(state, customer_id, now, policies, *rest)

    monkeypatch.setattr(customer.unpaid, "advance", advance)
    # A later event in each of their partitions moves the clock past both deadlines.
    run_batch(*(checkout(same_partition_as(c), f"o-late-{c}", 600) for c in ("pe-t1", "pe-t2")))
    expired = [
        orjson.loads(r.value)
        for r in sink.records
        if r.topic == SETTINGS.topic_strikes and r.value is not None
    ]
    assert "o-t2" in {a["order_id"] for a in expired if a["type"] == "order_expired"}
    assert "o-t1" not in {a.get("order_id") for a in expired}
    assert set(stored("pe-t1").unpaid.open) == {"o-t1"}  # put back as it was
    assert sink.letters() == []
    assert (
        customer.metrics.value(
            "hitrun_processing_errors_total", stage="timer", exception="KeyError"
        )
        >= 1
    )


def test_stop_mode_raises_instead(sink: Sink, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(customer, "STOP_ON_ERROR", True)

    def handle(state: Any, event: Any, policies: Any, *rest: Any) -> Any:
        raise ZeroDivisionError("stop here")

    monkeypatch.setattr(customer.unpaid, "handle", handle)
    with pytest.raises(ZeroDivisionError):
        run_batch(checkout("pe-stop", "o-s"))


@pytest.mark.parametrize(
    "header",
    [b"garbage", b"[1,2]", b'["t", -1, 0, null]', b"\xff\xfe", b'["t", 0, 0, 1e400]'],
)
def test_a_hostile_origin_header_is_ignored_and_the_message_dead_lettered_where_it_is(
    sink: Sink, header: bytes
) -> None:
    bad = checkout("pe-h", "o-h", headers=((ORIGIN_HEADER, header),))
    invalid = RawMessage(
        bad.topic, bad.partition, bad.offset + 1, None, bad.key, b"{not json", bad.headers
    )
    run_batch(bad, invalid)
    letters = sink.letters()
    assert [letter["reason"] for letter in letters] == ["not_json"]
    assert letters[0]["source"]["topic"] == bad.topic
    assert letters[0]["source"]["offset"] == invalid.offset
    assert set(stored("pe-h").unpaid.open) == {"o-h"}


def test_a_state_put_back_is_stored_with_its_own_wake_time(
    sink: Sink, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second checkout (due in two minutes) is applied and stored, then scheduling its
    wake fails: the state goes back to the first checkout's, and so must the wake time
    stored with it."""
    original = DeadlineIndex.schedule
    calls = []

    def schedule(index: DeadlineIndex, customer_id: str, due: Any) -> None:
        calls.append(customer_id)
        if len(calls) == 2:
            assert customer.cache.pending()  # the state is stored for the batch's end
            raise RuntimeError("after the store")
        original(index, customer_id, due)

    monkeypatch.setattr(DeadlineIndex, "schedule", schedule)
    soon = {
        "type": "checkout_confirmed",
        "event_id": "o-soon-co",
        "customer_id": "pe-wake",
        "shop_id": "shop-1",
        "occurred_at": (START + timedelta(minutes=1)).isoformat(),
        "order_id": "o-soon",
        "total": {"amount_minor": 5000, "currency": "IDR"},
        "payment_method": "card",
        "payment_due_at": (START + timedelta(minutes=2)).isoformat(),
    }
    run_batch(checkout("pe-wake", "o-later"), keyed(SETTINGS.topic_checkouts, "pe-wake", soon))
    state = stored("pe-wake")
    assert set(state.unpaid.open) == {"o-later"}
    summary = stored_summary(customer.customers_table.data[b"pe-wake"])
    assert summary == customer.summarize(state)
    assert summary is not None and summary.wake != to_micros(START + timedelta(minutes=2))
