"""Fixtures of the unit tests that drive the customer agent's shell without a broker."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

# The agent's shell runs in this process with the table in memory. The agent
# reads its settings once, at import: the variable is set for that import only,
# so the workers the integration tests start (children of this process) keep
# the default store, RocksDB.
if "HITRUN_STORE" not in os.environ:
    os.environ["HITRUN_STORE"] = "memory://"
    import hitrun.agents.customer  # noqa: F401

    del os.environ["HITRUN_STORE"]

from tests.unit.agent_shell import Sink, install_sink


@pytest.fixture
def sink(monkeypatch: pytest.MonkeyPatch) -> Iterator[Sink]:
    yield from install_sink(monkeypatch)
