"""What the demo shows: stories from alerts, the ground truth scored, rates counted once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from rich.console import Console

from hitrun.dev.demo_view import DemoView, Rate, Stories, Truth, money
from hitrun.streams.simulate import GroundTruth, SimMessage

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def _checkout(customer: str, order: str, at: datetime, method: str = "bank_transfer") -> SimMessage:
    body = {
        "type": "checkout_confirmed",
        "customer_id": customer,
        "order_id": order,
        "payment_method": method,
        "total": {"amount_minor": 25_900_000, "currency": "IDR"},
    }
    return SimMessage(
        "checkouts", customer.encode(), orjson.dumps(body), at, customer, "never_pays"
    )


def _alert(kind: str, customer: str, at: datetime, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "customer_id": customer, "occurred_at": at.isoformat(), **fields}


def _strike(count: int) -> dict[str, int]:
    return {"count": count, "threshold": 3}


def test_a_customers_alerts_read_as_one_story_with_the_checkouts_they_name() -> None:
    stories = Stories({"cust-42": "never_pays"})
    stories.sent(_checkout("cust-42", "ord-1a2b3c4d5e6f7a8b", T0))
    stories.add(_alert("first_purchase_risk", "cust-42", T0, order_id="ord-1a2b3c4d5e6f7a8b"))
    stories.add(
        _alert("payment_reminder", "cust-42", T0, order_id="ord-1a2b3c4d5e6f7a8b", attempt=1)
    )
    stories.add(
        _alert("order_expired", "cust-42", T0, order_id="ord-1a2b3c4d5e6f7a8b", strike=_strike(3))
    )
    stories.add(_alert("customer_blacklisted", "cust-42", T0, until="2027-03-02T00:00:00+00:00"))
    assert stories.latest(5) == [
        (
            "cust-42",
            "checkout ord-1a2b3c bank_transfer IDR 259,000 → reminder → expired, strike 3/3"
            " → blacklisted until 2027-03-02",
            "never_pays",
        )
    ]


def test_a_long_story_shows_its_last_steps_and_the_newest_story_comes_first() -> None:
    stories = Stories({})
    for attempt in range(1, 10):
        stories.add(_alert("payment_reminder", "a", T0, order_id="o", attempt=attempt))
    assert stories.latest(2) == []  # reminders alone are no outcome yet
    stories.add(_alert("order_expired", "a", T0, order_id="o", strike=_strike(1)))
    stories.add(_alert("customer_returned", "b", T0))
    stories.add(_alert("payment_reminder", "a", T0, order_id="o2", attempt=1))
    (b, a) = stories.latest(2)
    assert b == ("b", "came back", "?")
    assert a[1].startswith("… → reminder 6 → ")
    assert a[1].endswith("reminder 9 → expired, strike 1/3 → reminder")


def test_one_kind_of_outcome_does_not_crowd_out_the_others() -> None:
    stories = Stories({})
    stories.add(_alert("order_expired", "old", T0, order_id="o", strike=_strike(1)))
    for n in range(20):
        stories.add(_alert("payment_recovered", f"r{n}", T0, order_id="o", reminders_sent=1))
    shown = [customer for customer, _, _ in stories.latest(6)]
    # Two recoveries and the expiry first; the rows left go to the newest, in recency order.
    assert shown == ["r19", "r18", "r17", "r16", "r15", "old"]
    assert [customer for customer, _, _ in stories.latest(2)] == ["r19", "old"]


def test_stories_are_bounded() -> None:
    stories = Stories({}, keep=3, orders=2)
    for n in range(10):
        stories.sent(_checkout(f"c{n}", f"o{n}", T0))
        stories.add(_alert("customer_returned", f"c{n}", T0))
    assert len(stories.steps) == 3 and len(stories.told) <= 3 and len(stories.orders) == 2


def test_money_is_shown_in_major_units() -> None:
    assert money(25_900_000, "IDR") == "IDR 259,000"
    assert money(1_050, "USD") == "USD 10.50"


def _truth(kinds: dict[str, str]) -> Truth:
    facts = GroundTruth(customers=dict(kinds))
    truth = Truth(facts)
    for n, customer in enumerate(kinds):
        truth.sent(_checkout(customer, f"o-{customer}", T0 + timedelta(days=n)))
    return truth


def test_recall_counts_only_customers_whose_verdict_is_due_and_precision_all_flagged() -> None:
    truth = _truth({"a": "never_pays", "b": "never_pays", "c": "pays_promptly", "d": "never_pays"})
    # Clock at day 5: a (day 0) and b (day 1) are due after 3 days, d (day 3) is not.
    truth.add(_alert("order_expired", "a", T0 + timedelta(days=5), order_id="o-a"))
    truth.add(_alert("order_expired", "c", T0 + timedelta(days=3), order_id="o-c"))
    score = next(s for s in truth.scores() if s.expectation.alert == "order_expired")
    assert (score.customers, score.due, score.found) == (3, 2, 1)
    assert (score.flagged, score.right) == (2, 1)
    assert score.recall == 0.5 and score.precision == 0.5


def test_a_reversed_strike_is_no_verdict() -> None:
    truth = _truth({"a": "never_pays", "c": "pays_promptly"})
    truth.add(_alert("order_expired", "c", T0 + timedelta(days=9), order_id="o-c"))
    truth.add(_alert("strike_reversed", "c", T0 + timedelta(days=9), order_id="o-c"))
    score = next(s for s in truth.scores() if s.expectation.alert == "order_expired")
    assert score.flagged == 0 and score.precision is None
    assert score.due == 1 and score.recall == 0.0


def test_a_rate_is_measured_over_its_window() -> None:
    rate = Rate(window_s=5)
    for second in range(20):
        rate.update(total=300 * second, now=float(second))
    assert rate.per_second == 300
    assert len(rate.samples) <= 7


def test_rerouted_events_are_not_counted_twice_in_the_event_rate() -> None:
    view = DemoView("run", 1)
    view.scraped({"outcome:processed": 0, "outcome:rerouted": 0}, now=0.0)
    view.scraped(
        {"outcome:processed": 1000, "outcome:rerouted": 900, "dead:not_json": 20}, now=10.0
    )
    assert view.rates["processed"].per_second == 102  # (1000 applied + 20 dead) / 10 s
    assert view.rates["rerouted"].per_second == 90


def test_the_view_renders_stories_rates_truth_and_dead_letters() -> None:
    view = DemoView("demo-x", 7)
    view.facts.customers["cust-1"] = "cod_refuser"
    view.facts.malformed["not_json"] = 3
    view.sent(_checkout("cust-1", "ord-1", T0, method="cash_on_delivery"))
    view.alert(_alert("strike_recorded", "cust-1", T0, order_id="ord-1", strike=_strike(1)))
    view.scraped({"outcome:processed": 10, "dead:not_json": 3}, now=0.0)
    console = Console(record=True, width=160)
    console.print(view.render(5))
    screen = console.export_text()
    for shown in (
        "run demo-x  seed 7",
        "events/s",
        "alerts/s",
        "cust-1",
        "checkout ord-1 cash_on_delivery IDR 259,000 → refused at the door, strike 1/3",
        "refuses cash on delivery",
        "precision",
        "not_json",
    ):
        assert shown in screen, screen
