"""`hitrun replay` tells the truth: it fails, saying what is missing, when the workers
did not apply every record it published."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from tests.integration.harness import start_worker, unique_env
from tests.retention_oracle import OraclePolicy, write_transactions_csv


def replay(env: dict[str, str], path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", "replay", str(path), *extra],
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
