"""A broker started by a test run ends when that run is SIGKILLed: no JVM is left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from hitrun.dev.localkafka import _pid_alive

STARTER = """
import sys, time
from pathlib import Path
from hitrun.dev.localkafka import LocalKafka, free_port
broker = LocalKafka(Path(sys.argv[1]), port=free_port())
broker.start(timeout=120)
print(broker.pid, flush=True)
time.sleep(600)
"""


def test_a_broker_ends_when_the_process_that_started_it_is_killed(tmp_path: Path) -> None:
    starter = subprocess.Popen(
        [sys.executable, "-c", STARTER, str(tmp_path / "kafka")],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    jvm = None
    try:
        assert starter.stdout is not None
        jvm = int(starter.stdout.readline())
        assert _pid_alive(jvm)
        starter.send_signal(signal.SIGKILL)
        starter.wait()
        deadline = time.monotonic() + 15
        while _pid_alive(jvm) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _pid_alive(jvm), "the broker outlived the process that started it"
    finally:
        if starter.poll() is None:
            starter.kill()
            starter.wait()
        if starter.stdout is not None:
            starter.stdout.close()
        if jvm is not None and _pid_alive(jvm):
            os.killpg(jvm, signal.SIGKILL)
