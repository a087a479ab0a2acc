"""Writing over what another writer put among a worker's state records.

A worker the group has removed (stalled past its session timeout) may still
have a batch's state records on their way when it runs again: they land after
the records its successor wrote meanwhile, and would say, to whoever reads
the changelog next, what the stalled worker had computed. The loop asks the
group coordinator before sending state records (`FaustSource.check_membership`),
but a stall between that answer and the records reaching the broker still
lets them through. The record sink notices such records: its own records of
a partition do not land where it expected them (`Gap`). The owner then reads
the keys the other writer wrote and writes its own stored value of each over
them; the stalled worker, no longer a member, drops its batch instead.
"""

from __future__ import annotations

from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, TopicPartition

from hitrun.streams.config import Settings
from hitrun.streams.sink import Gap
from hitrun.streams.topics import committed_reader, read_from


class ChangelogReader:
    """Reads the state partitions' ends (asked at every revocation: a consumer of its own,
    no group, kept between revocations) and the keys written in gaps (rare: a consumer
    started for each)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._consumer: AIOKafkaConsumer | None = None

    async def ends(self, tps: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        """The end offset of each partition."""
        if self._consumer is None:
            self._consumer = await committed_reader(self.settings)
        try:
            ends: dict[TopicPartition, int] = await self._consumer.end_offsets(list(tps))
        except BaseException:
            await self.stop()  # a new one next time
            raise
        return ends

    async def stop(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()

    async def keys_in(self, gaps: Iterable[Gap]) -> dict[TopicPartition, set[bytes]]:
        """The keys of the records in the gaps, per partition."""
        gaps = list(gaps)
        since: dict[TopicPartition, int] = {}
        for gap in gaps:
            since[gap.tp] = min(since.get(gap.tp, gap.start), gap.start)
        keys: dict[TopicPartition, set[bytes]] = {}
        async for tp, record in read_from(self.settings, since):
            inside = any(g.tp == tp and g.start <= record.offset < g.end for g in gaps)
            if inside and record.key is not None:
                keys.setdefault(tp, set()).add(record.key)
        return keys
