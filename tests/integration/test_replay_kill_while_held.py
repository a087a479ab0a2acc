"""Events the replay reorder buffer holds are not committed, so a killed worker loses none."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from hitrun.dev.worker import WorkerProcess
from hitrun.streams.config import Settings
from hitrun.streams.publisher import publish_watermarks
from tests.integration.harness import (
    committed_offsets,
    drain,
    send,
    settings_of,
    unique_env,
    wait_for,
)

CUSTOMERS = 30
START = datetime(2024, 3, 1, 10, 0, tzinfo=UTC)


def checkout_at(n: int) -> dict[str, object]:
    return {
        "type": "checkout_confirmed",
        "event_id": f"held-{n}-co",
        "customer_id": f"cust-held-{n}",
        "shop_id": "shop-1",
        "occurred_at": (START + timedelta(minutes=n)).isoformat(),
        "order_id": f"order-held-{n}",
        "total": {"amount_minor": 5000, "currency": "IDR"},
        "payment_method": "card",
    }


def committed_total(settings: Settings) -> int:
    offsets = asyncio.run(committed_offsets(settings))
    return sum(offset for tp, offset in offsets.items() if tp.topic in settings.input_topics)


def test_a_worker_killed_while_its_reorder_buffer_holds_events_loses_none_of_them(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    env = unique_env(
        kafka_bootstrap,
        tmp_path,
        HITRUN_CLOCK_MODE="replay",
        HITRUN_PARTITIONS="2",
        HITRUN_SESSION_TIMEOUT="6s",
        HITRUN_STRIKE_THRESHOLD="100",
    )
    settings = settings_of(env)
    first = WorkerProcess(env, tmp_path / "first.log").start()
    try:
        # Checkouts only: the other input topics have not been read past them,
        # so the reorder buffer holds every one of them.
        for n in range(CUSTOMERS):
            send(settings, settings.topic_checkouts, checkout_at(n))
        wait_for(
            lambda: first.metric("hitrun_held_events") == CUSTOMERS,
            30,
            "the worker to read and hold every checkout",
        )
        assert first.metric("hitrun_alerts_total") == 0
        # Several commit intervals pass; a held event's offset is never committed.
        time.sleep(1.0)
        assert first.metric("hitrun_held_events") == CUSTOMERS
        assert committed_total(settings) == 0
    finally:
        first.kill()

    second = WorkerProcess(env, tmp_path / "second.log").start()
    try:
        asyncio.run(publish_watermarks(settings, START + timedelta(days=400), source="test"))
        wait_for(
            lambda: second.metric("hitrun_alerts_total", type="order_expired") >= CUSTOMERS,
            60,
            "every held checkout to be applied and expire after the restart",
        )
        expired = drain(kafka_bootstrap, settings.topic_strikes, expected=CUSTOMERS)
    finally:
        second.stop()
    orders = {
        orjson.loads(r.value)["order_id"]
        for r in expired
        if orjson.loads(r.value)["type"] == "order_expired"
    }
    assert orders == {f"order-held-{n}" for n in range(CUSTOMERS)}
