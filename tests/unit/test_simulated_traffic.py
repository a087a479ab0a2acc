"""The traffic generator is reproducible, ordered in event time, and honest about its truth."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import orjson

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


def test_identities_are_an_addition_the_plain_traffic_does_not_see() -> None:
    plain = list(generate(TrafficShape(seed=9), 3000))
    with_ids = list(generate(TrafficShape(seed=9, identities=True), 3000))
    assert all(b"identifiers" not in m.value for m in plain)
    for a, b in zip(plain, with_ids, strict=True):
        if a.label.startswith("malformed"):
            assert a.value == b.value
            continue
        body = orjson.loads(b.value)
        if a.role in ("checkouts", "payments"):
            assert body.pop("identifiers")
        assert body == orjson.loads(a.value)


def test_an_evader_comes_back_under_a_new_id_reusing_some_identifiers() -> None:
    truth = GroundTruth()
    shape = TrafficShape(seed=4, evaders=0.2, customer_gap=timedelta(hours=6))
    messages = list(generate(shape, 6000, truth))
    returned = [c for c, kind in truth.customers.items() if kind == "evader_returned"]
    assert len(returned) > 20
    shown: dict[str, dict[str, set[str]]] = {}
    for m in messages:
        if m.role in ("checkouts", "payments") and not m.label.startswith("malformed"):
            ids = orjson.loads(m.value)["identifiers"]
            for kind, value in ids.items():
                shown.setdefault(m.customer_id, {}).setdefault(kind, set()).add(value)
    reused: Counter[str] = Counter()
    seen_back = 0
    for account in returned:
        first = truth.persons[account]
        assert first != account and truth.customers[first] == "evader"
        if account not in shown or first not in shown:
            continue  # came back after the last message
        seen_back += 1
        for kind, values in shown[account].items():
            reused[kind] += bool(values & shown[first].get(kind, set()))
    assert seen_back > 10
    # Phones are reused far more often than e-mail addresses (EVADER_REUSE).
    assert reused["phone"] > 2 * reused["email"]
