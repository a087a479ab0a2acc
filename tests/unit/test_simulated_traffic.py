"""The traffic generator is reproducible, ordered in event time, and honest about its truth."""

from __future__ import annotations

from collections import Counter

from hitrun.streams.codec import decode_input
from hitrun.streams.errors import InputRejected
from hitrun.streams.simulate import DEFAULT_MIX, MALFORMATIONS, GroundTruth, TrafficShape, generate

ROLE_TYPES = {
    "checkouts": frozenset({"checkout_confirmed"}),
    "payments": frozenset({"payment_attempted"}),
    "orders": frozenset({"order_status_changed"}),
    "inquiries": frozenset({"inquiry_received"}),
}


def test_same_seed_gives_byte_identical_traffic() -> None:
    a = [(m.role, m.key, m.value) for m in generate(TrafficShape(seed=7), 3000)]
    b = [(m.role, m.key, m.value) for m in generate(TrafficShape(seed=7), 3000)]
    c = [(m.role, m.key, m.value) for m in generate(TrafficShape(seed=8), 3000)]
    assert a == b
    assert a != c


def test_messages_come_in_event_time_order() -> None:
    times = [m.occurred_at for m in generate(TrafficShape(seed=2), 5000)]
    assert times == sorted(times)


def test_every_customer_kind_appears_and_the_truth_counts_them() -> None:
    truth = GroundTruth()
    messages = list(generate(TrafficShape(seed=3), 5000, truth))
    assert truth.messages == len(messages) == 5000
    assert set(truth.customers.values()) == set(DEFAULT_MIX)
    seen = {m.customer_id for m in messages if not m.label.startswith("malformed:")}
    assert seen <= set(truth.customers)


def test_well_formed_messages_decode_and_malformed_ones_fail_as_labelled() -> None:
    truth = GroundTruth()
    outcomes: Counter[str] = Counter()
    for m in generate(TrafficShape(seed=4, malformed_ratio=0.1), 4000, truth):
        try:
            decode_input(m.value, m.key, ROLE_TYPES[m.role], 65536)
            outcomes["ok"] += 1
            assert not m.label.startswith("malformed:")
        except InputRejected as exc:
            assert m.label == f"malformed:{exc.reason}"
            outcomes[exc.reason] += 1
    assert {r: outcomes[r] for r in MALFORMATIONS} == {r: truth.malformed[r] for r in MALFORMATIONS}
    assert all(truth.malformed[r] > 0 for r in MALFORMATIONS)
    assert outcomes["ok"] + sum(truth.malformed.values()) == 4000
