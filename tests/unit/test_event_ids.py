"""An event_id names one event: the same event sent again changes nothing, another event under
an id already used is dead-lettered as `event_id_reused`, never dropped as a duplicate (a
payment dropped so leaves its order to expire, and its customer struck)."""

from __future__ import annotations

import base64
from datetime import timedelta
from typing import Any

import orjson

from hitrun.agents import unpaid
from hitrun.schemas.records import PaymentAttempted
from hitrun.streams.ingest import RawMessage
from tests.unit.agent_shell import SETTINGS, START, Sink, checkout, keyed, run_batch, stored


def attempt(customer_id: str, event_id: str, status: str, minutes: int, **extra: Any) -> RawMessage:
    body = {
        "type": "payment_attempted",
        "event_id": event_id,
        "customer_id": customer_id,
        "shop_id": "shop-1",
        "occurred_at": (START + timedelta(minutes=minutes)).isoformat(),
        "order_id": "o1",
        "status": status,
        "amount": {"amount_minor": 5000, "currency": "IDR"},
        "method": "card",
        **extra,
    }
    return keyed(SETTINGS.topic_payments, customer_id, body)


def test_a_second_attempt_under_the_first_ones_event_id_is_dead_lettered_not_dropped(
    sink: Sink,
) -> None:
    # A producer that names payment events after their order: the failed attempt and the
    # one that succeeded share an id.
    failed = attempt("ids-1", "o1-pay", "failed", 5)
    succeeded = attempt("ids-1", "o1-pay", "succeeded", 10)
    run_batch(checkout("ids-1", "o1"), failed, succeeded)
    (letter,) = sink.letters()
    assert letter["reason"] == "event_id_reused"
    assert "'o1-pay'" in letter["detail"] and "own event_id" in letter["detail"]
    assert base64.b64decode(letter["value_b64"]) == succeeded.value
    assert letter["source"]["offset"] == succeeded.offset
    assert set(stored("ids-1").unpaid.open) == {"o1"}  # not taken for paid either


def test_the_same_event_sent_again_is_a_duplicate_however_it_is_serialized(sink: Sink) -> None:
    first = attempt("ids-2", "o1-pay", "succeeded", 5)
    # The same fields in another order, the time in another notation: the same event.
    body = orjson.loads(first.value)
    body["occurred_at"] = body["occurred_at"].replace("+00:00", "Z")
    again = keyed(SETTINGS.topic_payments, "ids-2", dict(reversed(list(body.items()))))
    assert again.value != first.value
    run_batch(checkout("ids-2", "o1"), first, again, first)
    assert sink.letters() == []
    state = stored("ids-2").unpaid
    assert "o1" in state.closed and list(state.digests) == ["o1-co", "o1-pay"]


def event(status: str) -> PaymentAttempted:
    return PaymentAttempted(
        event_id="e1",
        customer_id="c1",
        shop_id="shop-1",
        occurred_at=START,
        order_id="o1",
        status=status,
        amount=None,
        method="card",
    )


def test_an_id_seen_before_digests_were_kept_counts_as_a_duplicate() -> None:
    state = unpaid.UnpaidState(seen={"e1": START})  # written by an older version
    assert unpaid.reused_id(state, event("failed"), unpaid.event_digest(event("failed"))) is None
    state.digests["e1"] = unpaid.event_digest(event("failed"))
    assert unpaid.reused_id(state, event("failed"), unpaid.event_digest(event("failed"))) is None
    reason = unpaid.reused_id(state, event("succeeded"), unpaid.event_digest(event("succeeded")))
    assert reason is not None and "'e1'" in reason


def test_digests_leave_with_their_ids_at_the_end_of_the_dedupe_window() -> None:
    state = unpaid.UnpaidState(seen={"e1": START}, digests={"e1": 7})
    window = unpaid.Policies().default.dedupe_window
    unpaid.prune(state, START + window + timedelta(seconds=1), unpaid.Policies())
    assert state.seen == {} and state.digests == {} and state.is_empty()
