"""Consumer lag per owned input partition: end offset minus the group's committed offset."""

from __future__ import annotations

import logging
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from hitrun.streams.app import app, metrics, settings
from hitrun.streams.kafka_auth import client_options

log = logging.getLogger(__name__)
_admin: AIOKafkaAdminClient | None = None


async def _admin_client() -> AIOKafkaAdminClient:
    global _admin
    if _admin is None:
        client = AIOKafkaAdminClient(**client_options(settings))
        await client.start()
        _admin = client
    return _admin


@app.timer(interval=5.0)
async def measure_consumer_lag() -> None:
    await refresh_consumer_lag()


async def refresh_consumer_lag() -> None:
    """Refresh hitrun_consumer_lag_messages for the input partitions this worker owns."""
    from hitrun.streams.web import readiness  # the readiness rule lives with the /readyz view

    if app.should_stop:  # the admin client is closed, or about to be
        return
    metrics.ready.set(1 if readiness()[0] else 0)
    watched = {*settings.input_topics, settings.reroute_topic}
    owned = sorted(tp for tp in app.assignor.assigned_actives() if tp.topic in watched)
    if not owned:
        metrics.consumer_lag.clear()
        return
    try:
        ends = await app.consumer.highwaters(*owned)
        admin = await _admin_client()
        committed = await admin.list_consumer_group_offsets(settings.app_id, partitions=owned)
    except KafkaError as exc:
        # A transient broker error skips one refresh; the next one catches up.
        log.warning("consumer lag not measured: %r", exc)
        return
    metrics.consumer_lag.clear()
    for tp in owned:
        offset = committed.get(tp)
        done = offset.offset if offset is not None and offset.offset >= 0 else 0
        lag = max(ends.get(tp, 0) - done, 0)
        metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(lag)


@app.on_before_shutdown.connect  # type: ignore[arg-type]  # mode types the sender positional-only
async def close_admin_client(sender: Any, *args: Any, signal: Any, **kwargs: Any) -> None:
    """Close the admin client: its connection's tasks otherwise kept the stopping worker
    waiting its last second (mode gathers every task left, then cancels them)."""
    global _admin
    client, _admin = _admin, None
    if client is not None:
        await client.close()
