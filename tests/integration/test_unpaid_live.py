"""Live mode through a real broker, with windows of seconds: the whole unpaid story end to end."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import orjson

from hitrun.schemas import compiled_validator
from hitrun.schemas.registry import latest_schema
from tests.integration.harness import (
    alerts,
    checkout,
    drain,
    payment,
    send,
    settings_of,
    start_worker,
    unique_env,
    wait_for,
)

LIVE_POLICY = {
    "HITRUN_PAYMENT_WINDOWS": "card=4s",
    "HITRUN_REMINDERS_AFTER_CHECKOUT": "1s",
    "HITRUN_REMINDERS_BEFORE_DEADLINE": "none",
    "HITRUN_REMINDER_COOLDOWN": "100ms",
    "HITRUN_QUIET_HOURS": "off",
    "HITRUN_LATE_PAYMENT_GRACE": "120s",
    "HITRUN_STRIKE_THRESHOLD": "3",
    "HITRUN_BLACKLIST_DURATION": "1h",
}


def test_checkout_reminder_expiry_strikes_blacklist_late_payment_reversal_unblacklist(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    env = unique_env(kafka_bootstrap, tmp_path, **LIVE_POLICY)
    settings = settings_of(env)
    worker = start_worker(env, tmp_path)
    customer = "cust-live-1"
    try:
        for n in (1, 2, 3):
            send(settings, settings.topic_checkouts, checkout(customer, f"o{n}"))
        wait_for(
            lambda: worker.metric("hitrun_alerts_total", type="customer_blacklisted") >= 1,
            30,
            "the third expiry to blacklist the customer",
        )

        reminders = alerts(settings, settings.topic_reminders, expected=1)
        reminded = {line["order_id"] for r in reminders for line in r["orders"]}
        assert reminded == {"o1", "o2", "o3"}
        strikes = alerts(settings, settings.topic_strikes, expected=3)
        expired = [s for s in strikes if s["type"] == "order_expired"]
        assert sorted(s["order_id"] for s in expired) == ["o1", "o2", "o3"]
        assert sorted(s["strike"]["count"] for s in expired) == [1, 2, 3]
        (listed,) = alerts(settings, settings.topic_blacklist, expected=1)
        assert listed["type"] == "customer_blacklisted"
        assert sorted(e["order_id"] for e in listed["evidence"]) == ["o1", "o2", "o3"]
        status = drain(kafka_bootstrap, settings.topic_blacklist_status, expected=1)
        assert [orjson.loads(r.value)["listings"][0]["scope"] for r in status] == ["shop-1"]

        send(settings, settings.topic_payments, payment(customer, "o2"))
        wait_for(
            lambda: worker.metric("hitrun_alerts_total", type="customer_unblacklisted") >= 1,
            20,
            "the late payment to unblacklist the customer",
        )
        strikes = alerts(settings, settings.topic_strikes, expected=4)
        (reversed_,) = [s for s in strikes if s["type"] == "strike_reversed"]
        assert (reversed_["order_id"], reversed_["strike_count"]) == ("o2", 2)
        events = alerts(settings, settings.topic_blacklist, expected=2)
        assert [e["type"] for e in events] == ["customer_blacklisted", "customer_unblacklisted"]
        assert events[1]["cause"] == "strike_reversed"
        # customer_unblacklisted.v2: the blacklisting it ends, and what is left of it.
        assert sorted(events[1]["blacklisting"]["order_ids"]) == ["o1", "o2", "o3"]
        assert events[1]["strikes_standing"] == {"count": 2, "threshold": 3}
        status = drain(kafka_bootstrap, settings.topic_blacklist_status, expected=2)
        assert status[-1].key == customer.encode() and status[-1].value is None  # tombstone

        everything = reminders + strikes + events
        for alert in everything:
            compiled_validator(latest_schema(alert["type"]))(alert)
            assert len(alert["alert_id"]) == 32
        assert len({a["alert_id"] for a in everything}) == len(everything)
        assert worker.metric("hitrun_open_checkouts") == 0
        assert worker.metric("hitrun_blacklisted_customers") == 0
    finally:
        worker.stop()


def test_a_reminder_fires_within_two_seconds_of_its_due_time_on_an_idle_stream(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    env = unique_env(
        kafka_bootstrap,
        tmp_path,
        **(
            LIVE_POLICY
            | {"HITRUN_PAYMENT_WINDOWS": "card=30s", "HITRUN_REMINDERS_AFTER_CHECKOUT": "3s"}
        ),
    )
    settings = settings_of(env)
    worker = start_worker(env, tmp_path)
    try:
        body = checkout("cust-idle", "o-idle")
        send(settings, settings.topic_checkouts, body)
        due = datetime.fromisoformat(str(body["occurred_at"])).timestamp() + 3
        (reminder,) = alerts(settings, settings.topic_reminders, expected=1, timeout=15)
        seen = time.time()
        assert reminder["order_id"] == "o-idle"
        assert seen - due < 2.0 + 0.5  # fired within 2 s; 0.5 s for the read-back itself
    finally:
        worker.stop()
