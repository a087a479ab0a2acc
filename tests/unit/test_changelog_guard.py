"""A standby's changelog reading stays whole when Faust clears its changelog queue.

The queue, the flow control and their clear are mode's own (what Faust's table
manager uses); the recovery service is reduced to what the guard reads of it:
its standby partitions, the last offset it took of each (it skips records at or
before it) and its buffers of records taken and not yet written.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import TopicPartition
from faust.types import TP
from mode.utils.queues import FlowControlEvent, ThrowableQueue

from hitrun.streams.faust_bridge import ChangelogGuard, FaustSource

STANDBY = TopicPartition("hitrun-customers-changelog", 0)
ACTIVE = TopicPartition("hitrun-customers-changelog", 1)
OTHER_STANDBY = TopicPartition("hitrun-customers-changelog", 2)


class Recovery:
    """The part of Faust's recovery service the guard reads, and its way of taking records."""

    def __init__(self, queue: ThrowableQueue[Any]) -> None:
        self.queue = queue
        # Faust's own TP, as its recovery keeps them.
        self.standby_tps = {TP(*STANDBY), TP(*OTHER_STANDBY)}
        self.standby_offsets: dict[TopicPartition, int | None] = {STANDBY: None, OTHER_STANDBY: 5}
        self.buffers: dict[str, list[Any]] = {"customers": []}
        self.written: list[int] = []

    def take(self, count: int) -> None:
        """Take `count` queued events as Faust's `_slurp_changelogs` does."""
        for _ in range(count):
            event = self.queue.get_nowait()
            tp, offset = event.message.tp, event.message.offset
            seen = self.standby_offsets.get(tp)
            if seen is None or offset > seen:
                self.standby_offsets[tp] = offset
                self.buffers["customers"].append(event)

    def flush(self) -> None:
        self.written += [event.message.offset for event in self.buffers["customers"]]
        self.buffers["customers"].clear()


class Consumer:
    """Faust's consumer as FaustSource uses it; the conductor's callback queues an event."""

    def __init__(self, queue: ThrowableQueue[Any], recovery: Recovery) -> None:
        self.app = SimpleNamespace(tables=SimpleNamespace(changelog_queue=queue, recovery=recovery))
        self.queue = queue
        self.fetches: list[dict[TopicPartition, list[Any]]] = []
        self.seeks: list[tuple[TopicPartition, int | None]] = []
        self._thread = self

    async def callback(self, message: Any) -> None:
        await self.queue.put(SimpleNamespace(message=message))

    def _to_message(self, tp: TopicPartition, record: Any) -> Any:
        return SimpleNamespace(tp=tp, offset=record.offset)

    async def _wait_next_records(self, timeout: float) -> tuple[Any, set[Any]]:
        return (self.fetches.pop(0) if self.fetches else {}), set()

    flow_active = True

    def _get_active_partitions(self) -> set[TopicPartition]:
        return self.assignment()

    # The consumer thread and its aiokafka consumer, for rewinds.
    async def call_thread(self, fn: Any) -> Any:
        return await fn()

    def _ensure_consumer(self) -> Consumer:
        return self

    def assignment(self) -> set[TopicPartition]:
        return {STANDBY, ACTIVE, OTHER_STANDBY}

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp, offset))

    async def seek_to_beginning(self, tp: TopicPartition) -> None:
        self.seeks.append((tp, None))


def run(test: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
    """The test's coroutine on an event loop of its own."""

    @functools.wraps(test)
    def running() -> None:
        asyncio.run(test())

    return running


def records(first: int, last: int) -> list[Any]:
    return [SimpleNamespace(offset=offset) for offset in range(first, last + 1)]


def setup(maxsize: int = 100) -> tuple[FlowControlEvent, Recovery, Consumer, FaustSource]:
    flow = FlowControlEvent(initially_suspended=False)
    queue: ThrowableQueue[Any] = ThrowableQueue(
        maxsize=maxsize, flow_control=flow, clear_on_resume=True
    )
    recovery = Recovery(queue)
    consumer = Consumer(queue, recovery)
    source = FaustSource(consumer, SimpleNamespace())  # type: ignore[arg-type]
    return flow, recovery, consumer, source


async def hand_on_across_a_resume(
    flow: FlowControlEvent, source: FaustSource, tp: TopicPartition, batch: list[Any]
) -> None:
    """Hand `batch` on while the flow is suspended; it goes in once the flow resumes."""
    flow.suspend()
    handing = asyncio.ensure_future(source.pass_on(tp, batch))
    await asyncio.sleep(0.01)
    flow.resume()
    await asyncio.wait_for(handing, 1.0)


def queued(recovery: Recovery) -> list[int]:
    return [event.message.offset for event in recovery.queue._queue]  # type: ignore[attr-defined]


@run
async def test_standby_records_a_resume_drops_are_read_again_from_the_last_one_taken() -> None:
    flow, recovery, consumer, source = setup()
    await source.pass_on(STANDBY, records(0, 9))
    recovery.take(4)  # 0-3 taken, 4-9 still queued
    flow.resume()  # Faust's last resume of a recovery clears the queue

    assert queued(recovery) == []
    # The next fetch (from the position past the loss) sends it back to 4 and drops its records.
    consumer.fetches.append({STANDBY: records(10, 11), ACTIVE: records(0, 1)})
    fetched = await source.fetch(1.0)
    assert consumer.seeks == [(STANDBY, 4)]
    assert set(fetched) == {ACTIVE}
    # Read again from there: every record reaches the store once.
    await source.pass_on(STANDBY, records(4, 11))
    recovery.take(8)
    recovery.flush()
    assert recovery.written == list(range(12))


@run
async def test_a_standby_that_lost_records_before_taking_any_is_read_from_the_start() -> None:
    flow, _recovery, consumer, source = setup()
    await source.pass_on(STANDBY, records(0, 4))
    flow.resume()
    await source.fetch(1.0)
    assert consumer.seeks == [(STANDBY, None)]


@run
async def test_records_of_an_active_partition_are_left_to_faust() -> None:
    # Faust seeks an active partition from what it took at its next recovery.
    flow, _recovery, consumer, source = setup()
    await source.pass_on(ACTIVE, records(0, 4))
    flow.resume()
    assert await source.fetch(1.0) == {}
    assert consumer.seeks == []


@run
async def test_a_put_waiting_for_room_when_the_queue_is_cleared_does_not_end_the_loop() -> None:
    flow, recovery, consumer, source = setup(maxsize=2)
    handing = asyncio.ensure_future(source.pass_on(STANDBY, records(0, 9)))
    await asyncio.sleep(0.01)
    assert not handing.done()  # waiting for room for record 2
    recovery.take(1)
    await asyncio.sleep(0.01)  # record 2 queued, 3 waits
    flow.resume()  # cancels the waiting put

    await asyncio.wait_for(handing, 1.0)  # returns, instead of raising CancelledError
    assert queued(recovery) == []
    await source.fetch(1.0)
    assert consumer.seeks == [(STANDBY, 1)]


@run
async def test_cancelling_the_loop_while_it_waits_for_room_still_cancels_it() -> None:
    _flow, _recovery, _consumer, source = setup(maxsize=2)
    handing = asyncio.ensure_future(source.pass_on(STANDBY, records(0, 9)))
    await asyncio.sleep(0.01)
    handing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await handing


@run
async def test_a_record_queued_after_the_clear_is_forgotten_before_it_is_taken() -> None:
    # A put waiting for the flow to resume goes into the queue right after the clear.
    flow, recovery, consumer, source = setup()
    await source.pass_on(STANDBY, records(0, 4))
    recovery.take(3)  # 0-2 taken
    await hand_on_across_a_resume(flow, source, STANDBY, records(5, 9))

    assert queued(recovery) == []
    assert recovery.standby_offsets[STANDBY] == 2
    await source.fetch(1.0)
    assert consumer.seeks == [(STANDBY, 3)]


@run
async def test_what_was_taken_past_the_loss_is_forgotten_with_the_offset() -> None:
    # Should the recovery service take a record from past the loss before the
    # partition is sent back, it is dropped from its buffer and its last offset
    # goes back, so the records read again are not skipped as seen.
    flow, recovery, consumer, source = setup()
    await source.pass_on(STANDBY, records(0, 4))
    recovery.take(2)  # 0-1 taken
    flow.resume()  # 2-4 lost
    await recovery.queue.put(SimpleNamespace(message=SimpleNamespace(tp=STANDBY, offset=7)))
    recovery.take(1)
    assert recovery.standby_offsets[STANDBY] == 7

    await source.fetch(1.0)
    assert consumer.seeks == [(STANDBY, 2)]
    assert recovery.standby_offsets[STANDBY] == 1
    recovery.flush()
    assert recovery.written == [0, 1]


@run
async def test_a_partition_no_longer_standby_is_left_to_fausts_recovery() -> None:
    # A rebalance made it active after the clear: Faust's recovery seeks it and the
    # records it reads from there (queued or fetched) must all reach the store.
    flow, recovery, consumer, source = setup()
    await source.pass_on(STANDBY, records(0, 4))
    flow.resume()
    recovery.standby_tps = set()
    await recovery.queue.put(SimpleNamespace(message=SimpleNamespace(tp=STANDBY, offset=0)))
    consumer.fetches.append({STANDBY: records(1, 2)})
    assert await source.fetch(1.0) == {STANDBY: records(1, 2)}
    assert consumer.seeks == []
    assert queued(recovery) == [0]
    assert ChangelogGuard.of(consumer.app).pending == {}


@run
async def test_what_a_fetch_brought_before_a_clear_is_not_handed_on_after_it() -> None:
    # A clear while one partition's records are handed on: the same fetch's
    # records of another standby are from before it, and that one is read again.
    flow, recovery, consumer, source = setup()
    consumer.fetches.append({STANDBY: records(0, 1), OTHER_STANDBY: records(6, 9)})
    fetched = await source.fetch(1.0)
    await hand_on_across_a_resume(flow, source, STANDBY, fetched[STANDBY])
    await source.pass_on(OTHER_STANDBY, fetched[OTHER_STANDBY])

    assert queued(recovery) == []
    await source.fetch(1.0)
    assert sorted(consumer.seeks) == [(STANDBY, None), (OTHER_STANDBY, 6)]


@run
async def test_an_active_partitions_record_that_went_in_after_the_clear_is_withdrawn() -> None:
    # Faust sought the active partition before resuming: the record is from before.
    flow, recovery, consumer, source = setup()
    await hand_on_across_a_resume(flow, source, ACTIVE, records(40, 45))

    assert queued(recovery) == []
    await source.fetch(1.0)
    assert consumer.seeks == []
