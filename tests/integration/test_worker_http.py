"""The worker's HTTP side: customer inspection, and admin actions guarded by a bearer token."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import orjson

from dev.worker import WorkerProcess
from tests.integration.harness import (
    drain,
    payment,
    settings_of,
    start_worker,
    unique_env,
    wait_for,
)
from tests.integration.test_unpaid_live import checkout, send

TOKEN = "s3cret-admin-token"


def post(worker: WorkerProcess, path: str, body: dict[str, object], token: str | None) -> int:
    request = urllib.request.Request(
        worker.url + path,
        data=orjson.dumps(body),
        method="POST",
        headers={"Content-Type": "application/json"}
        | ({"Authorization": f"Bearer {token}"} if token else {}),
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


ACTION = {
    "customer_id": "cust-w1",
    "shop_id": "shop-1",
    "actor": "ops:alice",
    "reason": "fraud ring",
}


def test_customer_view_and_token_guarded_admin_blacklist(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    env = unique_env(kafka_bootstrap, tmp_path, HITRUN_ADMIN_TOKEN=TOKEN, HITRUN_QUIET_HOURS="off")
    settings = settings_of(env)
    worker = start_worker(env, tmp_path)
    try:
        assert worker.get("/customers/nobody")[0] == 404
        body = checkout("cust-w1", "o-w1") | {"payment_method": "bank_transfer"}
        send(settings, settings.topic_checkouts, body)
        wait_for(lambda: worker.get("/customers/cust-w1")[0] == 200, 15, "the customer to appear")
        view = orjson.loads(worker.get("/customers/cust-w1")[1])
        (order,) = view["open_orders"]
        assert order["order_id"] == "o-w1"
        assert order["deadline"] and order["next_reminder_at"]
        assert view["blacklist"] == []

        assert post(worker, "/admin/blacklist", ACTION, token=None) == 401
        assert post(worker, "/admin/blacklist", ACTION, token="wrong") == 401
        assert post(worker, "/admin/blacklist", {"customer_id": "x"}, token=TOKEN) == 400
        assert post(worker, "/admin/blacklist", ACTION, token=TOKEN) == 202
        wait_for(
            lambda: worker.metric("hitrun_alerts_total", type="customer_blacklisted") == 1,
            15,
            "the manual blacklisting",
        )
        (event,) = [
            orjson.loads(r.value) for r in drain(kafka_bootstrap, settings.topic_blacklist, 1)
        ]
        assert (event["actor"], event["reason"], event["scope"]) == (
            "ops:alice",
            "fraud ring",
            "shop-1",
        )
        view = orjson.loads(worker.get("/customers/cust-w1")[1])
        assert [entry["actor"] for entry in view["blacklist"]] == ["ops:alice"]
    finally:
        worker.stop()


def test_admin_actions_are_refused_when_no_token_is_configured(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    env = unique_env(kafka_bootstrap, tmp_path)
    worker = start_worker(env, tmp_path)
    try:
        assert post(worker, "/admin/blacklist", ACTION, token="anything") == 403
        assert post(worker, "/admin/unblacklist", ACTION, token="") == 403
    finally:
        worker.stop()


def test_the_customer_view_shows_the_state_as_of_the_stream_clock(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    # A paid order opens a retention window (90 days), so the strike of the
    # expired order is forgotten lazily, at the customer's next touch: the
    # view must not show it once its window has passed on the stream clock.
    env = unique_env(
        kafka_bootstrap,
        tmp_path,
        HITRUN_PAYMENT_WINDOWS="card=1s",
        HITRUN_REMINDERS_AFTER_CHECKOUT="none",
        HITRUN_REMINDERS_BEFORE_DEADLINE="none",
        HITRUN_QUIET_HOURS="off",
        HITRUN_LATE_PAYMENT_GRACE="1s",
        HITRUN_STRIKE_WINDOW="6s",
    )
    settings = settings_of(env)
    worker = start_worker(env, tmp_path)
    customer = "cust-w2"
    try:
        send(settings, settings.topic_checkouts, checkout(customer, "o-paid"))
        send(settings, settings.topic_payments, payment(customer, "o-paid"))
        send(settings, settings.topic_checkouts, checkout(customer, "o-unpaid"))
        wait_for(
            lambda: worker.metric("hitrun_alerts_total", type="order_expired") == 1,
            20,
            "the unpaid order's strike",
        )
        view = orjson.loads(worker.get(f"/customers/{customer}")[1])
        assert [strike["order_id"] for strike in view["strikes"]] == ["o-unpaid"]
        wait_for(
            lambda: orjson.loads(worker.get(f"/customers/{customer}")[1])["strikes"] == [],
            20,
            "the strike to leave the view once its window has passed",
        )
        view = orjson.loads(worker.get(f"/customers/{customer}")[1])
        assert view["retention"]["phase"] == "window"
    finally:
        worker.stop()
