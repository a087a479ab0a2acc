"""Replay mode after a restart: records read again find the clock where the last run left it,
and the held events are released as soon as every topic is read past them again."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

import pytest

import hitrun.agents.customer as customer
from hitrun.streams.ingest import RawMessage
from tests.unit.agent_shell import (
    SETTINGS,
    START,
    Sink,
    checkout,
    restart,
    run_batch,
    stored,
    watermark_value,
)

KEY = b"replay-key"


@pytest.fixture
def replay(monkeypatch: pytest.MonkeyPatch, sink: Sink) -> Sink:
    monkeypatch.setattr(customer, "REPLAY", True)
    monkeypatch.setattr(customer, "BUFFERED_TOPICS", SETTINGS.watermarked_topics)
    monkeypatch.setattr(customer, "ingest_rules", replace(customer.ingest_rules, watermark_key=KEY))
    customer.timers.clear()
    return sink


def watermark(topic: str, partition: int, offset: int, at: datetime) -> RawMessage:
    value = watermark_value(KEY, topic, partition, at)
    return RawMessage(topic, partition, offset, None, None, value)


def test_a_watermark_read_again_after_a_restart_still_releases_the_held_events(
    replay: Sink, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = checkout("rr-held", "o-held", 0)
    number = held.partition
    later = START + timedelta(days=1)
    others = [t for t in SETTINGS.watermarked_topics if t != SETTINGS.topic_payments]
    passed = watermark(SETTINGS.topic_checkouts, number, held.offset + 1, later)
    # Every topic but payments is read past the checkout: it is held, not committed.
    run_batch(
        *(watermark(t, number, 0, later) for t in others if t != SETTINGS.topic_checkouts),
        held,
        passed,
    )
    assert customer.metrics.value("hitrun_held_events") == 1
    restart(monkeypatch, number)
    # The restart reads the checkouts again from the held event (the watermark
    # after it was applied already), then the payments' watermark arrives.
    run_batch(held, passed, watermark(SETTINGS.topic_payments, number, 0, later))
    assert customer.metrics.value("hitrun_held_events") == 0
    # Applied, and expired by the watermark a day later: card orders are due in an hour.
    assert "o-held" in stored("rr-held").unpaid.expired
    assert [letter["reason"] for letter in replay.letters()] == []
