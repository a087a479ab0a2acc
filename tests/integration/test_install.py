"""`pip install .` installs one top-level package, `hitrun`, and its console script; the
unit suite and the one-command replay pass against that installed copy, run from a tree
that holds everything of the repository except its source packages."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
AGAINST_BROKER = ["tests/integration/test_replay_command.py", "tests/integration/test_examples.py"]
# Left out of the copy: the source packages, and what building and running leave behind.
SOURCE = {"hitrun", "streams", "agents", "schemas", "dev", "build", ".git", ".venv", ".hitrun"}
LEFT_BEHIND = {".hypothesis", ".mypy_cache", ".ruff_cache", ".pytest_cache"}


def _without_source(directory: str, names: list[str]) -> set[str]:
    top = Path(directory).resolve() == REPO
    return {
        n
        for n in names
        if (top and n in SOURCE | LEFT_BEHIND) or n.endswith(".egg-info") or n == "__pycache__"
    }


def test_pip_install_gives_one_package_hitrun_and_the_suite_passes_against_it(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    site = tmp_path / "site"
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(site), str(REPO)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert installed.returncode == 0, installed.stderr
    assert "Warning" not in installed.stdout + installed.stderr, installed.stdout + installed.stderr
    assert {p.name for p in site.iterdir()} == {"hitrun", "hitrun-0.1.0.dist-info", "bin"}
    assert (site / "bin" / "hitrun").is_file()
    assert (site / "hitrun" / "dev" / "kafka" / "pom.xml").is_file()
    assert any((site / "hitrun" / "schemas" / "examples").rglob("*.json"))

    tree = tmp_path / "tree"
    shutil.copytree(REPO, tree, ignore=_without_source)
    env = {
        **os.environ,
        "PYTHONPATH": str(site),
        "PATH": f"{site / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "HITRUN_KAFKA_BOOTSTRAP": kafka_bootstrap,
    }
    where = subprocess.run(
        [sys.executable, "-c", "import hitrun.streams.cli as c; print(c.__file__)"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert where.stdout.startswith(str(site)), where.stdout
    version = subprocess.run(
        ["hitrun", "--version"], cwd=tree, env=env, capture_output=True, text=True, check=True
    )
    assert version.stdout.startswith("hitrun 0.1.0"), version.stdout

    suite = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "tests/unit", *AGAINST_BROKER],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert suite.returncode == 0, suite.stdout[-4000:] + suite.stderr[-2000:]
    assert " passed" in suite.stdout and "error" not in suite.stdout.splitlines()[-1]
