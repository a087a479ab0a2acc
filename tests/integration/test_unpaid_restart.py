"""A worker killed with deadlines open recovers its state and fires each alert once per id."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import orjson

from hitrun.dev.worker import WorkerProcess
from tests.integration.harness import drain, settings_of, unique_env, wait_for
from tests.integration.test_unpaid_live import LIVE_POLICY, checkout, send

CUSTOMERS = 20


def test_killed_worker_restarts_from_the_changelog_and_fires_each_alert_once_per_id(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    env = unique_env(
        kafka_bootstrap,
        tmp_path,
        **(
            LIVE_POLICY
            | {
                "HITRUN_PAYMENT_WINDOWS": "card=12s",
                "HITRUN_REMINDERS_AFTER_CHECKOUT": "6s",
                "HITRUN_STRIKE_THRESHOLD": "100",
                "HITRUN_SESSION_TIMEOUT": "6s",
            }
        ),
    )
    settings = settings_of(env)
    first = WorkerProcess(env, tmp_path / "first.log").start()
    try:
        for n in range(CUSTOMERS):
            send(settings, settings.topic_checkouts, checkout(f"cust-r{n}", f"order-{n}"))
        wait_for(
            lambda: first.metric("hitrun_input_events_total", outcome="processed") >= CUSTOMERS,
            20,
            "the checkouts to be processed",
        )
        assert first.metric("hitrun_open_checkouts") == CUSTOMERS
        time.sleep(1.0)  # a few commit intervals: the state is in the changelog
    finally:
        first.kill()  # SIGKILL: no clean shutdown, no final commit

    second = WorkerProcess(env, tmp_path / "second.log").start()
    try:
        wait_for(
            lambda: second.metric("hitrun_alerts_total", type="order_expired") >= CUSTOMERS,
            40,
            "every order to expire after the restart",
        )
        reminders = drain(kafka_bootstrap, settings.topic_reminders, expected=CUSTOMERS)
        strikes = drain(kafka_bootstrap, settings.topic_strikes, expected=CUSTOMERS)
    finally:
        second.stop()

    # The first worker died before any reminder was due (+6 s), so every reminder
    # below was fired by the second worker from state it recovered from the changelog.
    reminded = Counter(orjson.loads(r.value)["order_id"] for r in reminders)
    expired = Counter(orjson.loads(r.value)["order_id"] for r in strikes)
    orders = {f"order-{n}" for n in range(CUSTOMERS)}
    assert set(reminded) == orders
    assert set(expired) == orders
    # Duplicates may only be re-sends of the same alert: one alert id per order and kind.
    ids = {orjson.loads(r.value)["alert_id"] for r in reminders + strikes}
    assert len(ids) == 2 * CUSTOMERS
