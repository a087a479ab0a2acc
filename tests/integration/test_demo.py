"""The quick start's `make demo`, looked at in a terminal (tmux): customers' stories, rates,
the ground truth table and dead letters appear within a minute, a second run looks like the
first, Ctrl-C stops everything and keeps the ground truth; and `hitrun simulate` keeps its
ground truth when interrupted too."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

from hitrun.dev.worker import topic_env
from tests.integration.harness import own_run

REPO = Path(__file__).resolve().parents[2]

STORY = re.compile(r"cust-\d+-\d{7}\W+checkout ord-[0-9a-f]{6} \w+ IDR [\d,.]+ → \w")
RATES = re.compile(r"[\d,]+ published/s · [\d,]+ events/s .* [\d,]+ alerts/s")
TRUTH = re.compile(r"never pays\W+order_expired\W+[\d,]+\W+[\d,]+\W+[\d,]+\W+\d+\.\d%")
DEAD = re.compile(r"dead letters by reason .* not_json \d+/\d+")
SHOWN = {"a customer's story": STORY, "rates": RATES, "ground truth": TRUTH, "dead letters": DEAD}


class Terminal:
    """A tmux server of its own running one command in a 200x60 terminal."""

    def __init__(self, name: str, env: dict[str, str]) -> None:
        self.socket = f"hitrun-test-{name}"
        self.env = env

    def tmux(self, *args: str) -> str:
        done = subprocess.run(
            ["tmux", "-L", self.socket, *args],
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
        )
        return done.stdout

    def run(self, command: str, cwd: Path) -> None:
        self.tmux("new-session", "-d", "-x", "200", "-y", "60", "-c", str(cwd), command)

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-J", "-S", "-200")

    def wait_for(self, done: Callable[[str], bool], within_s: float) -> str:
        deadline = time.monotonic() + within_s
        screen = self.screen()
        while not done(screen) and time.monotonic() < deadline:
            time.sleep(1)
            screen = self.screen()
        return screen

    def close(self) -> None:
        self.tmux("kill-server")


@pytest.fixture
def terminal(kafka_bootstrap: str) -> Iterator[Terminal]:
    if shutil.which("tmux") is None:
        pytest.fail("tmux is needed to look at the demo (Debian package tmux; .ci/run installs it)")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "HITRUN_KAFKA_BOOTSTRAP": kafka_bootstrap,  # the suite's broker, not one of its own
        "TERM": "xterm-256color",
    }
    env.pop("TMUX", None)
    term = Terminal(uuid.uuid4().hex[:8], env)
    try:
        yield term
    finally:
        term.close()


def _one_run(terminal: Terminal, cwd: Path, truth: Path) -> tuple[set[str], str]:
    """Run the demo until everything it shows is there (at most 60 s), then Ctrl-C it."""
    terminal.run(
        f"{sys.executable} -m hitrun.dev.demo --truth {truth}; echo demo-exit-$?; sleep 600", cwd
    )
    screen = terminal.wait_for(lambda s: all(p.search(s) for p in SHOWN.values()), within_s=60)
    shown = {name for name, pattern in SHOWN.items() if pattern.search(screen)}
    terminal.tmux("send-keys", "C-c")
    ended = terminal.wait_for(lambda s: "demo-exit-" in s, within_s=90)
    terminal.tmux("kill-session")
    return shown, screen + ended


def test_the_demo_tells_customers_stories_with_rates_truth_and_dead_letters_run_after_run(
    terminal: Terminal, tmp_path: Path
) -> None:
    first_shown, first = _one_run(terminal, tmp_path, tmp_path / "first.json")
    assert first_shown == set(SHOWN), first
    assert "demo: everything stopped" in first and "demo-exit-0" in first, first
    # Simulated time runs fast: nothing good is refused as late or from the future.
    assert "late_event" not in first and "from_future" not in first

    second_shown, second = _one_run(terminal, tmp_path, tmp_path / "second.json")
    assert second_shown == set(SHOWN), second
    assert "demo-exit-0" in second

    truths = [orjson.loads((tmp_path / f"{n}.json").read_bytes()) for n in ("first", "second")]
    for truth in truths:  # written and kept after Ctrl-C
        assert truth["messages"] > 0 and truth["customers"] and truth["kinds"]
    assert truths[0]["seed"] != truths[1]["seed"] and truths[0]["run_id"] != truths[1]["run_id"]
    assert not set(truths[0]["customers"]) & set(truths[1]["customers"])  # each run is fresh
    for pid in re.findall(r"worker ready \(pid (\d+)\)", first + second):
        with pytest.raises(ProcessLookupError):
            os.kill(int(pid), 0)


def test_a_simulation_shows_progress_and_keeps_its_ground_truth_when_interrupted(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    tag = f"sim-{uuid.uuid4().hex[:8]}"
    truth = tmp_path / "truth.json"
    simulator = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hitrun.streams.cli",
            "simulate",
            "--rate",
            "200",
            "--duration",
            "600",
            "--truth",
            str(truth),
        ],
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
            **own_run(
                {"HITRUN_KAFKA_BOOTSTRAP": kafka_bootstrap, "HITRUN_APP_ID": tag, **topic_env(tag)}
            ),
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        time.sleep(8)
        os.killpg(simulator.pid, signal.SIGINT)
        out, _ = simulator.communicate(timeout=30)
    finally:
        if simulator.poll() is None:
            os.killpg(simulator.pid, signal.SIGKILL)
            simulator.wait()
    assert simulator.returncode == 130, out
    assert b"simulate: 1000/120000 sent" in out  # progress every 5 s of traffic, not at the end
    kept = orjson.loads(truth.read_bytes())
    assert kept["messages"] > 0 and len(kept["customers"]) > 0
