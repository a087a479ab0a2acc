"""`hitrun produce` validates before it sends; `hitrun tail` prints exactly the alerts there are."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import orjson
from aiokafka import AIOKafkaProducer

from hitrun.streams.cli import EXIT_TOPICS
from hitrun.streams.config import Settings
from hitrun.streams.partitioning import partition_for_key
from hitrun.streams.topics import ensure_topics
from tests.integration.harness import drain, settings_of, start_worker, unique_env, wait_for
from tests.integration.test_unpaid_live import LIVE_POLICY, checkout


def hitrun(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hitrun.streams.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def write_lines(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_produce_refuses_a_file_with_invalid_lines_unless_asked_to_skip_them(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    env = unique_env(kafka_bootstrap, tmp_path)
    settings = settings_of(env)
    good = [orjson.dumps(checkout(f"cust-p{n}", f"o-p{n}")) for n in range(3)]
    bad_schema = orjson.dumps(
        checkout("cust-x", "o-x") | {"total": {"amount_minor": 1.5, "currency": "IDR"}}
    )
    events = write_lines(
        tmp_path / "events.jsonl", [good[0], good[1], b"{not json", good[2], bad_schema]
    )

    asyncio.run(ensure_topics(settings))  # so that "nothing was sent" is read from a real topic
    refused = hitrun(env, "produce", str(events))
    assert refused.returncode != 0
    assert f"{events}:3: not_json" in refused.stderr
    assert f"{events}:5: schema_violation" in refused.stderr
    assert "nothing was sent" in refused.stderr
    assert drain(kafka_bootstrap, settings.topic_checkouts, expected=0, timeout=2) == []

    sent = hitrun(env, "produce", "--skip-invalid", str(events))
    assert sent.returncode == 0, sent.stderr
    assert "sent 3 event(s), skipped 2 invalid line(s)" in sent.stdout
    records = drain(kafka_bootstrap, settings.topic_checkouts, expected=3)
    assert sorted(r.value for r in records) == sorted(good)
    assert {r.key for r in records} == {b"cust-p0", b"cust-p1", b"cust-p2"}


def test_tail_prints_exactly_the_alerts_the_traffic_caused(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    env = unique_env(kafka_bootstrap, tmp_path, **LIVE_POLICY | {"HITRUN_STRIKE_THRESHOLD": "10"})
    settings = settings_of(env)
    worker = start_worker(env, tmp_path)
    try:
        lines = [orjson.dumps(checkout("cust-t1", f"o-t{n}")) for n in range(2)]
        lines.append(orjson.dumps(checkout("cust-t2", "o-t9")))
        produced = hitrun(env, "produce", str(write_lines(tmp_path / "t.jsonl", lines)))
        assert produced.returncode == 0, produced.stderr
        wait_for(
            lambda: worker.metric("hitrun_alerts_total", type="order_expired") == 3, 30, "expiries"
        )
        total = int(worker.metric("hitrun_alerts_total"))
        on_topics = [
            orjson.loads(r.value)["alert_id"]
            for topic in settings.output_topics.values()
            for r in drain(kafka_bootstrap, topic, expected=0, timeout=2)
        ]
        assert len(on_topics) == total

        tailed = hitrun(env, "tail", "--from-beginning", "--json", "--idle-timeout", "3")
        assert tailed.returncode == 0, tailed.stderr
        printed = [orjson.loads(line)["alert_id"] for line in tailed.stdout.splitlines()]
        assert sorted(printed) == sorted(on_topics)

        only = hitrun(
            env,
            "tail",
            "--from-beginning",
            "--type",
            "order_expired",
            "--customer",
            "cust-t1",
            "--idle-timeout",
            "3",
        )
        rows = only.stdout.splitlines()
        assert len(rows) == 2
        assert all(" order_expired customer=cust-t1 " in row for row in rows)
    finally:
        worker.stop()


def test_tools_name_a_missing_topic_in_one_line(kafka_bootstrap: str, tmp_path: Path) -> None:
    env = unique_env(kafka_bootstrap, tmp_path)  # its topics were never created
    for args in (["tail", "--max", "1"], ["blacklist"]):
        done = hitrun(env, *args)
        assert done.returncode == EXIT_TOPICS, done.stderr
        assert "Traceback" not in done.stderr
        assert done.stderr.startswith("hitrun: no topic ")
        wanted = "BLACKLIST_STATUS" if args[0] == "blacklist" else "REMINDERS"
        assert env[f"HITRUN_TOPIC_{wanted}"] in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1


def test_blacklist_prints_who_is_blacklisted_now_from_the_compacted_status(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    env = unique_env(kafka_bootstrap, tmp_path)
    settings = settings_of(env)
    asyncio.run(ensure_topics(settings))
    status = settings.topic_blacklist_status

    def listing(scope: str) -> dict[str, object]:
        return {
            "scope": scope,
            "since": "2026-11-01T00:00:00+00:00",
            "until": "2027-02-01T00:00:00+00:00",
            "offence": 1,
            "actor": "hitrun",
        }

    def record(customer: str, *scopes: str) -> bytes:
        return orjson.dumps(
            {
                "type": "blacklist_status",
                "customer_id": customer,
                "updated_at": "2026-11-01T00:00:00+00:00",
                "listings": [listing(s) for s in scopes],
            }
        )

    send_raw(
        settings,
        status,
        [
            (b"cust-a", record("cust-a", "shop-1")),
            (b"cust-b", record("cust-b", "*")),
            (b"cust-c", record("cust-c", "shop-2")),
            (b"cust-a", None),  # unblacklisted since: a tombstone
            (b"cust-d", record("cust-d", "shop-1")),
        ],
    )
    everyone = hitrun(env, "blacklist")
    assert everyone.returncode == 0, everyone.stderr
    assert [line.split()[0] for line in everyone.stdout.splitlines()] == [
        "cust-b",
        "cust-c",
        "cust-d",
    ]
    assert "3 customer(s) blacklisted" in everyone.stderr
    shop_1 = hitrun(env, "blacklist", "--shop", "shop-1", "--json")
    assert [orjson.loads(line)["customer_id"] for line in shop_1.stdout.splitlines()] == [
        "cust-b",
        "cust-d",
    ]


def send_raw(settings: Settings, topic: str, records: list[tuple[bytes, bytes | None]]) -> None:
    async def run() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
        await producer.start()
        try:
            for key, value in records:
                partition = partition_for_key(key, settings.partitions)
                await producer.send_and_wait(topic, value, key=key, partition=partition)
        finally:
            await producer.stop()

    asyncio.run(run())
