"""No message stops a partition: each of the messages that once made the worker exit (and
exit again after every restart) is dead-lettered or rerouted, and the valid events behind
it on the same partition are applied. Far-future times move no other customer's order."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
from aiokafka import AIOKafkaProducer, TopicPartition

from hitrun.agents.linking import InternalRecords
from hitrun.streams.partitioning import partition_for_key
from tests.integration.harness import (
    SUPPORT_TOKEN,
    checkout,
    committed_offsets,
    drain,
    metric_sum,
    settings_of,
    start_worker,
    unique_env,
    wait_for,
)

CUSTOMER = "hostile-victim"
Record = tuple[bytes | None, bytes | None, int, list[tuple[str, bytes]]]


def at(text: str, **body: object) -> dict[str, object]:
    return {**checkout(CUSTOMER, f"o-{text}"), "occurred_at": text, **body}


def test_partition_stopping_messages_are_refused_and_the_events_behind_them_applied(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    env = unique_env(kafka_bootstrap, tmp_path)
    settings = settings_of(env)
    key = CUSTOMER.encode()
    home = partition_for_key(key, settings.partitions)
    other = (home + 1) % settings.partitions
    future = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    unsigned_mark = {"type": "watermark", "occurred_at": "2150-01-01T00:00:00+00:00"}
    valid = [checkout(CUSTOMER, f"o-valid-{n}") for n in range(6)]
    # Each hostile record is followed by a valid checkout of the same customer, on the
    # same partition of the same topic.
    hostile: list[Record] = [
        # The first event of the partition stamped year 1, then year 9999.
        (key, orjson.dumps(at("0001-01-01T00:00:00Z")), home, []),
        (key, orjson.dumps(at("9999-12-31T23:30:00Z")), home, []),
        # An origin header that is not JSON, on a message that is not JSON either.
        (key, b'{"type": "checkout_confirmed", ', home, [("hitrun-origin", b"garbage")]),
        # A valid event in the wrong partition with a malformed origin header.
        (key, orjson.dumps(checkout(CUSTOMER, "o-rerouted")), other, [("hitrun-origin", b"[1,2]")]),
        # An event a month ahead of wall time, and a watermark nobody signed.
        (key, orjson.dumps(at(future)), home, []),
        (None, orjson.dumps(unsigned_mark), home, []),
    ]

    async def produce() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
        await producer.start()
        try:
            for (k, value, partition, headers), behind in zip(hostile, valid, strict=True):
                await producer.send_and_wait(
                    settings.topic_checkouts, value, key=k, partition=partition, headers=headers
                )
                await producer.send_and_wait(
                    settings.topic_checkouts, orjson.dumps(behind), key=key, partition=home
                )
        finally:
            await producer.stop()

    worker = start_worker(env, tmp_path)
    try:
        asyncio.run(produce())
        processed = {"outcome": "processed", "type": "checkout_confirmed"}
        # Six valid checkouts and the rerouted one.
        wait_for(lambda: metric_sum(worker, "hitrun_input_events_total", **processed) >= 7, 60, "7")
        assert worker.process is not None and worker.process.poll() is None, worker.log_tail()
        status, body = worker.get(f"/customers/{CUSTOMER}", SUPPORT_TOKEN)
        assert status == 200, body
        view = orjson.loads(body)
    finally:
        worker.stop()
    letters = [
        orjson.loads(r.value)
        for r in drain(settings.kafka_bootstrap, settings.topic_dead_letters, 5)
    ]
    assert sorted(letter["reason"] for letter in letters) == sorted(
        ["schema_violation", "schema_violation", "not_json", "from_future", "unauthenticated"]
    )
    assert "processing_error" not in {letter["reason"] for letter in letters}
    # Every valid order is open: no hostile time moved the clock past its deadline.
    open_orders = {order["order_id"] for order in view["open_orders"]}
    assert {f"o-valid-{n}" for n in range(6)} | {"o-rerouted"} <= open_orders, view
    assert view["blacklist"] == []


def test_identity_records_from_the_future_are_dead_lettered_and_hold_back_no_commit(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """A sighting and a link report signed with the workers' key (a leaked key, a bug) but
    stamped a year ahead would be held until every partition's marks reach that time,
    and their partitions' commits with them: every restart would read them again."""
    env = unique_env(kafka_bootstrap, tmp_path)
    settings = settings_of(env)
    internal = InternalRecords(settings.internal_keys)
    ahead = (datetime.now(UTC) + timedelta(days=365)).isoformat()
    phone = "f7" * 32
    sighting = {"customer": CUSTOMER, "kind": "phone", "hash": phone, "at": ahead}
    report = {"type": "dropped", "customer": CUSTOMER, "kind": "phone", "prefix": phone[:12]}
    records = [
        (settings.identity_topic, f"phone:{phone}".encode(), orjson.dumps(sighting)),
        (settings.links_topic, CUSTOMER.encode(), orjson.dumps({**report, "at": ahead})),
    ]
    places = [
        TopicPartition(topic, partition_for_key(key, settings.partitions))
        for topic, key, _ in records
    ]

    written: dict[TopicPartition, int] = {}  # the offset each was written at

    async def produce() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
        await producer.start()
        try:
            for (topic, key, value), place in zip(records, places, strict=True):
                headers = internal.headers(topic, key, value)
                sent = await producer.send_and_wait(
                    topic, value, key=key, partition=place.partition, headers=headers
                )
                written[place] = sent.offset
            # A valid event behind them: the worker goes on.
            await producer.send_and_wait(
                settings.topic_checkouts,
                orjson.dumps(checkout(CUSTOMER, "o-after")),
                key=CUSTOMER.encode(),
            )
        finally:
            await producer.stop()

    worker = start_worker(env, tmp_path)
    try:
        asyncio.run(produce())
        letters = [
            orjson.loads(r.value)
            for r in drain(settings.kafka_bootstrap, settings.topic_dead_letters, 2)
        ]
        # Each partition's commit passes its record (the workers' marks follow it there):
        # nothing is held for it.
        wait_for(
            lambda: all(
                asyncio.run(committed_offsets(settings)).get(p, 0) > written[p] for p in places
            ),
            60,
            "the identity partitions' commits to pass the future records",
        )
        processed = {"outcome": "processed", "type": "checkout_confirmed"}
        wait_for(lambda: metric_sum(worker, "hitrun_input_events_total", **processed) >= 1, 60, "1")
        assert worker.process is not None and worker.process.poll() is None, worker.log_tail()
    finally:
        worker.stop()
    assert sorted((d["reason"], d["source"]["topic"]) for d in letters) == sorted(
        ("from_future", topic) for topic, _, _ in records
    ), letters
