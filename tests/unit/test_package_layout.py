"""Everything imports hitrun's modules as `hitrun.*`: importing one also as a top-level
`streams`/`agents`/`schemas`/`dev` module would load it twice, with two copies of its
classes and state (an effect of one copy is not an instance of the other's class)."""

from __future__ import annotations

import re
from pathlib import Path

import hitrun

REPO = Path(__file__).resolve().parents[2]
TOP_LEVEL = re.compile(r"^\s*(from|import)\s+(streams|agents|schemas|dev)\b", re.M)
RUN_AS = re.compile(r"""["'-]m["']?,?\s*["']?(streams|agents|schemas|dev)\.""")


def test_no_module_is_imported_or_run_under_a_top_level_name() -> None:
    offenders = []
    for directory in ("streams", "agents", "schemas", "dev", "tests", "bench"):
        for path in (REPO / directory).rglob("*.py"):
            text = path.read_text()
            if TOP_LEVEL.search(text) or RUN_AS.search(text):
                offenders.append(str(path.relative_to(REPO)))
    assert offenders == []


def test_the_source_tree_imports_as_one_package() -> None:
    from hitrun.agents import unpaid
    from hitrun.streams import cli

    root = Path(hitrun.__file__).resolve().parent
    assert {p.name for p in root.iterdir() if (p / "__init__.py").exists()} == {
        "streams",
        "agents",
        "schemas",
        "dev",
    }
    assert Path(cli.__file__).name == "cli.py" and Path(unpaid.__file__).name == "unpaid.py"
