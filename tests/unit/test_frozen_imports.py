"""The worker takes what its imports made out of the collector's sight before Faust starts."""

from __future__ import annotations

import gc
import sys

import pytest

from hitrun.streams import worker_command


def test_the_worker_freezes_its_imports_before_faust_starts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from hitrun.streams.app import app

    frozen_at_start: list[int] = []
    monkeypatch.setattr(app, "main", lambda: frozen_at_start.append(gc.get_freeze_count()))
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    gc.unfreeze()
    try:
        worker_command.run_faust(["worker"])
    finally:
        gc.unfreeze()
    # Faust's, aiokafka's and hitrun's modules, classes and functions: tens of thousands.
    assert frozen_at_start and frozen_at_start[0] > 10_000
