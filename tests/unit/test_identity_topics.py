"""The identity stage's internal topics: a record hitrun did not write is dead-lettered
with a reason, never applied and never a crash."""

from __future__ import annotations

import orjson
import pytest

import hitrun.agents.customer as customer
from hitrun.agents.customer import IDENTITY_KEY_PREFIX
from hitrun.agents.linking import InternalRecords
from hitrun.streams.auth import SIGNATURE_HEADER, record_signature, verify_record
from hitrun.streams.ingest import RawMessage
from hitrun.streams.partitioning import partition_for_key
from tests.unit.agent_shell import SETTINGS, Sink, run_batch, stored

HASH = "ab" * 32


def get_raw(key: bytes) -> bytes | None:
    return customer.customers_table.data.get(key)


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
    phone_home = partition_for_key(b"phone:" + HASH.encode(), SETTINGS.partitions)
    away_from_phone = (phone_home + 1) % SETTINGS.partitions
    run_batch(
        on(SETTINGS.identity_topic, b"phone:x", b"not json"),
        on(SETTINGS.identity_topic, b"phone:x", orjson.dumps({"customer": customer})),
        on(SETTINGS.identity_topic, b"email:" + HASH.encode(), sighting),  # keyed otherwise
        on(SETTINGS.identity_topic, b"phone:" + HASH.encode(), sighting, away_from_phone),
        on(SETTINGS.links_topic, customer.encode(), b"[1, 2]", home),
        on(
            SETTINGS.links_topic, customer.encode(), forged_report, (home + 1) % SETTINGS.partitions
        ),
    )
    letters = sink.letters()
    assert [letter["reason"] for letter in letters] == ["schema_violation"] * 6
    assert "keyed other than by its identifier" in letters[2]["detail"]
    assert "another partition than its identifier's" in letters[3]["detail"]
    assert "another partition than its customer's" in letters[5]["detail"]
    assert stored(customer) is None
    assert get_raw(IDENTITY_KEY_PREFIX + b"phone:" + HASH.encode()) is None


def test_with_an_internal_key_only_records_signed_with_it_are_applied(
    sink: Sink, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = b"internal-key-of-the-workers"
    monkeypatch.setattr(customer, "internal", InternalRecords([key]))
    topic, record_key = SETTINGS.identity_topic, f"phone:{HASH}".encode()
    home = partition_for_key(record_key, SETTINGS.partitions)

    def sighting(who: str) -> bytes:
        body = {"customer": who, "kind": "phone", "hash": HASH, "at": "2026-01-01T00:00:00Z"}
        return orjson.dumps(body)

    def signed(value: bytes, with_key: bytes = key) -> list[tuple[str, bytes]]:
        return [(SIGNATURE_HEADER, record_signature(with_key, topic, record_key, value))]

    forged = sighting("it-forger")
    run_batch(
        on(topic, record_key, forged, home),  # unsigned
        RawMessage(topic, home, 2, None, record_key, forged, signed(forged, b"guessed")),
        # A good signature of another record, or of the same record for another topic.
        RawMessage(topic, home, 3, None, record_key, forged, signed(sighting("it-a"))),
        RawMessage(
            topic,
            home,
            4,
            None,
            record_key,
            forged,
            [(SIGNATURE_HEADER, record_signature(key, SETTINGS.links_topic, record_key, forged))],
        ),
    )
    letters = sink.letters()
    assert [letter["reason"] for letter in letters] == ["unauthenticated"] * 4
    assert all("HITRUN_INTERNAL_KEY" in letter["detail"] for letter in letters)
    assert stored("it-forger") is None and not [
        r for r in sink.records if r.topic == SETTINGS.links_topic
    ]
    # Two good sightings of one phone: applied, and the reports they make are signed.
    sink.records.clear()
    first, second = sighting("it-a"), sighting("it-b")
    run_batch(
        RawMessage(topic, home, 5, None, record_key, first, signed(first)),
        RawMessage(topic, home, 6, None, record_key, second, signed(second)),
    )
    assert sink.letters() == []
    reports = [r for r in sink.records if r.topic == SETTINGS.links_topic]
    assert sorted(orjson.loads(r.value or b"")["customer"] for r in reports) == ["it-a", "it-b"]
    assert all(
        verify_record(key, r.topic, r.key, r.value, r.headers)
        and not verify_record(b"other", r.topic, r.key, r.value, r.headers)
        for r in reports
    )


def test_while_a_new_internal_key_rolls_out_records_of_the_previous_one_are_applied(
    sink: Sink, monkeypatch: pytest.MonkeyPatch
) -> None:
    new, previous = b"the-new-internal-key", b"the-previous-internal-key"
    monkeypatch.setattr(customer, "internal", InternalRecords([new, previous]))
    topic, record_key = SETTINGS.identity_topic, f"email:{HASH}".encode()
    home = partition_for_key(record_key, SETTINGS.partitions)
    bodies = [
        orjson.dumps({"customer": who, "kind": "email", "hash": HASH, "at": "2026-01-01T00:00:00Z"})
        for who in ("it-old-signer", "it-new-signer", "it-guesser")
    ]
    keys = [previous, new, b"a-guess"]
    run_batch(
        *(
            RawMessage(
                topic,
                home,
                10 + n,
                None,
                record_key,
                body,
                [(SIGNATURE_HEADER, record_signature(key, topic, record_key, body))],
            )
            for n, (body, key) in enumerate(zip(bodies, keys, strict=True))
        )
    )
    assert [letter["reason"] for letter in sink.letters()] == ["unauthenticated"]
    reports = [r for r in sink.records if r.topic == SETTINGS.links_topic]
    assert sorted(orjson.loads(r.value or b"")["customer"] for r in reports) == [
        "it-new-signer",
        "it-old-signer",
    ]
    # What the workers write now is signed with the new key.
    assert all(verify_record(new, r.topic, r.key, r.value, r.headers) for r in reports)
