"""Every Faust internal hitrun relies on, in one place; tests/unit/test_faust_bridge.py pins them.

Faust stays hitrun's application framework: group membership, partition
assignment, table recovery, the web server and the command line. What hitrun
takes over is the path of an input record from the fetch to the commit
(streams/loop.py): Faust's consumer hands every fetched message to the
conductor and a stream one at a time (several tasks and an `asyncio.wait`
per message), acknowledges through a gap-tracking offset list, and commits
whatever that list says. hitrun replaces the consumer's drain coroutine so
that each fetched batch goes to its own loop whole, and commits the offsets
that loop has applied and had confirmed.

The internals used, all of faust-streaming 0.15's aiokafka driver:

- `Transport.Consumer` (the class the app instantiates; replaced before the
  consumer is created) and `Consumer._drain_messages(fetcher)` (the
  coroutine the Fetcher service runs; overridden);
- `Consumer._wait_next_records(timeout)` (one fetch of the active, not
  paused, partitions; it waits while the flow is stopped, and sleeps a whole
  second when no partition is active), `flow_active`, `can_resume_flow`,
  `wait`, `_get_active_partitions()`, `callback` and `_to_message` (records of
  topics hitrun does not own, such as changelogs during recovery, still go to
  the conductor), `_stopped`;
- `AIOKafkaConsumerThread._create_worker_consumer` (makes the aiokafka
  consumer with `fetch_max_wait_ms=1500` and aiokafka's `fetch_max_bytes`
  of 50 MiB, which aiokafka keeps as `_fetch_max_wait_ms` and
  `_fetch_max_bytes` until it starts): `HitrunConsumerThread`;
- `Consumer._read_offset` (the committed offsets `perform_seek` read back
  when the partitions were resumed);
- `Consumer._thread` (the consumer thread and its aiokafka consumer):
  `call_thread`, `_ensure_consumer()`, `tp_last_committed_at`; of aiokafka,
  the consumer's group coordinator (`_coordinator`: `group_id`, `generation`,
  `member_id`, `_send_req`), to which `FaustSource.check_membership` sends a
  heartbeat of its own;
- `App.consumer_generation_id`, `App.assignor.assigned_actives()`,
  `App.tables.recovery.completed`, `App.tables.recovery.active_highwaters`
  (the end offset less one of each active changelog partition, read when the
  recovery began) and `App.tables.actives_ready`;
- `Transport.Producer` (the class the app instantiates),
  `Producer.create_topic` (declares a topic, then forces a metadata update of
  every topic on the broker) and `Producer._ensure_producer()` (its aiokafka
  producer, whose client's `add_topic` tracks a topic): `HitrunProducer`;
- `TableManager.on_start` (a 1 s sleep, then `_update_channels()` and
  `recovery.start()`: `PromptTableManager`) and mode's
  `Worker._sentinel_task` (a 1 s sleep before the loop closes:
  `PromptWorker`);
- the table manager's `changelog_queue` (a ThrowableQueue the flow control
  clears on every resume, cancelling puts waiting for room) and the recovery
  service's `standby_tps`, `standby_offsets` (the last offset it took of each
  standby partition; it skips records at or before it) and `buffers` (taken,
  not yet written): `ChangelogGuard`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, cast

import aiokafka.errors as kafka_errors
import faust
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.protocol.group import HeartbeatRequest
from aiokafka.structs import OffsetAndMetadata
from faust.tables.manager import TableManager
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.worker import Worker as FaustWorker

if TYPE_CHECKING:
    from aiokafka import ConsumerRecord

RecordMap = Mapping[TopicPartition, list["ConsumerRecord[bytes, bytes]"]]

# How long the broker holds a worker's fetch that finds no new record (Faust's 1.5 s
# otherwise). The broker answers one request of a connection at a time, so the end
# offsets a recovery reads at every rebalance waited behind an idle fetch for as
# long. An idle worker fetches four times a second instead.
FETCH_MAX_WAIT_MS = 250
# How long a fetch waits when no partition may be fetched (a recovery has paused
# them all): Faust sleeps a second there, and the loop prepares the assignment (and
# answers /readyz) only after that fetch.
NOTHING_TO_FETCH_S = 0.05

log = logging.getLogger(__name__)

# The faust-streaming releases whose internals this module was written against
# (pyproject.toml pins the same range).
SUPPORTED_FAUST = ((0, 15, 3), (0, 15, 99))


class Fenced(Exception):
    """The group has moved on without this worker: its partitions may be another's now."""


# The coordinator's answers to a heartbeat that say the member is no longer in the group's
# current generation (it was removed after its session timed out, or the generation moved on).
_NOT_A_MEMBER = (kafka_errors.UnknownMemberIdError, kafka_errors.IllegalGenerationError)


class Runner(Protocol):
    """What the consumer hands its fetching over to (streams/loop.py's ConsumeLoop)."""

    async def run(self, source: FaustSource) -> None: ...


class HitrunConsumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer whose fetched records go to hitrun's loop, batch by batch."""

    runner: Runner | None = None

    async def _drain_messages(self, fetcher: Any) -> None:
        runner = type(self).runner
        if runner is None:  # no loop installed: Faust's own per-message path
            await super()._drain_messages(fetcher)
            return
        try:
            await runner.run(FaustSource(self, fetcher))
        except self.consumer_stopped_errors:
            if not self.app.should_stop:
                raise
            # Stopping already: the broker closed the consumer on the way out.

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return HitrunConsumerThread(self, loop=self.loop, beacon=self.beacon)

    def verify_event_path(self, now: float, tp: Any) -> None:
        """Faust's livelock check (every 2.5 commit intervals), skipping a partition whose
        position is unknown: one the loop sent back to the beginning of its log (a
        rewind) until the consumer has looked the position up. Faust reads that
        position unguarded, and its assertion crashed the worker (both workers of a
        chaos run at once, rewinding after the same rebalance)."""
        if not _position_known(self._thread, tp):
            return
        super().verify_event_path(now, tp)


class HitrunConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Faust's consumer thread, whose aiokafka consumer waits at most FETCH_MAX_WAIT_MS
    for an idle fetch, and asks at most `fetch_total_bytes` of a fetch over all its
    partitions (Kafka's fetch.max.bytes).

    Faust bounds a fetch per partition only (`consumer_max_fetch_size`), and aiokafka
    keeps what a fetch brought until the loop takes it: a worker assigned many
    partitions with a backlog (catching up after an outage, or recovering its
    changelog partitions after a rebalance) would otherwise hold up to the
    per-partition bound for each of them, 50 MiB at most.
    """

    fetch_total_bytes: ClassVar[int] = 50 * 1024 * 1024  # aiokafka's default

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # Both read when the consumer starts (its fetcher is made there).
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
        consumer._fetch_max_bytes = type(self).fetch_total_bytes
        return consumer


class HitrunProducer(faust_aiokafka.Producer):
    """Faust's producer, which does not declare the topics hitrun has created (`existing`).

    A worker's Faust declares its changelog and leader topics as it starts (each
    twice), and forces a metadata update of its producer after each declaration.
    That producer sends to no topic, so each update reads every topic the broker
    has: 170-300 ms apiece against a broker holding 3,400 topics, about a second
    of each worker's start. `hitrun worker` creates them all before Faust starts
    (streams/topics.py). The update is what tells the producer the changelog's
    partitions, which Faust's router reads to find a key's worker (`GET
    /customers/{id}`): the producer now tracks each such topic, and reads the
    metadata of the topics it tracks only.
    """

    existing: ClassVar[frozenset[str]] = frozenset()

    async def create_topic(
        self, topic: str, partitions: int, replication: int, **kwargs: Any
    ) -> None:
        if topic not in self.existing:
            await super().create_topic(topic, partitions, replication, **kwargs)
            return
        await self._ensure_producer().client.add_topic(topic)


class PromptTableManager(TableManager):
    """Faust's table manager without its start-up second.

    Faust's sleeps a second when it starts, to let an app register tables late;
    hitrun's one table exists before the worker starts (agents/customer.py), and
    that second was half of a worker's time to ready (`hitrun replay` waits for
    it before it publishes).
    """

    async def on_start(self) -> None:
        if self.should_stop:
            return
        await self._update_channels()
        await self.recovery.start()


class PromptWorker(FaustWorker):
    """Faust's worker without the second it idles after stopping, once every service
    has stopped and every task is gathered: a stopped worker's process ends at once,
    which `hitrun replay`, the tests and a rolling restart all wait for."""

    async def _sentinel_task(self) -> None:
        # One more pass of the loop, for callbacks the last tasks scheduled.
        await asyncio.sleep(0)


def _position_known(thread: Any, tp: Any) -> bool:
    """Has the aiokafka consumer of `thread` a position for `tp` (False while it resets)?"""
    consumer = getattr(thread, "_consumer", None)
    if consumer is None:
        return False
    subscription = consumer._fetcher._subscriptions.subscription
    assignment = None if subscription is None else subscription.assignment
    if assignment is None:
        return False
    state = assignment.state_value(TopicPartition(tp.topic, tp.partition))
    return state is not None and bool(state.has_valid_position)


def tables_recovered(app: Any) -> bool:
    """Are the tables recovered for the current assignment?

    Faust sets its recovery's `completed` event at the end of the first recovery
    and never clears it; the table manager's `actives_ready` goes false when a
    rebalance starts (the rebalance listener's revocation) and true once that
    rebalance's recovery is done. With `completed` alone, a worker took its
    tables for recovered during every later recovery: the loop wrote progress
    marks then, which rebuilt the deadline index and restored the clocks from a
    store still being recovered, once for the whole assignment.
    """
    tables = app.tables
    # TableManager always has a recovery service; its type stub omits it.
    return bool(tables.recovery.completed.is_set() and tables.actives_ready)


def install(app: faust.App, runner: Runner, *, fetch_total_bytes: int | None = None) -> None:
    """Make `app`'s consumer hand its fetched batches to `runner`, and ask at most
    `fetch_total_bytes` of a fetch (aiokafka's default when None).

    Must run before the app creates its consumer (at worker start).
    """
    if app._consumer is not None:
        raise RuntimeError("the app's consumer exists already; install the loop before it starts")
    HitrunConsumer.runner = runner
    if fetch_total_bytes is not None:
        HitrunConsumerThread.fetch_total_bytes = fetch_total_bytes
    # Transport.create_consumer instantiates `self.Consumer`, create_producer `self.Producer`.
    app.transport.Consumer = HitrunConsumer  # type: ignore[misc]  # a ClassVar set per transport
    app.transport.Producer = HitrunProducer  # type: ignore[misc]


class FaustSource:
    """What the loop needs of Faust's consumer: fetch, pass on, rewind, commit, ownership."""

    def __init__(self, consumer: HitrunConsumer, fetcher: Any) -> None:
        self._consumer = consumer
        self._fetcher = fetcher
        self.app = consumer.app
        self._guard = ChangelogGuard.of(self.app)
        self._fetched_at = self._guard.clears  # the guard's count of clears at the last fetch

    def stopping(self) -> bool:
        return bool(
            self._consumer._stopped.is_set()
            or self._fetcher._stopped.is_set()
            or self._consumer.should_stop
        )

    @property
    def generation(self) -> int:
        return int(self.app.consumer_generation_id)

    @property
    def flow_active(self) -> bool:
        return bool(self._consumer.flow_active)

    async def fetch(self, wait_s: float) -> RecordMap:
        """One fetch from the active partitions (empty while the flow is stopped).

        A standby changelog partition that lost records to a clear of Faust's
        changelog queue is first sent back to where they start, and what this
        fetch brought of it (from past the loss) is left out. With no partition to
        fetch (paused for a recovery), it waits NOTHING_TO_FETCH_S at most.
        """
        consumer = self._consumer
        if not consumer.flow_active:
            # mode types the waitable as its own Event; an asyncio.Event works as well.
            await consumer.wait(consumer.can_resume_flow)  # type: ignore[arg-type]
        records: RecordMap | None
        if consumer._get_active_partitions():
            records = await self._next_records(wait_s)
        else:
            await asyncio.sleep(min(wait_s, NOTHING_TO_FETCH_S))
            records = None
        repaired = await self._guard.repair(self)
        self._fetched_at = self._guard.clears
        if not records or not repaired:
            return records or {}
        return {tp: batch for tp, batch in records.items() if tp not in repaired}

    async def _next_records(self, wait_s: float) -> RecordMap | None:
        """Faust's fetch, riding through a rebalance that cancels it under the loop.

        The consumer thread's fetch is cancelled when a rebalance starts, and the
        cancellation comes back through Faust's thread call as a CancelledError,
        although nothing cancelled the loop's task. Faust's fetcher takes it for a
        restart and calls a supervisor it does not have: the worker crashed
        whenever another joined or left (about one chaos run in four). The loop
        fetches again instead; a cancellation of the loop's own task (the worker
        stopping) still ends it.
        """
        try:
            records, _active = await self._consumer._wait_next_records(wait_s)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is None or task.cancelling():
                raise
            log.info("a fetch was cancelled under the loop (a rebalance): fetching again")
            return None
        return cast(RecordMap | None, records)

    async def pass_on(self, tp: TopicPartition, records: Iterable[Any]) -> None:
        """Hand records of a topic hitrun does not own (a changelog) to Faust's conductor.

        Faust clears its changelog queue when the flow resumes, to drop what was
        fetched before: records fetched before a clear are not handed on after
        it, and a standby partition is then read again (`ChangelogGuard`).
        """
        consumer = self._consumer
        guard = self._guard
        for record in records:
            if tp in guard.pending:
                return
            try:
                await consumer.callback(consumer._to_message(tp, record))
            except asyncio.CancelledError:
                # A put waiting for room is cancelled when the queue is cleared.
                # Anything else cancelling the task goes on.
                task = asyncio.current_task()
                if task is None or task.cancelling() or guard.clears == self._fetched_at:
                    raise
            if guard.clears != self._fetched_at:
                # Fetched before a clear (its put may have waited for the flow to
                # resume, and gone in after the clear): taken out again.
                guard.withdraw(tp, record.offset)
                guard.lost(tp)
                return

    async def rewind(self, tp: TopicPartition, offset: int | None) -> None:
        """Read `tp` again from `offset` (None: from the beginning of its log), if it is still
        assigned; the consumer thread applies it before its next fetch."""
        thread = self._consumer._thread

        async def rewind_in_thread() -> None:
            consumer = thread._ensure_consumer()
            if tp not in consumer.assignment():
                return  # taken away meanwhile: the next assignment starts afresh
            if offset is None:
                await consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, offset)

        await thread.call_thread(rewind_in_thread)

    def highwater(self, tp: TopicPartition) -> int | None:
        """The end offset of `tp` as the last fetch response gave it (None before one)."""
        consumer = self._consumer._thread._consumer
        if consumer is None:
            return None
        value = consumer.highwater(tp)
        return None if value is None else int(value)

    def partition_count(self, topic: str) -> int | None:
        """How many partitions `topic` has in the consumer's cluster metadata (None: unknown)."""
        consumer = self._consumer._thread._consumer
        if consumer is None:
            return None
        found = consumer._client.cluster.partitions_for_topic(topic)
        return None if found is None else len(found)

    def start_offset(self, tp: TopicPartition) -> int | None:
        """Where reading `tp` started after the last assignment (its committed offset)."""
        value = self._consumer._read_offset.get(tp)
        return None if value is None else int(value)

    def assignment(self) -> set[TopicPartition]:
        return {TopicPartition(tp.topic, tp.partition) for tp in self._consumer.assignment()}

    def owned_partitions(self, topic: str) -> set[int]:
        """Partition numbers of `topic` this worker actively owns."""
        return {tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic == topic}

    def recovered(self) -> bool:
        """Tables recovered for the current assignment (Faust resumes fetching only then)."""
        return tables_recovered(self.app)

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Commit `offsets` (next offset to read per partition) for the group.

        Runs in the consumer thread, like every call on its aiokafka consumer;
        raises the consumer's error (CommitFailedError after a rebalance, a
        KafkaError while the broker is away) instead of crashing the worker,
        as Faust's own commit would.
        """
        thread = self._consumer._thread

        async def commit_in_thread() -> None:
            consumer = thread._ensure_consumer()
            owned = consumer.assignment()
            mine = {
                tp: OffsetAndMetadata(offset, "") for tp, offset in offsets.items() if tp in owned
            }
            if mine:
                await consumer.commit(mine)
                now = time.monotonic()  # the clock Faust's livelock check reads
                thread.tp_last_committed_at.update(dict.fromkeys(mine, now))

        await thread.call_thread(commit_in_thread)

    async def check_membership(self) -> None:
        """Raise `Fenced` unless the group coordinator still counts this worker a member of
        the generation it was assigned its partitions in.

        A worker stalled past its session timeout (a pause of the process, a
        machine starved of CPU, a network cut off from the coordinator) is
        removed from the group and its partitions go to another worker; when it
        runs again it goes on with the batch in hand until a heartbeat tells it.
        Its offset commits are refused then, but nothing refuses its writes to
        the table's changelog: written after the new owner's, they would undo
        them. So the loop asks before a batch's state records are sent (one
        heartbeat of its own), and drops the batch when the answer is no. A
        member whose group is rebalancing is still a member: its partitions
        move only once it has rejoined (revoking them waits for the batch in
        hand) or been removed. An answer that says neither (no coordinator
        known, the broker away) raises the error, which the loop retries.
        """
        thread = self._consumer._thread

        async def heartbeat_in_thread() -> type[KafkaError]:
            coordinator = thread._ensure_consumer()._coordinator
            request = HeartbeatRequest(
                coordinator.group_id, coordinator.generation, coordinator.member_id
            )
            response = await coordinator._send_req(request)
            return cast(type[KafkaError], kafka_errors.for_code(response.error_code))

        answer = await thread.call_thread(heartbeat_in_thread)
        if answer is kafka_errors.NoError or answer is kafka_errors.RebalanceInProgressError:
            return
        if answer in _NOT_A_MEMBER:
            raise Fenced(f"the group coordinator answered {answer.__name__}")
        raise answer()


def recovered_ends(app: faust.App) -> dict[TopicPartition, int]:
    """Per active changelog partition of the last recovery, the offset it read up to
    (exclusive): Faust keeps the end offset less one as the partition's highwater."""
    tables: Any = app.tables  # TableManager always has a recovery service; its stub omits it.
    highwaters = tables.recovery.active_highwaters
    return {
        TopicPartition(tp.topic, tp.partition): int(highwater) + 1
        for tp, highwater in highwaters.items()
        if highwater is not None
    }


class ChangelogGuard:
    """Keeps a standby's reading of its changelog whole across clears of Faust's changelog queue.

    The loop hands changelog records to Faust's conductor, which queues them
    (the table manager's changelog queue, bounded) for the recovery service
    to write to the table's store. Faust clears that queue each time the flow
    resumes, to drop what was fetched before a seek, and a recovery resumes it
    once more after it has resumed the standby partitions and awaited the
    broker: standby records fetched in between were dropped while the
    consumer's position stayed past them, so the standby's store missed them
    for good, and a worker taking the partition over from it started without
    them (its stored offset said it had read everything). The clear also
    cancels a put waiting for room in the full queue, which ended the loop's
    task: the worker stopped consuming without a word.

    The guard counts the clears and notes, just before each, every standby
    partition that loses records, and where to read it again: after the last
    offset the recovery service took of it. `FaustSource` hands on nothing
    fetched before a clear (a standby partition it drops is noted the same
    way), and `repair`, at the next fetch, sends the noted partitions back.
    """

    def __init__(self, recovery: Any, queue: Any) -> None:
        self.recovery = recovery
        self.queue = queue
        self.clears = 0
        # Standby partitions to read again, from this offset (None: the start of the log).
        # Faust's TP and aiokafka's TopicPartition are named tuples of the same
        # fields: they compare and hash alike, so either finds the other here.
        self.pending: dict[TopicPartition, int | None] = {}
        clear = queue.clear

        def clear_noting_losses() -> None:
            for tp in {event.message.tp for event in self.queue._queue}:
                self.lost(tp)
            self.clears += 1
            clear()

        queue.clear = clear_noting_losses

    @classmethod
    def of(cls, app: Any) -> ChangelogGuard:
        """The guard of `app`'s changelog queue (installed once, the first time)."""
        tables: Any = app.tables
        queue = tables.changelog_queue
        guard = getattr(queue, "hitrun_guard", None)
        if guard is None:
            guard = queue.hitrun_guard = cls(tables.recovery, queue)
        return cast(ChangelogGuard, guard)

    def lost(self, tp: TopicPartition) -> None:
        """Records of `tp` that the recovery service has not taken will not reach it: a
        standby partition is to be read again after the last one it took."""
        if tp not in self.recovery.standby_tps:
            return  # an active partition: Faust seeks it before it resumes the flow
        taken = self.recovery.standby_offsets.get(tp)
        again = None if taken is None or taken < 0 else taken + 1
        if tp in self.pending:
            again = _earlier(self.pending[tp], again)
        self.pending[tp] = again

    def withdraw(self, tp: TopicPartition, offset: int | None) -> None:
        """Take the queued records of `tp` from `offset` on (None: all) out of the queue."""

        def later(event: Any) -> bool:
            return event.message.tp == tp and (offset is None or event.message.offset >= offset)

        queued = self.queue._queue
        kept = [event for event in queued if not later(event)]
        queued.clear()
        queued.extend(kept)
        for buffer in self.recovery.buffers.values():
            buffer[:] = [event for event in buffer if not later(event)]

    def purge(self, tp: TopicPartition) -> None:
        """Forget what the recovery service holds of `tp` from where it is read again:
        queued, or taken and not yet written, and its last offset taken."""
        again = self.pending[tp]
        self.withdraw(tp, again)
        offsets = self.recovery.standby_offsets
        floor = -1 if again is None else again - 1
        taken = offsets.get(tp)
        if taken is not None and taken > floor:
            offsets[tp] = floor

    async def repair(self, source: FaustSource) -> set[TopicPartition]:
        """Send every standby partition that lost records back to where they start;
        returns the partitions handled (records fetched of them before are past the loss)."""
        repaired: set[TopicPartition] = set()
        for tp in list(self.pending):
            if tp not in self.recovery.standby_tps:
                # No longer a standby here (a rebalance came between): Faust's recovery
                # seeks it, and what the fetch brought of it is from there.
                del self.pending[tp]
                continue
            self.purge(tp)
            repaired.add(tp)
            again = self.pending[tp]
            log.warning(
                "%s[%d]: Faust dropped standby records it had not applied; reading again from %s",
                tp.topic,
                tp.partition,
                "the start" if again is None else again,
            )
            try:
                await source.rewind(tp, again)
            except KafkaError as exc:
                log.warning("rewinding %s failed: %r", tp, exc)
                continue  # still pending: its records are refused, the next fetch tries again
            if self.pending.get(tp, again) == again:
                self.pending.pop(tp, None)
        return repaired


def _earlier(a: int | None, b: int | None) -> int | None:
    return None if a is None or b is None else min(a, b)
