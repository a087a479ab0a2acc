"""hitrun's own command line: help without a broker or settings, and errors one can act on."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hitrun.streams.cli import COMMANDS, EXIT_UNREACHABLE, EXIT_USAGE

CLOSED = "127.0.0.1:1"  # nothing listens on port 1


def run(tmp_path: Path, *args: str, **env: str) -> tuple[subprocess.CompletedProcess[str], float]:
    variables = {k: v for k, v in os.environ.items() if not k.startswith("HITRUN_")} | {
        "HITRUN_KAFKA_BOOTSTRAP": CLOSED,
        "HITRUN_DATA_DIR": str(tmp_path / "data"),
        "HITRUN_CONNECT_TIMEOUT": "1s",
        **env,
    }
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "hitrun.streams.cli", *args],
        env=variables,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done, time.monotonic() - began


HELP = [
    ["--help"],
    ["-h"],
    *([name, "--help"] for name in COMMANDS),
    *(["admin", action, "--help"] for action in ("blacklist", "unblacklist", "erase")),
]


@pytest.mark.parametrize("args", HELP, ids=" ".join)
def test_help_answers_at_once_in_hitruns_words_without_broker_or_valid_settings(
    tmp_path: Path, args: list[str]
) -> None:
    done, took = run(tmp_path, *args, HITRUN_PARTITIONS="zero")
    assert done.returncode == 0, done.stderr
    assert took < 2, f"{args} took {took:.1f} s"
    assert done.stdout.startswith("Usage: hitrun")
    assert "faust-streaming.github.io" not in done.stdout and "Welcome" not in done.stdout
    assert done.stderr == ""
    assert list(tmp_path.iterdir()) == []  # created nothing


def test_the_top_level_help_lists_hitruns_commands_only(tmp_path: Path) -> None:
    done, _ = run(tmp_path, "--help")
    for name in COMMANDS:
        assert f"  {name} " in done.stdout
    for faust_only in ("livecheck", "model", "clean-versions", "send"):
        assert f"  {faust_only} " not in done.stdout


def test_version_names_hitrun_then_faust(tmp_path: Path) -> None:
    done, took = run(tmp_path, "--version", HITRUN_PARTITIONS="zero")
    assert done.returncode == 0 and took < 2
    first, second = done.stdout.splitlines()[:2]
    assert first.startswith("hitrun ") and "Faust" not in first
    assert second.startswith("faust-streaming ")


def short_error(done: subprocess.CompletedProcess[str], code: int) -> str:
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr + done.stdout
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert 1 <= len(lines) <= 2, done.stderr
    return done.stderr


@pytest.mark.parametrize(
    "args", [["topics"], ["worker"], ["tail"], ["blacklist"], ["simulate", "--count", "1"]]
)
def test_a_bad_setting_is_named_in_one_line(tmp_path: Path, args: list[str]) -> None:
    done, _ = run(tmp_path, *args, HITRUN_PARTITIONS="zero")
    assert "HITRUN_PARTITIONS: expected an integer, got 'zero'" in short_error(done, EXIT_USAGE)


@pytest.mark.parametrize(
    "args",
    [
        ["topics"],
        ["tail", "--max", "1"],
        ["blacklist"],
        ["simulate", "--count", "3"],
        ["produce", "events.jsonl"],
        ["admin", "erase", "cust-1", "--reason", "r", "--as", "alice"],
    ],
)
def test_an_unreachable_broker_is_one_line_after_a_bounded_wait(
    tmp_path: Path, args: list[str]
) -> None:
    (tmp_path / "events.jsonl").write_text(
        '{"type": "inquiry_received", "event_id": "e1", "customer_id": "c1", "shop_id": "s1", '
        '"occurred_at": "2026-01-01T00:00:00Z", "inquiry_id": "i1"}\n'
    )
    done, took = run(tmp_path, *args, HITRUN_ADMIN_KEY="k")
    error = short_error(done, EXIT_UNREACHABLE)
    assert f"cannot reach the broker at {CLOSED} (tried for 1 s" in error
    assert took < 20
    assert "Unclosed" not in done.stderr and "Unable connect" not in done.stderr


def test_a_file_that_cannot_be_read_is_a_usage_error(tmp_path: Path) -> None:
    for args in (["produce", "missing.jsonl"], ["replay", "missing.csv"]):
        done, _ = run(tmp_path, *args)
        assert "does not exist" in done.stderr
        assert done.returncode == EXIT_USAGE and "Traceback" not in done.stderr


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    done, _ = run(tmp_path, "--debug", "topics", HITRUN_PARTITIONS="zero")
    assert done.returncode != 0 and "Traceback" in done.stderr
