"""A worker that was down while events piled up reads the backlog as if it had never stopped:
no event is late, no deadline fires before the payments in the backlog are read."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from hitrun.dev.chaos import (
    Group,
    Outputs,
    compare,
    live_input,
    read_outputs,
    run_env,
    wait_until_done,
)
from hitrun.streams.config import Settings
from hitrun.streams.publisher import publish
from hitrun.streams.simulate import SimMessage
from hitrun.streams.topics import ensure_topics
from tests.integration.harness import (
    checkout,
    drain,
    own_run,
    payment,
    settings_of,
    start_worker,
    unique_env,
    wait_for,
)


def test_after_downtime_paid_orders_never_expire_and_unpaid_ones_expire_once_read(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    # Ticks at their default interval: wall time moves a partition's clock only
    # once every input topic of it is read to its end.
    env = unique_env(kafka_bootstrap, tmp_path)
    settings = settings_of(env)
    two_hours_ago = datetime.now(UTC) - timedelta(hours=2)

    def at(body: dict[str, object], minutes: int) -> dict[str, object]:
        return {**body, "occurred_at": (two_hours_ago + timedelta(minutes=minutes)).isoformat()}

    customers = [f"backlog-{n}" for n in range(40)]
    # While the worker is down: a card checkout each (due an hour later); the
    # even customers pay 20 minutes after it. The payments are sent last.
    checkouts = [at(checkout(c, f"o-{c}"), n) for n, c in enumerate(customers)]
    payments = [at(payment(c, f"o-{c}"), n + 20) for n, c in enumerate(customers) if n % 2 == 0]
    asyncio.run(ensure_topics(settings))
    asyncio.run(publish(settings, [message(b, "checkouts") for b in checkouts]))
    asyncio.run(publish(settings, [message(b, "payments") for b in payments]))

    worker = start_worker(env, tmp_path)
    unpaid = {c for n, c in enumerate(customers) if n % 2 == 1}

    def struck() -> set[str]:
        """Customers with an order_expired alert on the strikes topic so far."""
        records = drain(kafka_bootstrap, settings.topic_strikes, 2 * len(unpaid), timeout=2)
        alerts = [orjson.loads(r.value) for r in records if r.value is not None]
        return {a["customer_id"] for a in alerts if a["type"] == "order_expired"}

    try:
        # Counted when applied, published when the batch is confirmed: wait for
        # the alerts themselves before the worker is stopped.
        wait_for(lambda: struck() >= unpaid, 60, "the unpaid orders to expire")
    finally:
        worker.stop()
    assert struck() == unpaid
    letters = drain(kafka_bootstrap, settings.topic_dead_letters, 0, timeout=2)
    assert letters == []


def message(body: dict[str, object], role: str) -> SimMessage:
    customer_id = str(body["customer_id"])
    return SimMessage(
        role,
        customer_id.encode(),
        orjson.dumps(body),
        datetime.fromisoformat(str(body["occurred_at"])),
        customer_id,
        "test",
    )


def test_a_backlog_of_10000_events_gives_the_alerts_of_a_worker_that_never_stopped(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    # Simulated shop traffic, 200 days ago to a minute ago: the four input
    # topics carry it at different rates (checkouts most, inquiries least).
    traffic = live_input(10_000, seed=21)

    def one_run(label: str, backlog: bool) -> Outputs:
        env = own_run(run_env(kafka_bootstrap, tmp_path, "live", label))
        settings = Settings.from_env(env)
        asyncio.run(ensure_topics(settings))
        group = Group(env, tmp_path, 1)
        try:
            if backlog:  # everything arrives while the worker is down
                sent = asyncio.run(publish(settings, traffic)).sent
                group.start()
            else:  # the worker reads the events as they are written, in order
                group.start()
                sent = asyncio.run(publish(settings, traffic, one_at_a_time=True)).sent
            wait_until_done(settings, timeout=300)
            outputs = asyncio.run(read_outputs(settings))
            outputs.inputs = sent
            return outputs
        finally:
            group.stop()

    never_stopped = one_run("running", backlog=False)
    after_downtime = one_run("backlog", backlog=True)
    report = compare("backlog", never_stopped, after_downtime, kills=0, outages=0)
    print(report.line(), *report.examples, sep="\n")
    assert "late_event" not in after_downtime.reasons
    assert report.applied + report.dead_lettered == report.inputs
    assert report.equal, report.examples
    assert report.clean_alerts >= 500 and len(report.alert_types) >= 3
