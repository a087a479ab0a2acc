"""hitrun creates Faust's own topics with the rest, before a worker's consumer starts: the
customer table's changelog (compacted, one partition per customer partition) and the leader
assignor's topic. Left to Faust, they were created as the worker started, after its consumer
had read the cluster's metadata: the group's leader then assigned no changelog partition to
anyone, and a worker that took partitions over recovered none of their states."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from hitrun.streams.config import Settings
from hitrun.streams.topics import ensure_topics
from tests.integration.harness import settings_of, unique_env


async def layout(settings: Settings) -> tuple[dict[str, int], dict[str, Any]]:
    """Partitions per topic of Faust's two, and the changelog's config."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        names = [settings.changelog_topic, settings.leader_topic]
        counts = {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics(names)}
        resource = ConfigResource(ConfigResourceType.TOPIC, settings.changelog_topic)
        (response,) = await admin.describe_configs([resource])
        entries = response.resources[0][4]
        return counts, {entry[0]: entry[1] for entry in entries}
    finally:
        await admin.close()


def test_the_worker_topics_include_the_changelog_and_the_leader_topic(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    settings = settings_of(unique_env(kafka_bootstrap, tmp_path))
    created = asyncio.run(ensure_topics(settings))
    assert {settings.changelog_topic, settings.leader_topic} <= set(created)
    counts, config = asyncio.run(layout(settings))
    assert counts == {settings.changelog_topic: settings.partitions, settings.leader_topic: 1}
    assert config["cleanup.policy"] == "compact"
