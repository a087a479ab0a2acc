"""`hitrun replay FILE` alone: it starts its own workers, prints every alert type, and leaves
no process and no topic behind."""

from __future__ import annotations

import asyncio
import csv
import os
import re
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient

from hitrun.schemas.registry import ALERT_TYPES
from tests.retention_oracle import expected_counts

EXAMPLE = Path(__file__).parents[2] / "examples" / "transactions.csv"
KINDS = ("single_purchase", "early_churn", "customer_returned")


def oracle_counts(path: Path) -> dict[str, int]:
    """What the written definitions give for the file's purchases (rows with a positive
    amount; each a purchase at midnight UTC of its date)."""
    with path.open(newline="") as source:
        purchases = [
            (
                row["customer_id"],
                datetime.fromisoformat(row["timestamp"]).replace(tzinfo=UTC),
                str(n),
            )
            for n, row in enumerate(csv.DictReader(source))
            if Decimal(row["amount"]) > 0
        ]
    return dict(expected_counts(purchases))


def summary(printed: str) -> dict[str, int]:
    table = printed.split("alerts by type:", 1)[1]
    return {m[1]: int(m[2]) for m in re.finditer(r"^\s+(\w+)\s+(\d+)$", table, re.MULTILINE)}


def processes_of(app_id: str) -> list[int]:
    """Processes whose environment names a HITRUN_APP_ID starting with `app_id`."""
    needle = f"HITRUN_APP_ID={app_id}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


async def topics_of(bootstrap: str, prefix: str) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return sorted(t for t in await admin.list_topics() if t.startswith(prefix))
    finally:
        await admin.close()


def hitrun_replay(
    kafka_bootstrap: str, tmp_path: Path, file: Path
) -> tuple[str, subprocess.CompletedProcess[str]]:
    """`hitrun replay FILE` with nothing but the broker set; its app id and what it did."""
    app_id = f"replay-test-{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HITRUN_")}
    env |= {
        "HITRUN_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "HITRUN_APP_ID": app_id,
        "HITRUN_DATA_DIR": str(tmp_path / "data"),
    }
    done = subprocess.run(
        [sys.executable, "-m", "hitrun.streams.cli", "replay", str(file)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    return app_id, done


def assert_nothing_left(kafka_bootstrap: str, app_id: str, printed: str) -> None:
    """No process, no topic and no scratch directory of the replay is left."""
    assert processes_of(app_id) == []
    assert asyncio.run(topics_of(kafka_bootstrap, f"{app_id}-replay-")) == []
    logs = re.search(r"logs in (\S+)\)", printed)
    assert logs is not None and not Path(logs[1]).exists()


def test_hitrun_replay_of_the_example_file_needs_nothing_but_a_broker(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    app_id, done = hitrun_replay(kafka_bootstrap, tmp_path, EXAMPLE)
    printed = done.stdout + done.stderr
    assert done.returncode == 0, printed
    assert "replay-mode worker(s)" in printed
    assert "1 row(s) with a zero or negative amount (returns, cancellations) skipped" in printed

    counts = summary(done.stdout)
    assert set(counts) == set(ALERT_TYPES) | {"total"}  # every type, the zeros too
    expected = oracle_counts(EXAMPLE)
    assert all(expected[kind] > 0 for kind in KINDS), expected
    assert {kind: counts[kind] for kind in KINDS} == {kind: expected[kind] for kind in KINDS}
    # Every replayed order is paid at once: nothing of the unpaid-order detector fires.
    for kind in ("payment_reminder", "order_expired", "strike_recorded", "customer_blacklisted"):
        assert counts[kind] == 0
    assert counts["total"] == sum(v for k, v in counts.items() if k != "total")
    # examples/README.md shows this very output.
    assert summary((EXAMPLE.parent / "README.md").read_text().split("```", 2)[1]) == counts
    assert_nothing_left(kafka_bootstrap, app_id, printed)


def test_a_file_with_an_invalid_row_is_refused_and_the_workers_started_meanwhile_are_gone(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    # The workers start while the file is read: refusing it must stop them and
    # delete their topics, and send nothing.
    rows = EXAMPLE.read_text().splitlines()
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join([*rows[:4], "c-bad,2023-02-30,12.00", *rows[4:10]]) + "\n")
    app_id, done = hitrun_replay(kafka_bootstrap, tmp_path, bad)
    printed = done.stdout + done.stderr
    assert done.returncode != 0, printed
    assert f"{bad}:5:" in printed
    assert "1 invalid row(s); nothing was sent" in printed
    assert "replay-mode worker(s)" in printed  # they had been started
    assert "published" not in printed
    assert "worker logs kept" not in printed  # the file's fault, not theirs
    assert_nothing_left(kafka_bootstrap, app_id, printed)


def test_the_start_offsets_of_a_replay_name_a_missing_topic_at_once(kafka_bootstrap: str) -> None:
    # aiokafka asks for an unknown topic's metadata again and again until its
    # request timeout (40 s); the replay asks for every topic once and says which
    # one the cluster does not have.
    from hitrun.streams.config import Settings
    from hitrun.streams.processes import topic_env
    from hitrun.streams.replay import _end_offsets
    from hitrun.streams.topics import TopicMissing, delete_topics_of, ensure_topics

    app_id = f"replay-ends-{uuid.uuid4().hex[:8]}"
    settings = Settings.from_env(
        {"HITRUN_KAFKA_BOOTSTRAP": kafka_bootstrap, "HITRUN_APP_ID": app_id, **topic_env(app_id)}
    )
    try:
        asyncio.run(_end_offsets(settings, [f"{app_id}.absent"]))
    except TopicMissing as exc:
        assert f"{app_id}.absent" in str(exc)
    else:
        raise AssertionError("the start offsets of a missing topic were read")
    asyncio.run(ensure_topics(settings))
    try:
        ends = asyncio.run(_end_offsets(settings, list(settings.watermarked_topics)))
        assert len(ends) == settings.partitions * len(settings.watermarked_topics)
        assert set(ends.values()) == {0}
    finally:
        asyncio.run(delete_topics_of(settings, app_id))
