"""Workers of one group are stopped together: each is told to stop before any is waited for."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from hitrun.streams.processes import stop_groups

# A child that, told to stop, notes when, takes half a second to shut down, then notes that.
CHILD = """
import signal, sys, time
path = sys.argv[1]
def stop(*_):
    with open(path, "a") as out:
        out.write(f"term {time.monotonic()}\\n")
    time.sleep(0.5)
    with open(path, "a") as out:
        out.write(f"exit {time.monotonic()}\\n")
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
open(path, "a").write("ready\\n")
while True:
    time.sleep(1)
"""


def test_every_worker_is_told_to_stop_before_any_has_finished(tmp_path: Path) -> None:
    notes = [tmp_path / f"child-{n}" for n in range(3)]
    children = [
        subprocess.Popen([sys.executable, "-c", CHILD, str(path)], start_new_session=True)
        for path in notes
    ]
    deadline = time.monotonic() + 30
    while not all(p.exists() and "ready" in p.read_text() for p in notes):
        assert time.monotonic() < deadline, "the children did not start"
        time.sleep(0.05)
    stop_groups(children, timeout=30)
    assert all(child.returncode == 0 for child in children)
    times: dict[str, list[float]] = {"term": [], "exit": []}
    for path in notes:
        for line in path.read_text().splitlines()[1:]:
            what, at = line.split()
            times[what].append(float(at))
    assert len(times["term"]) == len(times["exit"]) == 3
    assert max(times["term"]) < min(times["exit"])


def test_a_worker_that_ignores_the_stop_is_killed_at_the_deadline(tmp_path: Path) -> None:
    stubborn = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "print('ready', flush=True)\ntime.sleep(60)",
        ],
        start_new_session=True,
        stdout=subprocess.PIPE,
    )
    assert stubborn.stdout is not None
    with stubborn.stdout:
        assert stubborn.stdout.readline() == b"ready\n"
        stop_groups([stubborn], timeout=0.5)
    assert stubborn.returncode == -9
