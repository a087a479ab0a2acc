"""Live mode through a real broker, with windows of seconds: single purchase, then the return."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hitrun.schemas import compiled_validator
from tests.integration.harness import (
    alerts,
    checkout,
    payment,
    send,
    settings_of,
    start_worker,
    unique_env,
    wait_for,
)

LIVE_POLICY = {
    "HITRUN_SINGLE_PURCHASE_WINDOW": "4s",
    "HITRUN_CHURN_DORMANCY": "4s",
    "HITRUN_FLAG_MEMORY": "1h",
    "HITRUN_ALLOWED_LATENESS": "0s",
    "HITRUN_QUIET_HOURS": "off",
}


def test_single_purchase_is_flagged_on_an_idle_stream_and_the_return_is_reported(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    env = unique_env(kafka_bootstrap, tmp_path, **LIVE_POLICY)
    settings = settings_of(env)
    worker = start_worker(env, tmp_path)
    customer = "cust-once"
    try:
        first = checkout(customer, "o1") | {
            "traffic_source": "ad",
            "promotion_code": "WELCOME10",
        }
        send(settings, settings.topic_checkouts, first)
        send(settings, settings.topic_payments, payment(customer, "o1"))
        (risk,) = alerts(settings, settings.topic_retention, expected=1, timeout=20)
        assert risk["type"] == "first_purchase_risk"
        assert risk["order_id"] == "o1"
        assert {"search_or_ad_arrival", "first_order_promotion"} <= set(risk["factors"])
        assert 0 < risk["score"] <= 1

        # Nothing else arrives: only the ticks can close the window, 4 s after the purchase.
        wait_for(
            lambda: worker.metric("hitrun_alerts_total", type="single_purchase") >= 1,
            20,
            "the window to close on the tick clock",
        )
        flagged_seen = datetime.now(UTC)
        _, single = alerts(settings, settings.topic_retention, expected=2)
        assert single["type"] == "single_purchase"
        assert single["order_id"] == "o1"
        assert single["risk"]["factors"] == risk["factors"]
        closes = datetime.fromisoformat(single["first_purchase_at"]) + timedelta(seconds=4)
        assert datetime.fromisoformat(single["occurred_at"]) == closes
        assert (flagged_seen - closes).total_seconds() < 5  # fired by a tick, not by an event

        time.sleep(0.5)
        send(settings, settings.topic_checkouts, checkout(customer, "o2"))
        send(settings, settings.topic_payments, payment(customer, "o2"))
        wait_for(
            lambda: worker.metric("hitrun_alerts_total", type="customer_returned") >= 1,
            20,
            "the second purchase to be reported as a return",
        )
        everything = alerts(settings, settings.topic_retention, expected=3)
        back = everything[2]
        assert back["type"] == "customer_returned"
        assert (back["flag"], back["order_id"]) == ("single_purchase", "o2")
        assert back["flagged_at"] == single["occurred_at"]
        assert back["days_since_flag"] > 0
        for alert in everything:
            compiled_validator(f"{alert['type']}.v1")(alert)
        assert len({a["alert_id"] for a in everything}) == 3
        # The return opened a new cycle: no second first-purchase warning.
        assert worker.metric("hitrun_alerts_total", type="first_purchase_risk") == 1
        # Live alerts are logged as counts by type, once per HITRUN_ALERT_LOG_INTERVAL
        # (10 s) while there are any, not a line each.
        wait_for(
            lambda: (
                "alerts in the last" in worker.log_path.read_text()
                and "customer_returned=1" in worker.log_path.read_text()
            ),
            20,
            "the alert counts in the worker's log",
        )
        assert "alert customer_returned customer=" not in worker.log_path.read_text()
    finally:
        worker.stop()


def test_an_event_older_than_the_allowed_lateness_is_dead_lettered_as_late(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    env = unique_env(kafka_bootstrap, tmp_path, **(LIVE_POLICY | {"HITRUN_ALLOWED_LATENESS": "1h"}))
    settings = settings_of(env)
    worker = start_worker(env, tmp_path)
    try:
        send(settings, settings.topic_checkouts, checkout("cust-late", "o1"))
        wait_for(
            lambda: worker.metric("hitrun_input_events_total", outcome="processed") >= 1,
            20,
            "the checkout to set the partition's event time",
        )
        stale = payment("cust-late", "o1") | {
            "occurred_at": (datetime.now(UTC) - timedelta(hours=2)).isoformat()
        }
        send(settings, settings.topic_payments, stale)
        wait_for(
            lambda: worker.metric("hitrun_dead_letters_total", reason="late_event") >= 1,
            20,
            "the stale payment to be dead-lettered",
        )
        (letter,) = alerts(settings, settings.topic_dead_letters, expected=1)
        assert letter["reason"] == "late_event"
        assert letter["source"]["topic"] == settings.topic_payments
        assert worker.metric("hitrun_late_events_total", topic=settings.topic_payments) == 1
        assert worker.metric("hitrun_input_events_total", outcome="processed") == 1
        assert worker.metric("hitrun_alerts_total", type="first_purchase_risk") == 0
    finally:
        worker.stop()
