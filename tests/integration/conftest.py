"""Integration tests run against a real Kafka broker: HITRUN_KAFKA_BOOTSTRAP's, or a local one."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from hitrun.dev.localkafka import LocalKafka, free_port
from tests.integration.harness import RUNS

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap address of the broker every integration test shares."""
    existing = os.environ.get("HITRUN_KAFKA_BOOTSTRAP")
    if existing:
        yield existing
        return
    broker = LocalKafka(tmp_path_factory.mktemp("kafka"), port=free_port())
    broker.start(timeout=120)
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@pytest.fixture(autouse=True)
def delete_test_topics(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each test, delete the topics of the runs it made on the shared broker.

    Torn down after the test's own fixtures, so its workers are stopped by then.
    A broker of the test's own (a secured one) goes with its data; a test run
    against `make kafka-start`'s broker no longer piles up thousands of
    topics there (it keeps a few open files per partition, under a limit).
    """
    first = len(RUNS.runs)
    yield
    shared = None
    if "kafka_bootstrap" in request.fixturenames:
        shared = request.getfixturevalue("kafka_bootstrap")
    RUNS.delete(since=first, on=shared)
