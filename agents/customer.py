"""The customer agent: the one consumer of every input topic; decodes, guards and dispatches."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime

import faust

from schemas.records import InputEvent
from streams.app import app, dead_letter_topic, ingest_rules, input_topic, metrics, reroute_topic
from streams.codec import encode
from streams.ingest import Accepted, RawMessage, Rejected, Reroute, Verdict, classify

log = logging.getLogger(__name__)


def raw_message(message: faust.types.Message) -> RawMessage:
    """hitrun's view of a Faust message."""
    raw = message.headers or ()
    headers = tuple(raw.items()) if isinstance(raw, Mapping) else tuple(raw)
    return RawMessage(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        timestamp_ms=int(message.timestamp * 1000) if message.timestamp else None,
        key=message.key,
        value=message.value,
        headers=headers,
    )


async def dispatch(msg: RawMessage, verdict: Verdict) -> None:
    """Carry out a verdict: process the event, reroute it, or dead-letter it."""
    if isinstance(verdict, Accepted):
        await process(verdict.event, msg)
    elif isinstance(verdict, Reroute):
        await reroute_topic.send(
            key=msg.key, value=msg.value, partition=verdict.partition, headers=list(verdict.headers)
        )
        metrics.input_events.labels(msg.topic, "unknown", "rerouted").inc()
    elif isinstance(verdict, Rejected):
        letter = verdict.dead_letter
        await dead_letter_topic.send(key=msg.key, value=encode(letter))
        metrics.input_events.labels(msg.topic, "unknown", "dead_lettered").inc()
        metrics.dead_letters.labels(letter.reason).inc()
        log.warning(
            "dead letter %s from %s[%d]@%d: %s",
            letter.reason,
            letter.source.topic,
            letter.source.partition,
            letter.source.offset,
            letter.detail,
        )


async def process(event: InputEvent, msg: RawMessage) -> None:
    """Hand a valid event, now in its customer's partition, to the detectors."""
    # The detectors arrive in their own modules; until then a valid event is
    # counted and its lag observed, which is what the ingestion contract needs.
    metrics.input_events.labels(msg.topic, event.type, "processed").inc()
    lag = (datetime.now(UTC) - event.occurred_at).total_seconds()
    metrics.event_lag.observe(max(lag, 0.0))


@app.agent(input_topic, name="customers")
async def customers(stream: faust.StreamT[bytes]) -> None:
    """Every input event of a customer passes here, one at a time per partition."""
    async for event in stream.events():
        msg = raw_message(event.message)
        await dispatch(msg, classify(msg, ingest_rules))
