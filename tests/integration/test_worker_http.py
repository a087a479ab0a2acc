"""The worker's HTTP side: named tokens with roles, signed admin commands, erasure."""

from __future__ import annotations

import http.client
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from hitrun.dev.worker import WorkerProcess
from tests.integration.harness import (
    OPERATOR_TOKEN,
    SUPPORT_TOKEN,
    alerts,
    drain,
    payment,
    send,
    settings_of,
    start_worker,
    unique_env,
    wait_for,
)
from tests.integration.test_client_tools import hitrun
from tests.integration.test_unpaid_live import checkout


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


def view_of(worker: WorkerProcess, customer: str) -> dict:
    return dict(orjson.loads(worker.get(f"/customers/{customer}", SUPPORT_TOKEN)[1]))


def raw_get(worker: WorkerProcess, path: str, *headers: tuple[str, bytes]) -> int:
    """GET with header values sent as the exact bytes given."""
    connection = http.client.HTTPConnection("127.0.0.1", worker.web_port, timeout=5)
    try:
        connection.putrequest("GET", path)
        for name, value in headers:
            connection.putheader(name, value)
        connection.endheaders()
        return connection.getresponse().status
    finally:
        connection.close()


ACTION = {
    "customer_id": "cust-w1",
    "shop_id": "shop-1",
    "reason": "fraud ring",
    "note": "ticket 4711",
}
# Personal fields of the run's input: none may appear in the worker's log.
PERSONAL = {
    "total": {"amount_minor": 987_654_321, "currency": "IDR"},
    "shipping_address_hash": "shipaddr0f7e1c9b2d",
    "customer_address_hash": "custaddr5a3e8d1f6c",
    "promotion_code": "PROMO-PERSONAL-9931",
}


def test_tokens_roles_and_the_recorded_actor(kafka_bootstrap: str, tmp_path: Path) -> None:
    env = unique_env(kafka_bootstrap, tmp_path, HITRUN_QUIET_HOURS="off")
    settings = settings_of(env)
    worker = start_worker(env, tmp_path)
    try:
        body = checkout("cust-w1", "o-w1") | {"payment_method": "bank_transfer"} | PERSONAL
        send(settings, settings.topic_checkouts, body)
        wait_for(
            lambda: worker.get("/customers/cust-w1", SUPPORT_TOKEN)[0] == 200,
            15,
            "the customer to appear",
        )
        # Reading a customer needs a token; garbage of any kind is a 401, never a 500.
        assert worker.get("/customers/cust-w1")[0] == 401
        assert worker.get("/customers/nobody")[0] == 401
        for value in (
            b"Bearer t\xc3\xb6k\xc3\xa9n",
            b"Bearer \xff\xfe\xfd",
            b"Basic " + OPERATOR_TOKEN.encode(),
            b"Bearer " + SUPPORT_TOKEN.encode() + b"x",
            b"Bearer",
            b"Bearer \x80" + b"\xaa" * 8000,
        ):
            assert raw_get(worker, "/customers/cust-w1", ("Authorization", value)) == 401, value
        # Control characters are not HTTP: the server's parser refuses the request itself.
        bad = b"Bearer " + OPERATOR_TOKEN.encode() + b"\x01"
        assert raw_get(worker, "/customers/cust-w1", ("Authorization", bad)) == 400
        two = ("Authorization", f"Bearer {SUPPORT_TOKEN}".encode())
        assert raw_get(worker, "/customers/cust-w1", two, two) == 401
        assert worker.get("/customers/nobody", SUPPORT_TOKEN)[0] == 404
        status, view = worker.get("/customers/cust-w1", SUPPORT_TOKEN)
        assert status == 200
        (order,) = orjson.loads(view)["open_orders"]
        assert order["order_id"] == "o-w1"
        assert worker.get("/customers/cust-w1", OPERATOR_TOKEN)[0] == 200

        # Admin actions: an operator's, signed as theirs; the client cannot name the actor.
        assert post(worker, "/admin/blacklist", ACTION, token=None) == 401
        assert post(worker, "/admin/blacklist", ACTION, token="wrong") == 401
        assert post(worker, "/admin/blacklist", ACTION, token=SUPPORT_TOKEN) == 403
        forged = ACTION | {"actor": "ceo@company"}
        assert post(worker, "/admin/blacklist", forged, token=OPERATOR_TOKEN) == 400
        assert post(worker, "/admin/blacklist", {"customer_id": "x"}, OPERATOR_TOKEN) == 400
        assert post(worker, "/admin/blacklist", ACTION, token=OPERATOR_TOKEN) == 202
        (event,) = alerts(settings, settings.topic_blacklist, 1)
        assert (event["actor"], event["note"], event["reason"], event["scope"]) == (
            "ops-alice",
            "ticket 4711",
            "fraud ring",
            "shop-1",
        )
        view = orjson.loads(worker.get("/customers/cust-w1", SUPPORT_TOKEN)[1])
        assert [entry["actor"] for entry in view["blacklist"]] == ["ops-alice"]
        # A malformed message full of personal fields, for the log scan below.
        malformed = PERSONAL | {"type": "checkout_confirmed", "customer_id": "cust-w1"}
        send(settings, settings.topic_checkouts, malformed)
        wait_for(
            lambda: worker.metric("hitrun_dead_letters_total", reason="schema_violation") == 1,
            15,
            "the malformed message's dead letter",
        )
    finally:
        worker.stop()
    log = (tmp_path / "worker.log").read_text()
    assert "customer view read by support-bob: customer cust-w1" in log
    assert "refused a malformed HTTP request (400)" in log and "Traceback" not in log
    assert "admin blacklist of customer cust-w1 requested by ops-alice" in log
    for secret in (
        "987654321",
        PERSONAL["shipping_address_hash"],
        PERSONAL["customer_address_hash"],
        PERSONAL["promotion_code"],
        "ticket 4711",
        "fraud ring",
        OPERATOR_TOKEN,
        SUPPORT_TOKEN,
        env["HITRUN_ADMIN_KEY"],
    ):
        assert secret not in log, secret


def test_a_producer_without_the_key_changes_no_blacklist(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    env = unique_env(kafka_bootstrap, tmp_path)
    settings = settings_of(env)
    worker = start_worker(env, tmp_path)
    victim = "cust-victim"
    unsigned = {
        "type": "admin_action_requested",
        "event_id": "adm-evil-1",
        "customer_id": victim,
        "shop_id": "shop-1",
        "occurred_at": checkout(victim, "o")["occurred_at"],
        "action": "blacklist",
        "scope": "platform",
        "actor": "nobody",
        "reason": "because",
        "duration_days": 3650,
    }
    guessed = unsigned | {
        "event_id": "adm-evil-2",
        "signer": "nobody",
        "expires_at": "2199-01-01T00:00:00Z",
        "signature": "ab" * 32,
    }
    try:
        send(settings, settings.topic_checkouts, checkout(victim, "o-v1"))
        send(settings, settings.topic_admin, unsigned)
        send(settings, settings.topic_admin, guessed)
        send(settings, settings.reroute_topic, unsigned | {"event_id": "adm-evil-3"})
        wait_for(
            lambda: (
                worker.metric("hitrun_dead_letters_total", reason="unauthenticated") == 2
                and worker.metric("hitrun_dead_letters_total", reason="wrong_topic") == 1
            ),
            20,
            "the forged commands' dead letters",
        )
        letters = [
            orjson.loads(r.value) for r in drain(kafka_bootstrap, settings.topic_dead_letters, 3)
        ]
        assert sorted(d["reason"] for d in letters) == [
            "unauthenticated",
            "unauthenticated",
            "wrong_topic",
        ]
        view = orjson.loads(worker.get(f"/customers/{victim}", SUPPORT_TOKEN)[1])
        assert view["blacklist"] == []
        assert worker.metric("hitrun_alerts_total", type="customer_blacklisted") == 0
        assert drain(kafka_bootstrap, settings.topic_blacklist_status, 0, timeout=1) == []
    finally:
        worker.stop()


def test_erasure_leaves_nothing_of_the_customer(kafka_bootstrap: str, tmp_path: Path) -> None:
    env = unique_env(kafka_bootstrap, tmp_path, HITRUN_QUIET_HOURS="off")
    settings = settings_of(env)
    worker = start_worker(env, tmp_path)
    customer = "cust-erased"
    try:
        send(settings, settings.topic_checkouts, checkout(customer, "o-e1"))
        send(settings, settings.topic_payments, payment(customer, "o-e1"))
        send(settings, settings.topic_checkouts, checkout(customer, "o-e2"))
        # An operator who scripts signs with the shared key, under their own name.
        done = hitrun(
            env,
            "admin",
            "blacklist",
            customer,
            "--shop",
            "shop-1",
            "--reason",
            "r",
            "--as",
            "carol",
        )
        assert done.returncode == 0, done.stderr
        (event,) = alerts(settings, settings.topic_blacklist, 1)
        assert event["actor"] == "carol"
        view = orjson.loads(worker.get(f"/customers/{customer}", SUPPORT_TOKEN)[1])
        assert view["blacklist"] and view["open_orders"] and view["retention"]["phase"] == "window"

        erase = {"customer_id": customer, "reason": "data-protection request 88"}
        assert post(worker, "/admin/erase", erase, token=SUPPORT_TOKEN) == 403
        assert post(worker, "/admin/erase", erase, token=OPERATOR_TOKEN) == 202
        (erased,) = alerts(settings, settings.topic_erasures, 1)
        assert (erased["customer_id"], erased["requested_by"]) == (customer, "ops-alice")
        assert worker.get(f"/customers/{customer}", SUPPORT_TOKEN)[0] == 404
        changelog = settings.changelog_topic
        key = customer.encode()
        for topic in (changelog, settings.topic_blacklist_status):
            latest = [r for r in drain(kafka_bootstrap, topic, 0, timeout=2) if r.key == key]
            assert latest and latest[-1].value is None, topic  # a tombstone
        wait_for(lambda: worker.metric("hitrun_customers_in_state") == 0, 10, "the customer gauge")
    finally:
        worker.stop()
    # A restarted worker recovers the table from the changelog: still nothing.
    worker = start_worker(env, tmp_path, name="worker-again")
    try:
        assert worker.get(f"/customers/{customer}", SUPPORT_TOKEN)[0] == 404
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
        # Long enough that the view is read before the window passes, however late a
        # loaded machine fires the deadline (at 6s, a CI run once read it after).
        HITRUN_STRIKE_WINDOW="20s",
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
        # The alert is counted when the batch applies it; its new state reaches the
        # store the view reads once the broker has confirmed the batch's records.
        wait_for(
            lambda: [s["order_id"] for s in view_of(worker, customer)["strikes"]] == ["o-unpaid"],
            10,
            "the strike in the view",
        )
        wait_for(
            lambda: (
                orjson.loads(worker.get(f"/customers/{customer}", SUPPORT_TOKEN)[1])["strikes"]
                == []
            ),
            45,
            "the strike to leave the view once its window has passed",
        )
        view = orjson.loads(worker.get(f"/customers/{customer}", SUPPORT_TOKEN)[1])
        assert view["retention"]["phase"] == "window"
    finally:
        worker.stop()


def test_why_a_customer_is_blacklisted_over_http_and_from_the_command_line(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    env = unique_env(kafka_bootstrap, tmp_path)
    settings = settings_of(env)
    three_hours_ago = datetime.now(UTC) - timedelta(hours=3)
    orders = ["o-why-1", "o-why-2", "o-why-3"]
    worker = start_worker(env, tmp_path)
    try:
        # Three card orders (an hour to pay each), unpaid: three strikes, the blacklist.
        for n, order in enumerate(orders):
            at = (three_hours_ago + timedelta(minutes=n)).isoformat()
            send(
                settings,
                settings.topic_checkouts,
                checkout("cust-why", order) | {"occurred_at": at},
            )
        wait_for(
            lambda: (
                orjson.loads(worker.get("/customers/cust-why/why", SUPPORT_TOKEN)[1]).get(
                    "blacklisted_on"
                )
                == ["shop-1"]
            ),
            30,
            "the customer to be blacklisted",
        )
        assert worker.get("/customers/cust-why/why")[0] == 401
        assert worker.get("/customers/nobody/why", SUPPORT_TOKEN)[0] == 404
        trail = orjson.loads(worker.get("/customers/cust-why/why", OPERATOR_TOKEN)[1])
        cli = hitrun(env, "why", "cust-why", "--url", worker.url, "--token", SUPPORT_TOKEN)
        unknown = hitrun(env, "why", "nobody", "--url", worker.url, "--token", SUPPORT_TOKEN)
        refused = hitrun(env, "why", "cust-why", "--url", worker.url, "--token", "wrong")
    finally:
        worker.stop()
    strikes = [d for d in trail["decisions"] if d["decision"] == "strike"]
    assert [(s["order_id"], s["reason"], s["count"]) for s in strikes] == [
        ("o-why-1", "unpaid", 1),
        ("o-why-2", "unpaid", 2),
        ("o-why-3", "unpaid", 3),
    ]
    (listing,) = [d for d in trail["decisions"] if d["decision"] == "blacklisted"]
    assert listing["evidence"] == orders
    assert listing["actor"] == "hitrun" and not listing["manual"]
    assert [d["decision"] for d in trail["decisions"]][-1] == "blacklisted"
    policy = trail["policies"]["shop-1"]
    assert (policy["strike_threshold"], policy["strike_window"]) == (3, "90d")
    assert policy["payment_windows"]["card"] == "1h"
    assert cli.returncode == 0, cli.stderr
    assert cli.stdout.splitlines()[0] == "customer cust-why: blacklisted on shop shop-1"
    for order in orders:
        assert f"order {order} at shop-1 was not paid by its payment deadline" in cli.stdout
    assert "after 3 strikes within 90d: orders o-why-1, o-why-2, o-why-3" in cli.stdout
    assert "policy of shop-1: 3 strikes within 90d" in cli.stdout
    assert unknown.returncode == 1 and "no state for customer nobody" in unknown.stderr
    assert refused.returncode == 2 and "401" in refused.stderr
