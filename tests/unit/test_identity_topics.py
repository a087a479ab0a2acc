"""The identity stage's internal topics: a record hitrun did not write is dead-lettered
with a reason, never applied and never a crash."""

from __future__ import annotations

import orjson

from hitrun.streams.ingest import RawMessage
from hitrun.streams.partitioning import partition_for_key
from tests.unit.agent_shell import SETTINGS, Sink, run_batch, stored

HASH = "ab" * 32


def on(topic: str, key: bytes | None, value: bytes, partition: int = 0) -> RawMessage:
    return RawMessage(topic, partition, 1, None, key, value)


def test_garbage_on_the_internal_topics_is_dead_lettered(sink: Sink) -> None:
    customer = "it-victim"
    home = partition_for_key(customer.encode(), SETTINGS.partitions)
    forged_report = orjson.dumps(
        {
            "type": "dropped",
            "customer": customer,
            "kind": "phone",
            "prefix": "0" * 12,
            "at": "2026-01-01T00:00:00Z",
        }
    )
    sighting = orjson.dumps(
        {"customer": customer, "kind": "phone", "hash": HASH, "at": "2026-01-01T00:00:00Z"}
    )
    run_batch(
        on(SETTINGS.identity_topic, b"phone:x", b"not json"),
        on(SETTINGS.identity_topic, b"phone:x", orjson.dumps({"customer": customer})),
        on(SETTINGS.identity_topic, b"email:" + HASH.encode(), sighting),  # keyed otherwise
        on(SETTINGS.links_topic, customer.encode(), b"[1, 2]", home),
        on(
            SETTINGS.links_topic, customer.encode(), forged_report, (home + 1) % SETTINGS.partitions
        ),
    )
    letters = sink.letters()
    assert [letter["reason"] for letter in letters] == ["schema_violation"] * 5
    assert "keyed other than by its identifier" in letters[2]["detail"]
    assert "another partition" in letters[4]["detail"]
    assert stored(customer) is None
