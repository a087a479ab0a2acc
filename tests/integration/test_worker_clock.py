"""A live worker whose own clock is wrong: the broker's clock keeps its deadlines.

The worker runs under libfaketime (Debian's `faketime` package), its wall clock
two hours ahead or behind; its monotonic clock is left alone, as a stepped or
misconfigured system clock leaves it. The producer and the broker keep the
right time. An order paid within its window must not expire, an unpaid one
must expire on time, and no event may be refused as coming from the future.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import pytest

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

# Debian's libfaketime (`make faketime`), under the machine's multiarch directory.
FAKETIMES = sorted(Path("/usr/lib").glob("*/faketime/libfaketimeMT.so.1"))

POLICY = {
    "HITRUN_PAYMENT_WINDOWS": "card=5s",
    "HITRUN_REMINDERS_AFTER_CHECKOUT": "none",
    "HITRUN_REMINDERS_BEFORE_DEADLINE": "none",
    "HITRUN_QUIET_HOURS": "off",
    "HITRUN_LATE_PAYMENT_GRACE": "1h",
}


def wrong_clock(offset: str) -> dict[str, str]:
    """Environment running a process with its wall clock `offset` off (e.g. "+2h")."""
    if not FAKETIMES:
        pytest.fail("libfaketime is missing: `make faketime` installs Debian's package")
    return {
        "LD_PRELOAD": str(FAKETIMES[0]),
        "FAKETIME": offset,
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }


@pytest.mark.parametrize("offset", ["+2h", "-2h"])
def test_a_worker_with_a_wrong_clock_expires_on_the_brokers_time(
    kafka_bootstrap: str, tmp_path: Path, offset: str
) -> None:
    env = unique_env(kafka_bootstrap, tmp_path, **POLICY)
    settings = settings_of(env)
    worker = start_worker({**env, **wrong_clock(offset)}, tmp_path)
    try:
        assert "faketime" in worker.env["LD_PRELOAD"]
        paid, unpaid = checkout("cust-pays", "o-paid"), checkout("cust-gone", "o-gone")
        send(settings, settings.topic_checkouts, paid)
        send(settings, settings.topic_checkouts, unpaid)
        wait_for(
            lambda: worker.metric("hitrun_input_events_total", type="checkout_confirmed") >= 2,
            20,
            "both checkouts to be read",
        )
        assert worker.metric("hitrun_dead_letters_total") == 0
        time.sleep(2.0)  # ticks come every second: a wrong clock has had its chance
        send(settings, settings.topic_payments, payment("cust-pays", "o-paid"))
        (expired,) = alerts(settings, settings.topic_strikes, expected=1, timeout=30)
        seen = time.time()
        assert (expired["type"], expired["order_id"]) == ("order_expired", "o-gone")
        due = datetime.fromisoformat(str(unpaid["occurred_at"])).timestamp() + 5
        # On the broker's time: not before the deadline, and not two hours after it.
        assert datetime.fromisoformat(expired["occurred_at"]).timestamp() == pytest.approx(
            due, abs=1
        )
        assert seen - due < 10
        wait_for(
            lambda: worker.metric("hitrun_open_checkouts") == 0,
            20,
            "the payment to close the paid order",
        )
        time.sleep(1.0)
        assert worker.metric("hitrun_alerts_total", type="order_expired") == 1
        # The worker says how far off its clock is.
        offset_s = worker.metric("hitrun_wall_clock_offset_seconds")
        assert offset_s == pytest.approx(7200 if offset == "+2h" else -7200, abs=30)
    finally:
        worker.stop()
