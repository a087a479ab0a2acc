"""A test's runs leave no topics behind on the shared broker, and only theirs go."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from hitrun.dev.worker import delete_run_topics
from hitrun.streams.topics import ensure_topics
from tests.integration.harness import settings_of, unique_env
from tests.integration.test_local_broker import _create

# The topics the first test below made, for the second to look for.
MADE: list[str] = []


async def topic_names(bootstrap: str) -> set[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


def test_a_run_deletes_its_own_topics_and_no_other(kafka_bootstrap: str, tmp_path: Path) -> None:
    env = unique_env(kafka_bootstrap, tmp_path)
    settings = settings_of(env)
    asyncio.run(ensure_topics(settings))
    # Another app whose id merely starts alike ("t-abc" and "t-abcd") would be
    # a bug of the ids, not of the deletion: the prefix is the whole app id, so
    # a different app's topics ("other-t-...") stay.
    other = f"other-{settings.app_id}.checkouts"
    asyncio.run(_create(kafka_bootstrap, other))
    mine = {name for name in asyncio.run(topic_names(kafka_bootstrap)) if settings.app_id in name}
    assert settings.topic_checkouts in mine and settings.changelog_topic in mine

    assert delete_run_topics(env) is None

    left = asyncio.run(topic_names(kafka_bootstrap))
    assert not {name for name in left if name.startswith(settings.app_id)}
    assert other in left
    assert (
        delete_run_topics({"HITRUN_KAFKA_BOOTSTRAP": kafka_bootstrap, "HITRUN_APP_ID": other})
        is None
    )
    assert "no HITRUN_APP_ID" in (
        delete_run_topics({"HITRUN_KAFKA_BOOTSTRAP": kafka_bootstrap}) or ""
    )


def test_a_tests_runs_are_deleted_when_it_ends_part_1(kafka_bootstrap: str, tmp_path: Path) -> None:
    settings = settings_of(unique_env(kafka_bootstrap, tmp_path))
    asyncio.run(ensure_topics(settings))
    MADE[:] = [settings.topic_checkouts, settings.changelog_topic]
    assert set(MADE) <= asyncio.run(topic_names(kafka_bootstrap))


def test_a_tests_runs_are_deleted_when_it_ends_part_2(kafka_bootstrap: str) -> None:
    if not MADE:
        pytest.skip("runs after part 1 only")
    assert not set(MADE) & asyncio.run(topic_names(kafka_bootstrap))


def test_a_bench_on_an_existing_broker_deletes_its_runs_topics(
    kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bench.throughput import cluster, own_run

    monkeypatch.setenv("HITRUN_KAFKA_BOOTSTRAP", kafka_bootstrap)
    with cluster(tmp_path) as bootstrap:
        assert bootstrap == kafka_bootstrap
        settings = settings_of(own_run(unique_env(bootstrap, tmp_path)))
        asyncio.run(ensure_topics(settings))
        assert settings.topic_payments in asyncio.run(topic_names(kafka_bootstrap))
    left = asyncio.run(topic_names(kafka_bootstrap))
    assert not {name for name in left if name.startswith(settings.app_id)}
