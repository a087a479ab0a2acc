"""Fixtures of the unit tests that drive the customer agent's shell without a broker."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.unit.agent_shell import Sink, install_sink


@pytest.fixture
def sink(monkeypatch: pytest.MonkeyPatch) -> Iterator[Sink]:
    yield from install_sink(monkeypatch)
