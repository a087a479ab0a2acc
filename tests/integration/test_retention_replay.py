"""`hitrun replay FILE` through a real broker finds the counts the definitions give."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import orjson

from hitrun.schemas import compiled_validator
from tests.integration.harness import drain, settings_of, start_worker, unique_env
from tests.retention_oracle import (
    OraclePolicy,
    expected_counts,
    read_purchases_csv,
    write_transactions_csv,
)

KINDS = ("single_purchase", "early_churn", "customer_returned")


def run_replay(env: dict[str, str], path: Path) -> str:
    """Run the real command line, as a user would, and return what it printed."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "hitrun.streams.cli",
            "replay",
            str(path),
            "--workers",
            "0",
            "--order-column",
            "order_id",
        ],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def summary(printed: str) -> dict[str, int]:
    """The `alerts by type` table of the command's output."""
    table = printed.split("alerts by type:", 1)[1]
    return {m[1]: int(m[2]) for m in re.finditer(r"^\s+(\w+)\s+(\d+)$", table, re.MULTILINE)}


def test_a_replayed_transactions_file_gives_the_counts_computed_from_the_file(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    path = tmp_path / "transactions.csv"
    write_transactions_csv(
        path, seed=7, customers=400, start=datetime(2024, 1, 1, tzinfo=UTC), policy=OraclePolicy()
    )
    expected = expected_counts(read_purchases_csv(path), policy=OraclePolicy())
    assert all(expected[kind] > 0 for kind in KINDS), expected

    env = unique_env(kafka_bootstrap, tmp_path, HITRUN_CLOCK_MODE="replay")
    settings = settings_of(env)
    worker = start_worker(env, tmp_path)
    try:
        printed = run_replay(env, path)
        told = summary(printed)
        total = sum(told.values()) - told.get("total", 0)
        records = drain(kafka_bootstrap, settings.topic_retention, expected=total)
        seen = Counter()
        for record in records:
            alert = orjson.loads(record.value)
            compiled_validator(f"{alert['type']}.v1")(alert)
            seen[alert["type"]] += 1
        for kind in KINDS:
            assert seen[kind] == expected[kind], (kind, seen, expected)
            assert told.get(kind, 0) == expected[kind], (kind, printed)
        assert seen["first_purchase_risk"] == expected["first_purchase"]
        assert len({orjson.loads(r.value)["alert_id"] for r in records}) == len(records)
        assert worker.metric("hitrun_dead_letters_total") == 0
        # Nothing lost: every published message was processed or dead-lettered.
        events = sum(
            worker.metric("hitrun_input_events_total", type=t, outcome="processed")
            for t in ("checkout_confirmed", "payment_attempted")
        )
        published = re.search(r"published (\d+) messages", printed)
        assert published is not None
        assert events == int(published[1]) == 2 * len(read_purchases_csv(path))
        # A replay's alerts are history: summarised above, not logged one by one at info.
        assert " alert single_purchase " not in worker.log_path.read_text()
    finally:
        worker.stop()
