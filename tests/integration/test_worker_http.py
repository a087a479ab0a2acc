"""The worker's HTTP side: customer inspection, and admin actions guarded by a bearer token."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import orjson

from dev.worker import WorkerProcess
from tests.integration.harness import drain, settings_of, start_worker, unique_env, wait_for
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
