"""Workers share partitions: one joining takes some with their state, one leaving hands back."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import orjson

from hitrun.dev.worker import WorkerProcess
from tests.integration.harness import drain, settings_of, unique_env, wait_for
from tests.integration.test_unpaid_live import LIVE_POLICY, checkout, send

CUSTOMERS = 24


def test_deadlines_fire_once_across_a_worker_joining_and_another_leaving(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    env = unique_env(
        kafka_bootstrap,
        tmp_path,
        **(
            LIVE_POLICY
            | {
                "HITRUN_PAYMENT_WINDOWS": "card=25s",
                "HITRUN_REMINDERS_AFTER_CHECKOUT": "12s",
                "HITRUN_STRIKE_THRESHOLD": "100",
                "HITRUN_SESSION_TIMEOUT": "6s",
            }
        ),
    )
    settings = settings_of(env)
    first = WorkerProcess(
        env | {"HITRUN_DATA_DIR": str(tmp_path / "a")}, tmp_path / "a.log"
    ).start()
    second = WorkerProcess(env | {"HITRUN_DATA_DIR": str(tmp_path / "b")}, tmp_path / "b.log")
    try:
        for n in range(CUSTOMERS):
            send(settings, settings.topic_checkouts, checkout(f"cust-s{n}", f"order-s{n}"))
        wait_for(
            lambda: first.metric("hitrun_input_events_total", outcome="processed") >= CUSTOMERS,
            20,
            "the first worker to take every checkout",
        )
        second.start()  # joins the group: some partitions move to it, with their state
        # Due 12 s after the checkouts: the first must not have fired them all already.
        before = first.metric("hitrun_alerts_total", type="payment_reminder")
        assert before < CUSTOMERS, "the second worker joined after every reminder was due"
        try:
            wait_for(
                lambda: second.metric("hitrun_alerts_total", type="payment_reminder") > 0,
                40,
                "the joining worker to fire reminders for the partitions it took over",
            )
        except AssertionError as exc:
            fired = first.metric("hitrun_alerts_total", type="payment_reminder")
            raise AssertionError(
                f"{exc}; the first worker fired {before:.0f} reminders before the second was "
                f"ready, {fired:.0f} by now\nfirst:\n{first.log_tail(30)}\n"
                f"second:\n{second.log_tail(60)}"
            ) from exc
        first.stop()  # leaves cleanly: its partitions move to the second worker
        wait_for(
            lambda: second.metric("hitrun_alerts_total", type="order_expired") >= CUSTOMERS,
            60,
            "every order to expire on the remaining worker",
        )
    finally:
        first.stop()
        second.stop()

    reminders = drain(kafka_bootstrap, settings.topic_reminders, expected=CUSTOMERS)
    strikes = drain(kafka_bootstrap, settings.topic_strikes, expected=CUSTOMERS)
    orders = {f"order-s{n}" for n in range(CUSTOMERS)}
    reminded = Counter(
        line["order_id"] for r in reminders for line in orjson.loads(r.value)["orders"]
    )
    expired = Counter(orjson.loads(r.value)["order_id"] for r in strikes)
    assert set(reminded) == orders
    assert set(expired) == orders
    ids = {orjson.loads(r.value)["alert_id"] for r in strikes}
    assert len(ids) == CUSTOMERS
