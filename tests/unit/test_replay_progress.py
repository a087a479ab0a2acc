"""How far a worker group is: topics that do not exist are not waited for."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from aiokafka import TopicPartition

from hitrun.streams.config import Settings
from hitrun.streams.replay import Progress


class Cluster:
    """A broker's answers: the topics it has, their end offsets, the group's committed ones."""

    def __init__(self, ends: dict[TopicPartition, int], committed: dict[TopicPartition, int]):
        self.ends = ends
        self.committed = committed

    async def list_topics(self) -> list[str]:
        return sorted({tp.topic for tp in self.ends})

    async def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        unknown = [tp for tp in partitions if tp not in self.ends]
        if unknown:  # what aiokafka does: stale metadata, retried until it times out
            raise TimeoutError(f"stale metadata for {unknown}")
        return {tp: self.ends[tp] for tp in partitions}

    async def list_consumer_group_offsets(self, group: str) -> dict[TopicPartition, Any]:
        return {tp: SimpleNamespace(offset=n) for tp, n in self.committed.items()}


def progress_on(cluster: Cluster, settings: Settings) -> Progress:
    progress = Progress(settings)
    progress._consumer = cluster  # type: ignore[assignment]
    progress._admin = cluster  # type: ignore[assignment]
    return progress


def test_topics_that_do_not_exist_are_not_waited_for() -> None:
    settings = Settings.from_env({"HITRUN_APP_ID": "old-revision", "HITRUN_PARTITIONS": "2"})
    # A revision from before the identity stage: its input topics and reroute topic only.
    topics = (*settings.watermarked_topics, settings.reroute_topic)
    ends = {TopicPartition(t, p): 10 for t in topics for p in range(2)}
    committed = dict(ends)
    first = TopicPartition(settings.watermarked_topics[0], 1)
    committed[first] = 4
    progress = progress_on(Cluster(ends, committed), settings)

    assert asyncio.run(progress.remaining_by_partition()) == {first: 6}
    committed[first] = 10
    assert asyncio.run(progress.remaining()) == 0


def test_records_of_the_internal_topics_are_waited_for_once_they_exist() -> None:
    settings = Settings.from_env({"HITRUN_APP_ID": "current", "HITRUN_PARTITIONS": "1"})
    topics = (*settings.watermarked_topics, settings.reroute_topic, settings.identity_topic)
    ends = {TopicPartition(t, 0): 3 for t in topics}
    progress = progress_on(Cluster(ends, {}), settings)

    left = asyncio.run(progress.remaining_by_partition())
    assert left[TopicPartition(settings.identity_topic, 0)] == 3
    assert TopicPartition(settings.links_topic, 0) not in left
    assert sum(left.values()) == 3 * len(topics)
