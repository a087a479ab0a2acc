"""The quick start's `make demo`: simulated traffic through a worker makes alerts, and the
simulator's compressed event time is not refused as coming from the future."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from dev.worker import topic_env

REPO = Path(__file__).resolve().parents[2]


def test_the_demo_shows_unpaid_alerts_and_refuses_only_the_malformed_messages(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "HITRUN_KAFKA_BOOTSTRAP": kafka_bootstrap,  # the suite's broker, not one of its own
        "HITRUN_APP_ID": f"demo-{tag}",
        **topic_env(f"demo-{tag}"),
    }
    demo = subprocess.Popen(
        [sys.executable, "-m", "dev.demo"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    try:
        assert demo.stdout is not None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = demo.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "order_expired=" in line and "strike_recorded=" in line:
                break
    finally:
        os.killpg(demo.pid, signal.SIGINT)
        rest, _ = demo.communicate(timeout=60)
    printed = "".join(lines) + rest
    counters = [line for line in lines if line.startswith("events processed=")]
    assert counters and "order_expired=" in counters[-1], printed
    assert "payment_reminder=" in counters[-1]
    assert "from_future" not in printed and "late_event" not in printed
    assert "demo: everything stopped" in printed
    assert demo.returncode == 0, printed
