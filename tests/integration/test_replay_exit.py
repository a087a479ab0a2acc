"""`hitrun replay` tells the truth: it fails, saying what is missing, when the workers
did not apply every record it published."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition

from hitrun.streams.config import Settings
from tests.integration.harness import settings_of, start_worker, unique_env, wait_for
from tests.retention_oracle import (
    OraclePolicy,
    expected_counts,
    read_purchases_csv,
    write_transactions_csv,
)


def replay(env: dict[str, str], path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hitrun.streams.cli", "replay", str(path), "--workers", "0", *extra],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def transactions(tmp_path: Path) -> Path:
    path = tmp_path / "transactions.csv"
    start = datetime(2024, 1, 1, tzinfo=UTC)
    write_transactions_csv(path, seed=3, customers=60, start=start, policy=OraclePolicy())
    return path


def test_a_replay_whose_records_are_refused_exits_non_zero_with_the_count(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    path = transactions(tmp_path)
    env = unique_env(kafka_bootstrap, tmp_path, HITRUN_CLOCK_MODE="replay")
    worker = start_worker(env, tmp_path)
    try:
        first = replay(env, path, "--order-column", "order_id")
        assert first.returncode == 0, first.stdout + first.stderr
        # The same history again, into the same app: its clock is past all of it,
        # so every event is refused as late; a summary alone would hide that.
        again = replay(env, path, "--order-column", "order_id")
    finally:
        worker.stop()
    assert again.returncode == 1, again.stdout + again.stderr
    assert "dead-lettered instead of applied" in again.stderr
    assert "late_event" in again.stderr


def test_a_replay_no_worker_can_finish_names_the_partitions_left(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    path = transactions(tmp_path)
    env = unique_env(kafka_bootstrap, tmp_path, HITRUN_CLOCK_MODE="replay")
    # The worker does not share the replay tool's watermark key: it refuses every
    # watermark, so the events it holds are never released nor committed.
    worker = start_worker({**env, "HITRUN_WATERMARK_KEY": "another-key"}, tmp_path)
    try:
        done = replay(env, path, "--order-column", "order_id", "--stall-timeout", "8")
    finally:
        worker.stop()
    assert done.returncode == 1, done.stdout + done.stderr
    assert "no progress for 8s" in done.stderr
    assert re.search(r"\.checkouts\[\d\]: \d+", done.stderr), done.stderr
    assert f"{env['HITRUN_APP_ID']}" in done.stderr
    assert "HITRUN_WATERMARK_KEY" in done.stderr


def test_an_interrupted_replay_resumes_without_sending_twice(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    path = tmp_path / "transactions.csv"
    start = datetime(2024, 1, 1, tzinfo=UTC)
    write_transactions_csv(path, seed=5, customers=3000, start=start, policy=OraclePolicy())
    expected = expected_counts(read_purchases_csv(path), policy=OraclePolicy())
    events = 2 * len(read_purchases_csv(path))
    env = unique_env(kafka_bootstrap, tmp_path, HITRUN_CLOCK_MODE="replay")
    settings = settings_of(env)
    command = [sys.executable, "-m", "hitrun.streams.cli", "replay", str(path), "--workers", "0"]
    command += ["--order-column", "order_id"]
    worker = start_worker(env, tmp_path)
    try:
        # Slowed down, so that the kill surely lands while it publishes.
        first = subprocess.Popen(
            [*command, "--rate", "2000"], env={**os.environ, **env}, start_new_session=True
        )
        try:
            # Killed while it publishes: part of the file is written, the rest is not.
            wait_for(lambda: written(settings) >= 2_000, 120, "the replay to start writing")
        finally:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
        at_kill = written(settings)
        again = replay(env, path, "--order-column", "order_id")
        assert again.returncode != 0 and "--resume" in again.stderr  # not started over by mistake
        resumed = replay(env, path, "--order-column", "order_id", "--resume")
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        applied = sum(
            worker.metric("hitrun_input_events_total", type=t, outcome="processed")
            for t in ("checkout_confirmed", "payment_attempted")
        )
    finally:
        worker.stop()
    assert at_kill < written(settings)  # the resumed replay wrote the rest
    assert "resuming" in resumed.stdout
    told = {
        m[1]: int(m[2]) for m in re.finditer(r"^\s+(\w+)\s+(\d+)$", resumed.stdout, re.MULTILINE)
    }
    for kind in ("single_purchase", "early_churn", "customer_returned"):
        assert told.get(kind, 0) == expected[kind], (kind, resumed.stdout, expected)
    # Every event once: none lost at the kill, none written twice by the resume.
    assert applied == events
    assert worker.metric("hitrun_dead_letters_total") == 0


def written(settings: Settings) -> int:
    """Records in the input topics so far."""

    async def count() -> int:
        consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
        await consumer.start()
        try:
            tps = [
                TopicPartition(topic, p)
                for topic in settings.watermarked_topics
                for p in range(settings.partitions)
            ]
            return sum((await consumer.end_offsets(tps)).values())
        finally:
            await consumer.stop()

    return asyncio.run(count())
