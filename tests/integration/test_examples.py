"""examples/events.jsonl gives, through a real worker, the very alerts examples/README.md shows."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.integration.harness import start_worker, unique_env

EXAMPLES = Path(__file__).parents[2] / "examples"


def documented_alerts() -> list[str]:
    """The alert lines of the README's `hitrun tail` example."""
    readme = (EXAMPLES / "README.md").read_text()
    block = readme.split("$ hitrun tail --from-beginning", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines()[1:] if re.match(r"^\d{4}-\d\d-\d\dT", line)]


def hitrun(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "hitrun.streams.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_the_events_example_gives_the_documented_alerts(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    expected = documented_alerts()
    assert len(expected) == 9
    # Event time alone moves the clock (no wall-clock ticks), so the test gives the same
    # alerts after the windows these November 2026 events open have closed on the wall clock.
    env = unique_env(kafka_bootstrap, tmp_path, HITRUN_TICK_INTERVAL="3650d")
    hitrun(env, "topics")
    assert "sent 10 event(s)" in hitrun(env, "produce", str(EXAMPLES / "events.jsonl"))
    worker = start_worker(env, tmp_path)  # after the events: it reads them as one backlog
    try:
        printed = hitrun(
            env, "tail", "--from-beginning", "--max", str(len(expected)), "--idle-timeout", "60"
        )
    finally:
        worker.stop()
    assert [line for line in printed.splitlines() if not line.startswith("tail:")] == expected
