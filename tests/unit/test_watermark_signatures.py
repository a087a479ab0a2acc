"""Only hitrun's replay tool can move a clock without an event: watermarks must carry its
HMAC signature, bound to the topic partition they were written to."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

import hitrun.agents.customer as customer
from hitrun.streams.config import Settings, SettingsError
from hitrun.streams.ingest import Accepted, IngestRules, RawMessage, Rejected, classify
from hitrun.streams.publisher import Mark, _send_mark
from hitrun.streams.watermarks import signature
from tests.unit.agent_shell import SETTINGS, Sink, checkout, run_batch, same_partition_as

KEY = b"shared-secret"
AT = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
RULES = IngestRules(
    accepted_types={"shop.payments": frozenset({"payment_attempted", "watermark"})},
    reroute_topic="hitrun.reroute",
    partitions=8,
    max_message_bytes=4096,
    watermark_key=KEY,
)


def watermark(
    at: datetime = AT,
    signed_for: tuple[str, int] | None = ("shop.payments", 3),
    key: bytes = KEY,
    partition: int = 3,
) -> RawMessage:
    body: dict[str, Any] = {"type": "watermark", "occurred_at": at.isoformat(), "source": "t"}
    if signed_for is not None:
        body["signature"] = signature(key, signed_for[0], signed_for[1], at, "t")
    return RawMessage("shop.payments", partition, 7, None, None, orjson.dumps(body))


def reason(verdict: object) -> str | None:
    return verdict.dead_letter.reason if isinstance(verdict, Rejected) else None


def test_a_watermark_signed_for_its_partition_is_accepted() -> None:
    assert isinstance(classify(watermark(), RULES), Accepted)


@pytest.mark.parametrize(
    "msg",
    [
        watermark(signed_for=None),
        watermark(key=b"another key"),
        watermark(signed_for=("shop.payments", 4)),  # copied to another partition
        watermark(signed_for=("shop.checkouts", 3)),  # or to another topic
    ],
    ids=["unsigned", "wrong-key", "other-partition", "other-topic"],
)
def test_any_other_watermark_is_dead_lettered_as_unauthenticated(msg: RawMessage) -> None:
    assert reason(classify(msg, RULES)) == "unauthenticated"


def test_a_worker_without_the_key_accepts_no_watermark() -> None:
    assert reason(classify(watermark(), replace(RULES, watermark_key=None))) == "unauthenticated"


def test_a_changed_time_breaks_the_signature() -> None:
    good = orjson.loads(watermark().value or b"")
    good["occurred_at"] = (AT + timedelta(days=1000)).isoformat()
    msg = RawMessage("shop.payments", 3, 7, None, None, orjson.dumps(good))
    assert reason(classify(msg, RULES)) == "unauthenticated"


def test_the_replay_tool_signs_every_watermark_it_writes() -> None:
    settings = Settings.from_env({"HITRUN_WATERMARK_KEY": "k", "HITRUN_PARTITIONS": "2"})
    sent: list[tuple[str, bytes, int]] = []

    class Producer:
        async def send(self, topic: str, value: bytes, partition: int) -> None:
            sent.append((topic, value, partition))

    asyncio.run(_send_mark(Producer(), settings, Mark(AT, "replay-x")))  # type: ignore[arg-type]
    assert len(sent) == 2 * len(settings.watermarked_topics)
    rules = IngestRules(
        accepted_types=settings.input_topics,
        reroute_topic=settings.reroute_topic,
        partitions=2,
        max_message_bytes=4096,
        watermark_key=b"k",
    )
    for topic, value, partition in sent:
        msg = RawMessage(topic, partition, 0, None, None, value)
        assert isinstance(classify(msg, rules), Accepted)


def test_replay_mode_needs_the_key() -> None:
    with pytest.raises(SettingsError, match="HITRUN_WATERMARK_KEY"):
        Settings.from_env({"HITRUN_CLOCK_MODE": "replay"})


def test_a_far_future_unsigned_watermark_moves_no_clock_and_expires_no_order(sink: Sink) -> None:
    run_batch(checkout("wm-victim", "o-victim", 0))
    hostile = RawMessage(
        SETTINGS.topic_payments,
        checkout(same_partition_as("wm-victim"), "x").partition,
        10**6,
        None,
        None,
        orjson.dumps({"type": "watermark", "occurred_at": "2199-01-01T00:00:00Z"}),
    )
    run_batch(hostile)
    assert [letter["reason"] for letter in sink.letters()] == ["unauthenticated"]
    assert [r for r in sink.records if r.topic == SETTINGS.topic_strikes] == []
    assert customer.stream_clock("wm-victim") < datetime(2100, 1, 1, tzinfo=UTC)
