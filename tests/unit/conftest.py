"""Fixtures of the unit tests that drive the customer agent's shell without a broker."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

# The agent's shell runs in this process with the table in memory; the workers
# of the integration tests use the default store, RocksDB.
os.environ.setdefault("HITRUN_STORE", "memory://")

from tests.unit.agent_shell import Sink, install_sink


@pytest.fixture
def sink(monkeypatch: pytest.MonkeyPatch) -> Iterator[Sink]:
    yield from install_sink(monkeypatch)
