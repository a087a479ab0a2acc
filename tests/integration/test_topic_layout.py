"""hitrun creates Faust's own topics with the rest, before a worker's consumer starts: the
customer table's changelog (compacted, one partition per customer partition) and the leader
assignor's topic. Left to Faust, they were created as the worker started, after its consumer
had read the cluster's metadata: the group's leader then assigned no changelog partition to
anyone, and a worker that took partitions over recovered none of their states."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from hitrun.streams.config import Settings
from hitrun.streams.processes import WorkerProcess
from hitrun.streams.topics import ensure_topics
from tests.integration.harness import settings_of, start_worker, unique_env


async def layout(settings: Settings) -> tuple[dict[str, int], dict[str, Any]]:
    """Partitions per topic of Faust's two, and the changelog's config."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        names = [settings.changelog_topic, settings.leader_topic]
        counts = {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics(names)}
    finally:
        await admin.close()
    configs = await configs_of(settings, settings.changelog_topic)
    return counts, {name: value for name, (value, _) in configs.items()}


def test_the_worker_topics_include_the_changelog_and_the_leader_topic(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    settings = settings_of(unique_env(kafka_bootstrap, tmp_path))
    created = asyncio.run(ensure_topics(settings))
    assert {settings.changelog_topic, settings.leader_topic} <= set(created)
    counts, config = asyncio.run(layout(settings))
    assert counts == {settings.changelog_topic: settings.partitions, settings.leader_topic: 1}
    assert config["cleanup.policy"] == "compact"


async def configs_of(settings: Settings, topic: str) -> dict[str, tuple[str, int]]:
    """The topic's configs: value and source (1: set on the topic)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        resource = ConfigResource(ConfigResourceType.TOPIC, topic)
        for _ in range(50):  # a topic just created may not be described yet
            (response,) = await admin.describe_configs([resource])
            error, _, _, _, entries = response.resources[0]
            if not error and entries:
                return {entry[0]: (entry[1], entry[3]) for entry in entries}
            await asyncio.sleep(0.1)
        raise AssertionError(f"topic {topic} not described: {response.resources}")
    finally:
        await admin.close()


async def create_as_an_older_version_did(settings: Settings) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        # CreateTime (the default) and a retention an operator chose.
        topic = NewTopic(
            settings.reroute_topic,
            settings.partitions,
            1,
            topic_configs={"retention.ms": "12345678"},
        )
        await admin.create_topics([topic])
    finally:
        await admin.close()


def test_the_reroute_topic_is_stamped_by_the_broker_even_when_an_older_version_made_it(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """The workers read the broker's time from their writes to it (streams/brokertime.py)."""
    fresh = settings_of(unique_env(kafka_bootstrap, tmp_path))
    asyncio.run(ensure_topics(fresh))
    configs = asyncio.run(configs_of(fresh, fresh.reroute_topic))
    assert configs["message.timestamp.type"][0] == "LogAppendTime"

    older = settings_of(unique_env(kafka_bootstrap, tmp_path))
    asyncio.run(create_as_an_older_version_did(older))
    assert asyncio.run(configs_of(older, older.reroute_topic))["message.timestamp.type"] == (
        "CreateTime",
        5,  # the broker's default
    )
    created = asyncio.run(ensure_topics(older))
    assert older.reroute_topic not in created
    configs = asyncio.run(configs_of(older, older.reroute_topic))
    assert configs["message.timestamp.type"] == ("LogAppendTime", 1)
    assert configs["retention.ms"] == ("12345678", 1)  # the operator's, kept


async def grow(settings: Settings, topic: str, total: int) -> None:
    """What an operator's `kafka-topics --alter --partitions` does."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_partitions({topic: NewPartitions(total_count=total)})
    finally:
        await admin.close()


def test_a_running_worker_stops_when_an_input_topic_gains_partitions(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Faust would assign the grown topic apart from the others: one worker could then apply
    a customer's checkouts while another owns the customer's payments and state."""
    env = unique_env(kafka_bootstrap, tmp_path)
    settings = settings_of(env)
    grown = f"topic {settings.topic_checkouts} has {settings.partitions * 2} partitions"
    worker = start_worker(env, tmp_path)
    try:
        asyncio.run(grow(settings, settings.topic_checkouts, settings.partitions * 2))
        assert worker.process is not None
        # The consumer's metadata is refreshed every 30 s; the rebalance follows.
        assert worker.process.wait(timeout=90) != 0
        assert f"{grown} now" in worker.log_tail(200)
    finally:
        worker.stop()
    # Started again, it refuses the layout before it joins the group.
    again = WorkerProcess(env, tmp_path / "again.log").launch()
    try:
        assert again.process is not None
        assert again.process.wait(timeout=60) != 0
        assert grown in again.log_tail(200)
    finally:
        again.stop()
