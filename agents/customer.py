"""The customer agent: applies every input record and live tick that hitrun's loop hands it.

It decodes and guards each message, moves the partition's stream clock, fires
due timers through the deadline index, applies the event to the customer's
state, and queues what the detectors decided. streams/loop.py owns the batch:
it publishes the queued records, waits for the broker, and only then lets the
agent write the new states to the table's store and commits the input offsets.
"""

from __future__ import annotations

import itertools
import logging
import os
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, TypeVar, cast

import faust
import msgspec
from aiokafka import TopicPartition
from faust.types import StoreT
from yarl import URL

from hitrun.agents import identity, retention, unpaid
from hitrun.agents.alerts import (
    Alert,
    alert_id,
    encode_alert,
    link_alert,
    retention_alert,
    to_alert,
)
from hitrun.agents.effects import (
    Blacklist,
    CloseOrder,
    DropUnmatchedPayment,
    Effect,
    RecordPurchase,
    RecordStrike,
    ReportRecovery,
    ReverseStrike,
    SendReminder,
    Unblacklist,
)
from hitrun.agents.identity import LinkEffect, Report, Sighting
from hitrun.agents.linking import IdentifierStates, InternalRecords, LinkRules
from hitrun.agents.retention import Purchase, RetentionEffect, RetentionState
from hitrun.agents.risk import traits_of
from hitrun.agents.state import (
    CustomerState,
    Summary,
    decode_state,
    encode_state,
    from_snapshot,
    next_wake,
    policy_fingerprint,
    snapshot,
    stamp_of,
    stamped,
    stored_summary,
)
from hitrun.agents.unpaid import UnpaidState
from hitrun.schemas.records import (
    EARLIEST_TIME,
    AdminActionRequested,
    CheckoutConfirmed,
    CustomerEvent,
    InquiryReceived,
    OrderStatusChanged,
    PaymentAttempted,
    SourceCoordinates,
    Watermark,
)
from hitrun.schemas.registry import ALERT_TYPES, fields_of
from hitrun.streams import faust_bridge, progress
from hitrun.streams.allocator import give_back
from hitrun.streams.app import (
    app,
    ingest_rules,
    input_topic,
    metrics,
    settings,
)
from hitrun.streams.brokertime import broker_time
from hitrun.streams.clock import (
    ClockRecord,
    DeadlineIndex,
    PartitionClock,
    ReorderBuffer,
    Tier,
    to_micros,
)
from hitrun.streams.codec import encode
from hitrun.streams.errors import (
    EventIdReused,
    FromFuture,
    InputRejected,
    LateEvent,
    ProcessingError,
    SchemaViolation,
    Unauthenticated,
)
from hitrun.streams.fencing import WriterTokens, token_of
from hitrun.streams.ingest import (
    Accepted,
    RawMessage,
    Rejected,
    Reroute,
    Verdict,
    classify,
    dead_letter_for,
    origin_of,
)
from hitrun.streams.kafka_auth import client_options
from hitrun.streams.logs import AlertCounts
from hitrun.streams.loop import CaughtUp, ConsumeLoop
from hitrun.streams.partitioning import partition_for_key
from hitrun.streams.repair import ChangelogReader
from hitrun.streams.rocks import (
    PartitionedRocksStore,
    get_raw,
    owned_items,
    store_rise,
    stored_rise,
    write_raw,
)
from hitrun.streams.sink import Headers, OutRecord, RecordSink

log = logging.getLogger(__name__)
T = TypeVar("T")

policies = settings.unpaid_policies()
retention_policy = settings.retention_policy()
link_policy = settings.link_policy()
REPLAY = settings.clock_mode == "replay"
# Retention timers fire this long after their due instant on the stream clock,
# so that an event within the allowed lateness still finds its window open.
LATENESS = settings.allowed_lateness
MAX_CLOCK_SKEW = settings.max_clock_skew
MAX_HELD = settings.max_held_events
# Live mode, more than one partition: a partition's clock waits for the other
# partitions' progress marks, so that an event its producer put in another
# partition is rerouted and read before a deadline it meets fires
# (streams/progress.py). HITRUN_PROGRESS_INTERVAL=0s turns this off.
ALIGN_SOURCES = not REPLAY and settings.partitions > 1 and bool(settings.progress_interval)
# Marks follow reading: at most every progress interval while input is read (so a
# backlog is released in small steps), every tick interval when idle.
PROGRESS_INTERVAL_S = settings.progress_interval.total_seconds()
IDLE_MARKS_S = max(PROGRESS_INTERVAL_S, settings.tick_interval.total_seconds())
PROGRESS_TIMEOUT_S = settings.progress_timeout.total_seconds()
# More than one partition: the identity stage applies sightings, and the customer stage
# link reports, in event-time order, whichever partition sent them. Each is held until
# every partition's marks on its topic say that partition has sent all before its time
# (`take_held`), so which customers an identifier links before it turns common, and
# when a customer's link is strong, do not depend on the order records happen to arrive.
ORDER_SIGHTINGS = settings.partitions > 1 and bool(settings.progress_interval)

# Alerts are logged as counts by type every HITRUN_ALERT_LOG_INTERVAL (each one
# at debug); a replay's alerts are history, summarised by `hitrun replay`, so a
# replay-mode worker logs each at debug only, whatever the interval.
alert_log = AlertCounts(
    log, settings.alert_log_interval.total_seconds() if not REPLAY else float("inf")
)

# HITRUN_ON_PROCESSING_ERROR=stop: a message that raises stops the worker (exit 70).
STOP_ON_ERROR = settings.on_processing_error == "stop"
# EX_SOFTWARE: the worker stopped itself because a batch failed (stop_without_commit).
EXIT_BATCH_FAILED = 70


class CustomerTable(faust.Table):
    """The customer table, whose changelog partition is computed here from the key.

    Every customer's events meet in partition murmur2(customer id) after the
    partition guard, and the changelog record of a customer goes to the same
    partition. Faust's `use_partitioner` leaves that choice to the producer,
    which partitions synchronously from its cached metadata and raises when
    the changelog topic is not in it (aiokafka drops topics it has not sent
    to from its metadata after a refresh): the table write crashed the agent.
    The partition count is a setting, so no metadata is needed.
    """

    def partition_for_key(self, key: Any) -> int:
        if key.find(b" ") < 0:  # a customer's: both prefixes end in a space, ids have none
            return partition_for_key(key, PARTITIONS)
        if key.startswith(CLOCK_KEY_PREFIX):  # a partition's own clock record
            return int(key[len(CLOCK_KEY_PREFIX) :])
        if key.startswith(IDENTITY_KEY_PREFIX):  # an identifier's: its identity topic partition
            return partition_for_key(key[len(IDENTITY_KEY_PREFIX) :], settings.partitions)
        return partition_for_key(key, settings.partitions)

    def apply_changelog_batch(self, batch: Iterable[Any]) -> None:
        """Apply changelog records read (a recovery, a standby), but none a removed worker
        wrote after its successor (`writers`, streams/fencing.py)."""
        admitted = []
        skipped: dict[int, int] = {}
        for event in batch:
            msg = event.message
            if writers.admit(msg.partition, msg.offset, token_of(msg.headers)):
                admitted.append(event)
            else:
                skipped[msg.partition] = skipped.get(msg.partition, 0) + 1
        for number, count in sorted(skipped.items()):
            metrics.stale_states_skipped.inc(count)
            log.warning(
                "%s[%d]: skipped %d state records a removed worker wrote after its successor's",
                self.changelog_topic.get_topic_name(),
                number,
                count,
            )
        super().apply_changelog_batch(admitted)

    def _new_store_by_url(self, url: str | URL) -> StoreT:
        if URL(url).scheme == "rocksdb":
            return PartitionedRocksStore(
                url,
                self.app,
                self,
                table_name=self.name,
                key_type=self.key_type,
                value_type=self.value_type,
                loop=self.loop,
                options=self.options,
            )
        return super()._new_store_by_url(url)


# The table also holds one record per partition: its stream clock and the latest
# time read from each input topic, so a restarted worker neither forgets what it
# had reached (and accepts what it refused) nor waits on topics it had finished.
# Customer ids cannot contain a space, so these keys never meet a customer's.
CLOCK_KEY_PREFIX = b"hitrun clock "
# And the identity stage's state of each identifier ("kind:hash") it was told of.
IDENTITY_KEY_PREFIX = b"hitrun identity "


def clock_key(partition: int) -> bytes:
    return CLOCK_KEY_PREFIX + str(partition).encode()


customers_table = CustomerTable(
    app,
    name="customers",
    beacon=app.tables.beacon,
    default=None,
    # Keys are read from any owned partition (a batch mixes partitions), so
    # the store must not assume the current event's partition.
    use_partitioner=True,
    # bytes types make Faust use the raw codec for the changelog: hitrun encodes itself.
    key_type=bytes,
    value_type=bytes,
    partitions=settings.partitions,
    help="Per-customer detector state (agents/state.py), keyed by customer id.",
)
app.tables.add(customers_table)
# Writer tokens of the table's changelog partitions: read in `apply_changelog_batch`,
# named by every state record this worker writes (`CustomerProcessor`).
writers = WriterTokens(
    stored=lambda number: stored_rise(customers_table.data, number),
    store=lambda number, rise: store_rise(customers_table.data, number, rise),
)


# Replay: the watermarked input topics decide the release. Live: the reroute
# topic too, since its events join a partition's clock like any other input's.
BUFFERED_TOPICS: tuple[str, ...] = (
    settings.watermarked_topics
    if REPLAY
    else (*settings.watermarked_topics, settings.reroute_topic)
)


def stop_waiting(
    waived: set[int],
    heard: Mapping[int, float],
    started: float,
    now: float,
    own: int,
    who: str,
    why: str,
) -> None:
    """Live, `who` (partition `own`, listening since `started`) no longer waits for the
    partitions no mark has named (`heard`: when one last did) for HITRUN_PROGRESS_TIMEOUT:
    each is waived until a mark names it again."""
    quiet = progress.silent(
        heard, started, now, settings.partitions, {own, *waived}, PROGRESS_TIMEOUT_S
    )
    for source, silent in quiet:
        waived.add(source)
        metrics.progress_waived.inc()
        log.warning(
            "%s stops waiting for partition %d: %s for %.0fs (HITRUN_PROGRESS_TIMEOUT)",
            who,
            source,
            why,
            silent,
        )


@dataclass
class HeldStage:
    """Records of an internal topic that every partition writes (sightings, link reports),
    applied in event-time order (ORDER_SIGHTINGS), whichever partition's came first.

    Each record is held until every writing partition's marks on the topic say it has
    sent all its records up to the record's time; then the held ones are released
    in (time, `order`) order. Every record read before `before` is applied (kept in
    the clock record, `ClockRecord.apart`). Per writing partition: the furthest mark
    read (not kept: marks keep coming) and when a mark last named it; live, one no
    mark named for HITRUN_PROGRESS_TIMEOUT is no longer waited for.
    """

    buffer: ReorderBuffer = field(default_factory=lambda: ReorderBuffer(()))
    before: datetime = EARLIEST_TIME
    # Whether a writer may still send records of its mark's own instant (`release`).
    resting: bool = True
    sent: dict[int, datetime] = field(default_factory=dict)
    named: dict[int, float] = field(default_factory=dict)
    waived: set[int] = field(default_factory=set)
    started: float = field(default_factory=time.monotonic)

    def heard(self, topic: str, number: int, sources: Mapping[int, datetime | None]) -> None:
        """A mark was read on partition `number` of `topic`: take each writer's progress,
        and (live) stop waiting for the silent ones."""
        now = time.monotonic()
        for source, at in sources.items():
            if at is None:
                continue
            self.named[source] = now
            self.waived.discard(source)
            if source not in self.sent or at > self.sent[source]:
                self.sent[source] = at
        if REPLAY:
            return  # a replay waits for every partition: its order is the point
        who = f"{topic}[{number}]"
        stop_waiting(self.waived, self.named, self.started, now, number, who, "no mark names it")

    def release(self, limit: datetime | None = None) -> list[object]:
        """The held items every writer's marks have passed, in order; none at or after
        `limit`."""
        upto = progress.bound(self.sent, None, settings.partitions, self.waived)
        if upto is None or upto == EARLIEST_TIME:
            return []  # every writer waived, or one has not sent anything yet
        # Sightings: up to the marks' time itself. A customer partition's clock may
        # rest there (the end of a replay) while it still sends sightings of that
        # instant (a timer due then), which would otherwise wait for a mark that never
        # comes; one sent after the others of its instant is applied as it arrives, as
        # a late record is (a partition holding events of that instant marks just
        # before it: `PartitionTimers.sent_before`). Reports need not: an identity
        # stage's mark is where it released its sightings, and a report of that
        # instant is still to come.
        if self.resting:
            upto += timedelta(microseconds=1)
        if limit is not None and limit < upto:
            upto = limit
        if upto <= self.before:
            return []
        released = [item for _at, item in self.buffer.release_before(upto)]
        self.before = upto
        return released


@dataclass
class PartitionTimers:
    """The stream clock, deadline index and (replay mode) reorder buffer of one partition."""

    clock: PartitionClock = field(default_factory=PartitionClock)
    index: DeadlineIndex = field(default_factory=DeadlineIndex)
    buffer: ReorderBuffer = field(default_factory=lambda: ReorderBuffer(BUFFERED_TOPICS))
    # The clock record as last written to the table (None: never).
    persisted: bytes | None = None
    # Next offset read per input topic, and the bound below which every event read
    # has been applied; persisted in the clock record. Neither goes back, restarts
    # included (`read`, `release`): records read again after a restart are told
    # applied by them, and a record that said less than was applied would have the
    # next restart apply those events a second time, behind the clock.
    read_next: dict[str, int] = field(default_factory=dict)
    released_before: datetime = EARLIEST_TIME
    # The clock record this partition was restored from after an assignment.
    restored: ClockRecord | None = None
    # The id of the partition's last batch that wrote its clock record, and of the next
    # (random: a stamp never matches a state another life of the partition stamped);
    # the record of the last such batch the broker confirmed, which holds for every
    # key; and the tiers of batches a worker died sending (`write_record`).
    batch: int = 0
    upcoming: int = field(default_factory=lambda: secrets.randbits(62) + 1)
    complete: ClockRecord | None = None
    tiers: tuple[Tier, ...] = ()
    written: ClockRecord | None = None
    # Live mode: the furthest progress mark read of each other partition (kept in
    # the clock record), and the latest time of an event read here and rerouted,
    # per input topic.
    sources: dict[int, datetime | None] = field(default_factory=dict)
    rerouted_to: dict[str, datetime] = field(default_factory=dict)
    # The marks the restored clock record had read, and the offset of the reroute topic
    # it had read up to: they count once this partition has read that far again
    # (`resume_sources`), since they vouch for events rerouted before them.
    restored_sources: dict[int, datetime | None] | None = None
    restored_reroute: int = 0
    # Per (topic, partition) a rerouted event was first read at: the offset after
    # the last such event read from this partition's reroute topic.
    origins: dict[tuple[str, int], int] = field(default_factory=dict)
    # When (time.monotonic) a mark last gave each source's progress, or this partition
    # started listening: a source silent for PROGRESS_TIMEOUT_S while marks arrive
    # (silence is only judged when a mark is read) is no longer waited for.
    moved: dict[int, float] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    waived: set[int] = field(default_factory=set)
    # Live mode: the wall time of the latest tick while the other partitions' marks
    # held the clock short of it (None: the clock reached it). The clock follows as
    # the marks move (`follow_tick`), instead of a tick interval later.
    tick_wall: datetime | None = None
    # ORDER_SIGHTINGS: the identity stage's sightings and the customer stage's link
    # reports, each applied in event-time order (`HeldStage`).
    sightings: HeldStage = field(default_factory=lambda: HeldStage())
    reports: HeldStage = field(default_factory=lambda: HeldStage(resting=False))
    # Customers whose links age out at a time the clock has passed but the link reports
    # have not (`links_until`), with that time: they age once the reports get there
    # (`age_waiting`), not when the clock does.
    links_waiting: dict[str, datetime] = field(default_factory=dict)

    def record(self) -> ClockRecord:
        """The clock record's fields as they are now (a copy: the clock moves on)."""
        return ClockRecord(
            replace(self.clock),
            self.buffer.seen_times(),
            dict(self.read_next),
            self.released_before,
            dict(self.origins),
            dict(self.sources),
            (
                {
                    settings.identity_topic: self.sightings.before,
                    settings.links_topic: self.reports.before,
                }
                if ORDER_SIGHTINGS
                else {}
            ),
        )

    def write_record(self, writes: list[tuple[bytes, bytes | None]]) -> bytes | None:
        """The clock record this batch sends before `writes`, the partition's changed
        states (stamped by `stamp`; None: deleted); None: nothing to send.

        It holds what the partition reached and, to tell after a restart whether
        every state the batch sent arrived (`ClockRecord.restored`), the batch's
        id, how many states it stamps, the keys it deletes, and the record
        of the last batch the broker confirmed (`complete`).
        """
        current = self.record()
        encoded = current.encode()
        if not writes and encoded == self.persisted:
            return None
        self.persisted = encoded
        self.batch, self.upcoming = self.upcoming, secrets.randbits(62) + 1
        self.written = current
        return replace(
            current,
            batch=self.batch,
            states=sum(value is not None for _, value in writes),
            deleted=tuple(key.decode(errors="replace") for key, value in writes if value is None),
            previous=self.complete or ClockRecord(PartitionClock(), {}, {}, EARLIEST_TIME),
            tiers=self.tiers,
        ).encode()

    def confirm(self) -> None:
        """The broker has the batch: its record holds for every key; a restored tier it
        covers is dropped."""
        done, self.written = self.written, None
        if done is None:
            return
        self.complete = done
        self.tiers = tuple(
            t
            for t in self.tiers
            if not t.covered_by(done.read_next, done.applied_before(), done.apart)
        )

    def read(self, msg: RawMessage) -> None:
        """`msg` was read: a partition read again from its committed offset after a restart
        has read what its restored clock record says, as far as that goes."""
        if msg.offset >= self.read_next.get(msg.topic, 0):
            self.read_next[msg.topic] = msg.offset + 1

    def release(self, upto: datetime | None) -> None:
        """Apply the held events before `upto` (None: every one), and any before what was
        released already: an event read after its time was released (from a producer
        behind, or read again after a restart past what the restored record holds) is
        applied at once, as it would have been had it come before."""
        if upto is not None and upto < self.released_before:
            upto = self.released_before
        event: CustomerEvent
        msg: RawMessage
        for _at, (event, msg) in self.buffer.release_before(upto):  # type: ignore[misc]
            apply(self, event, msg)
        if upto is None:  # everything read is applied: up to just after the latest time read
            latest = self.buffer.latest()
            upto = EARLIEST_TIME if latest is None else latest + timedelta(microseconds=1)
        self.released_before = max(upto, self.released_before)

    def second_copy(self, msg: RawMessage, origin: SourceCoordinates) -> bool:
        """Is `msg`, read from the reroute topic, a second copy of an event read before?

        The events first read at one topic partition reach this partition in
        the order they were read there. A worker that took that partition over
        (a crash, a rebalance) reads again from the last committed offset, and
        reroutes again what a batch it never confirmed had already delivered:
        those copies come in below the highest origin offset already read. A
        copy read again after a restart of this partition is not one of them:
        the restored clock record tells whether it was applied.
        """
        source = (origin.topic, origin.partition)
        seen = self.origins.get(source, 0)
        if not self.read_before_restart(msg) and origin.offset < seen:
            return True
        if origin.offset >= seen:
            self.origins[source] = origin.offset + 1
        return False

    def resume_sources(self, number: int, read_to: int | None) -> None:
        """The reroute topic is read again up to `read_to` (the next offset; None: to its
        end): once that is as far as the restored record had read it, its marks count.

        A mark says that its partition's misplaced events up to a time were rerouted
        before it; after a restart they are read again from the committed offset,
        and counted before that, the marks would let the clock pass events still
        on their way there (late, their deadlines fired).
        """
        restored = self.restored_sources
        if restored is None or (read_to is not None and read_to < self.restored_reroute):
            return
        self.restored_sources = None
        self.heard_from(number, restored)

    def read_before_restart(self, msg: RawMessage) -> bool:
        """Had the partition read `msg` when the clock record it was restored from was written?"""
        return self.restored is not None and self.restored.was_read(msg.topic, msg.offset)

    def bound(self, number: int) -> datetime | None:
        """How far the other partitions' marks let this one's clock go (None: no limit)."""
        if not ALIGN_SOURCES:
            return None
        return progress.bound(self.sources, number, settings.partitions, self.waived)

    def heard_from(self, number: int, sources: Mapping[int, datetime | None]) -> None:
        """A mark was read: take its progress and notice the sources that went silent."""
        now = time.monotonic()
        believable = broker_time.now() + MAX_CLOCK_SKEW
        for source, at in sources.items():
            if at is None:
                continue  # its owner has read nothing of it yet (just assigned, recovering)
            # Its owner reads it, however slowly (a backlog on other partitions may keep
            # its progress still for a while): it is waited for.
            self.moved[source] = now
            self.waived.discard(source)
            known = self.sources.get(source)
            # No mark takes back progress another made: what a source's earlier owner
            # had read (and rerouted) stays read when a new owner starts further back.
            # A mark further ahead than the wall clock allows is believed up to that.
            if known is None or at > known:
                self.sources[source] = min(at, believable)
        why = "no progress from it while other partitions' marks arrive"
        stop_waiting(self.waived, self.moved, self.started, now, number, f"partition {number}", why)

    def sent_before(self) -> datetime:
        """How far this partition's customer stage has sent its sightings: every one of
        an event or a timer before this time (a late event's aside) is sent.

        Held events are sent when released, timers (a blacklisting's) when the clock
        passes them: a timer due after the clock sends at its due time. A live
        partition holding nothing has sent up to its clock: an event read later and
        older than that is late here as it is for the identity stage. (Not the wall
        clock: a tick may yet fire timers due before it.)
        """
        now = self.clock.now or EARLIEST_TIME
        if not REPLAY and not len(self.buffer):
            return now
        sent = min(self.released_before, now)
        oldest = self.buffer.oldest()
        if oldest is not None and oldest <= sent:
            # Events of that very instant are held: their sightings are still to come,
            # and the identity stage applies a mark's own instant (`HeldStage.release`).
            return oldest - timedelta(microseconds=1)
        return sent

    def read_times(self) -> dict[str, datetime]:
        """Per input topic, the latest event time read here, rerouted events included."""
        times = dict(self.rerouted_to)
        for topic in settings.watermarked_topics:
            seen = self.buffer.seen(topic)
            if seen is not None and (topic not in times or seen > times[topic]):
                times[topic] = seen
        return times


class Tally(msgspec.Struct):
    """What the gauges count in one partition: customers with a state, open orders, and
    customers on a blacklist."""

    customers: int = 0
    open_orders: int = 0
    listed: int = 0

    def add(self, before: Footprint, after: Footprint) -> None:
        self.customers += int(after.stored) - int(before.stored)
        self.open_orders += after.open_orders - before.open_orders
        self.listed += int(after.listed) - int(before.listed)


class SetAside(NamedTuple):
    """A partition's deadline index and tally, kept through a rebalance, with the clock
    record its store held then: they hold again only if the store still holds it."""

    deadlines: DeadlineIndex
    tally: Tally
    record: bytes | None


class Timers:
    """Per-partition timers of this worker, rebuilt from the table after each rebalance."""

    def __init__(self) -> None:
        self.partitions: dict[int, PartitionTimers] = {}
        self.indexed = False
        # Per owned partition, what the gauges count (kept up by `StateCache.commit`).
        self.tallies: dict[int, Tally] = {}
        self.owned: set[int] = set()  # the partitions of the last rebuild
        self._aside: dict[int, SetAside] = {}

    def clear(self, keep_indexes: bool = False) -> None:
        """Forget clocks, indexes and held events: a new assignment reads from the committed
        offsets and rebuilds the index from the recovered table.

        With `keep_indexes` (every change applied is in the store), each partition's
        index is set aside with the clock record its store holds: should the partition
        stay here and its store still hold that record (no other worker wrote a batch
        of it since: every batch that changes a state writes a record with a new batch
        id), the rebuild takes the index back instead of scanning the partition's
        states. A rebalance then scans only the partitions it brings.
        """
        if not keep_indexes:
            self._aside.clear()
        elif self.indexed:
            store = customers_table.data
            self._aside = {}
            for number in self.owned:
                held = self.partitions.get(number)
                if held is not None:
                    # Due again at once when the index is taken back: they wait again.
                    for customer_id, due in held.links_waiting.items():
                        held.index.schedule(customer_id, due)
                self._aside[number] = SetAside(
                    DeadlineIndex() if held is None else held.index,
                    self.tallies.get(number, Tally()),
                    store.get(clock_key(number)),
                )
        self.partitions.clear()
        self.tallies = {}
        self.owned = set()
        self.indexed = False

    def prepare(self) -> None:
        """Rebuild the owned partitions' indexes now, if this assignment has not yet."""
        if not self.indexed:
            self._rebuild()

    def of(self, partition: int) -> PartitionTimers:
        if not self.indexed:
            self._rebuild()
        found = self.partitions.get(partition)
        if found is None:
            found = self.partitions[partition] = PartitionTimers()
        return found

    def _rebuild(self) -> None:
        # Once per assignment: the table is recovered (Faust resumes streams only
        # after recovery), so one scan rebuilds every owned partition's index.
        began = time.perf_counter()
        owned = {
            tp.partition
            for tp in app.assignor.assigned_actives()
            if tp.topic == settings.topic_checkouts
        }
        for number in list(self.partitions):
            if number not in owned:
                del self.partitions[number]
        for timers in self.partitions.values():
            timers.index = DeadlineIndex()
        aside, self._aside = self._aside, {}
        store = customers_table.data
        # Per partition, the batch its clock record numbers, whose stamped keys tell what
        # holds after the restart (`ClockRecord.restored`).
        awaited: dict[int, int] = {}
        kept: set[int] = set()
        for number in owned:
            persisted = store.get(clock_key(number))
            put = aside.get(number)
            if put is not None and put.record == persisted:
                # This worker's own index, and the store as it left it: every state of
                # its last batch is stored.
                self.partitions.setdefault(number, PartitionTimers()).index = put.deadlines
                self.tallies[number] = put.tally
                kept.add(number)
            if persisted is not None:
                batch = self._read_clock(number, persisted)
                if batch and number in kept:
                    self._restore_clock(number, None)
                elif batch:
                    awaited[number] = batch
        scanned = owned - kept
        stamped: dict[int, set[str]] = {n: set() for n in awaited}
        for partition, key, value in owned_items(store, scanned, customers_table.partition_for_key):
            if value is None or key.startswith(CLOCK_KEY_PREFIX):
                continue
            if partition in awaited and stamp_of(value) == awaited[partition]:
                stamped[partition].add(key.decode(errors="replace"))
            if key.startswith(IDENTITY_KEY_PREFIX):
                continue
            summary = stored_summary(value)
            if summary is None or summary.fingerprint != WAKE_POLICY:
                # Written by an older version or under other policies: decoded.
                try:
                    summary = summarize(decode_state(value, key.decode(errors="replace")))
                except Exception as exc:
                    # Its messages meet the same error and are dead-lettered one by one.
                    metrics.processing_error("rebuild", type(exc).__name__).inc()
                    log.error("stored state of customer %s cannot be decoded: %r", key, exc)
                    continue
            found = self.partitions.get(partition)
            if found is None:  # (not setdefault: a PartitionTimers made per state is 4.5 µs)
                found = self.partitions[partition] = PartitionTimers()
            found.index.schedule_micros(key.decode(), summary.wake)
            tally = self.tallies.get(partition)
            if tally is None:
                tally = self.tallies[partition] = Tally()
            tally.customers += 1
            tally.open_orders += summary.open_orders
            tally.listed += summary.listed
        for number in scanned:
            self.tallies.setdefault(number, Tally())
        for number, keys in stamped.items():
            self._restore_clock(number, keys)
        customers = self.set_gauges()
        self.owned = owned
        self.indexed = True
        # The scan's transient memory (and the index it replaced) back to the system.
        give_back()
        metrics.index_rebuild.observe(time.perf_counter() - began)
        metrics.index_partitions.labels("kept").inc(len(kept))
        metrics.index_partitions.labels("scanned").inc(len(scanned))
        log.info(
            "deadline index rebuilt: %d customers in partitions %s (indexes kept: %s)",
            customers,
            sorted(owned),
            sorted(kept) or "none",
        )

    def tally(self, key: bytes) -> Tally:
        """The tally of the partition a customer's key belongs in."""
        number = customers_table.partition_for_key(key)
        found = self.tallies.get(number)
        if found is None:
            found = self.tallies[number] = Tally()
        return found

    def set_gauges(self) -> int:
        """Set the gauges to the owned partitions' tallies; returns the customers."""
        tallies = self.tallies.values()
        customers = sum(t.customers for t in tallies)
        metrics.customers.set(customers)
        metrics.open_checkouts.set(sum(t.open_orders for t in tallies))
        metrics.blacklisted.set(sum(t.listed for t in tallies))
        return customers

    def _read_clock(self, number: int, persisted: bytes) -> int:
        """Read the partition's clock record; the batch it numbers (0: restored already)."""
        try:
            record = ClockRecord.decode(persisted)
        except ValueError as exc:
            metrics.processing_error("rebuild", type(exc).__name__).inc()
            log.error("the clock of partition %d cannot be decoded: %s", number, exc)
            return 0
        timers = self.partitions.setdefault(number, PartitionTimers())
        timers.restored = record
        timers.batch = record.batch
        if not record.batch:  # written before batches had ids: restored as it is
            self._restore_clock(number, set())
        return record.batch

    def _restore_clock(self, number: int, stamped: set[str] | None) -> None:
        """Restore the partition's clock from its record, given the keys stamped with the
        record's batch (None: every state of that batch is known to be stored)."""
        timers = self.partitions[number]
        store = customers_table.data
        restored = cast(ClockRecord, timers.restored)
        record = (
            restored.settled()
            if stamped is None
            else restored.restored(
                frozenset(stamped), lambda key: get_raw(store, key.encode()) is not None
            )
        )
        timers.clock = replace(record.clock)  # the record stays as restored (`complete`)
        timers.buffer.restore_seen(record.seen)
        timers.read_next = dict(record.read_next)
        timers.released_before = record.applied_before()
        timers.origins = dict(record.origins)
        timers.sources = {}
        timers.restored_sources = dict(record.sources)
        timers.restored_reroute = record.read_next.get(settings.reroute_topic, 0)
        timers.sightings.before = record.apart.get(settings.identity_topic, EARLIEST_TIME)
        timers.reports.before = record.apart.get(settings.links_topic, EARLIEST_TIME)
        timers.restored = record
        timers.complete = record.fields()
        timers.tiers = record.tiers
        log.info(
            "partition %d restored: event time %s, applied before %s, read up to %s%s",
            number,
            None if record.clock.events is None else record.clock.events.isoformat(),
            timers.released_before.isoformat(),
            {topic.rsplit(".", 1)[-1]: n for topic, n in sorted(record.read_next.items())},
            "".join(f"; batch {t.batch} reached {len(t.keys)} of its states" for t in record.tiers),
        )


def next_due(state: CustomerState, after: datetime | None = None) -> datetime | None:
    """When the customer's timers next run on the stream clock (agents/state.py, `next_wake`)."""
    return next_wake(state, policies, retention_policy, LATENESS, link_policy, after)


# Stored with each state's wake time: a summary written under other policies is
# not trusted by the index rebuild (the state is decoded instead).
# (Of the link policy only the window moves a wake time; its kinds are a frozenset, whose
# repr changes with the process's hash seed.)
WAKE_POLICY = policy_fingerprint(policies, retention_policy, LATENESS, link_policy.window)


def summarize(state: CustomerState) -> Summary:
    """The summary `encode_state` stores with the state, computed from the state itself."""
    wake = next_due(state)
    return Summary(
        None if wake is None else to_micros(wake),
        WAKE_POLICY,
        len(state.unpaid.open),
        bool(state.unpaid.listings),
    )


timers = Timers()


def stream_clock(customer_id: str) -> datetime | None:
    """The stream clock of the customer's partition on this worker (None before its first event)."""
    found = timers.partitions.get(partition_for_key(customer_id.encode(), settings.partitions))
    return None if found is None else found.clock.now


@app.on_partitions_revoked.connect  # type: ignore[arg-type]  # mode types the sender positional-only
async def _on_revoked(sender: Any, *args: Any, signal: Any, **kwargs: Any) -> None:
    await consume_loop.on_revoked()
    log.info("partitions revoked: %d", len(args[0]) if args else 0)


@app.on_partitions_assigned.connect  # type: ignore[arg-type]  # mode types the sender positional-only
async def _on_assigned(sender: Any, *args: Any, signal: Any, **kwargs: Any) -> None:
    await consume_loop.on_assigned()
    log.info("partitions assigned: %d", len(args[0]) if args else 0)


class Footprint(msgspec.Struct, frozen=True):
    """What the gauges need to know about a state before it changes."""

    stored: bool
    open_orders: int
    listed: bool


NO_STATE = Footprint(False, 0, False)


def footprint(state: CustomerState | None) -> Footprint:
    if state is None:
        return NO_STATE
    return Footprint(True, len(state.unpaid.open), bool(state.unpaid.listings))


# A scope's marker for "this customer is unchanged in the batch: the store has it".
_CLEAN = object()


class StateCache:
    """Customer states decoded for the current batch; the table is written once per batch.

    A customer's events often arrive close together, and each table write is
    a changelog record: writing once per customer per batch instead of once
    per event, and decoding once per batch, removes most of that cost.

    A batch's new states reach the store only after the broker confirmed the
    batch's records (`stage`, then `commit`): a batch that is dropped (a
    rebalance, a crash) leaves the store as it was, so re-reading its input
    applies it again instead of finding its events already "seen" while its
    alerts were never published.

    Between batches, the states this worker wrote last (up to `keep`) stay
    decoded: they are the very states the store holds, since the table is
    written only here. A rebalance forgets them all (`forget`), as recovery
    may rewrite the store.
    """

    def __init__(self, keep: int) -> None:
        self._states: dict[str, CustomerState | None] = {}  # None: no state (deleted)
        # Changed in this batch, with the wake time the change was scheduled at.
        self._dirty: dict[str, datetime | None] = {}
        # Changed customers put back by a rollback: their wake time is computed again.
        self._recompute: set[str] = set()
        self._kept: dict[str, CustomerState] = {}  # oldest write first
        # The customers of the batch that had a stored state when it began: only
        # those need a tombstone when their state empties.
        self._existed: set[str] = set()
        # What each customer of the batch was when the batch began, for the gauges.
        self._began: dict[str, Footprint] = {}
        self._keep = keep
        # The staged batch: (key, encoded value or None, state) per changed customer.
        self._staged: list[tuple[bytes, bytes | None, CustomerState | None]] = []
        # The open scope (one message or one timer): what each customer it loaded
        # was before it, to put back if the scope fails. CLEAN: as in the store.
        self._scope: dict[str, bytes | object | None] | None = None

    def begin(self) -> None:
        """Open a scope: the states loaded until `end` can be put back by `rollback`."""
        self._scope = {}

    def end(self) -> None:
        self._scope = None

    def rollback(self) -> list[str]:
        """Put every customer the scope loaded back as it was before it; returns their ids.

        A customer not yet changed in this batch is dropped from the batch and
        from the kept states (the core changes states in place), so its next
        load reads the store again; one already changed gets its state from
        before the scope back.
        """
        scope, self._scope = self._scope or {}, None
        for customer_id, before in scope.items():
            self._kept.pop(customer_id, None)
            if before is _CLEAN:
                self._states.pop(customer_id, None)
                self._dirty.pop(customer_id, None)
            else:
                self._recompute.add(customer_id)
                self._states[customer_id] = (
                    None if before is None else from_snapshot(cast(bytes, before))
                )
        return sorted(scope)

    def load(self, customer_id: str) -> tuple[CustomerState, bool]:
        """The customer's state (fresh if none), and whether one is stored."""
        scope = self._scope
        if scope is not None and customer_id not in scope:
            if customer_id in self._dirty:
                changed = self._states[customer_id]
                scope[customer_id] = None if changed is None else snapshot(changed)
            else:
                scope[customer_id] = _CLEAN
        if customer_id in self._states:
            state = self._states[customer_id]
        else:
            state = self._kept.get(customer_id)
            if state is None:
                # From the store itself: the table's own `get` adds sensor calls per read.
                stored = get_raw(customers_table.data, customer_id.encode())
                state = None if stored is None else decode_state(stored, customer_id)
            if state is not None:
                self._existed.add(customer_id)
            self._states[customer_id] = state
            self._began[customer_id] = footprint(state)
        if state is None:
            return CustomerState(), False
        return state, True

    def pending(self) -> bool:
        """Whether states were changed since the last `commit`."""
        return bool(self._dirty or self._staged)

    def forget(self) -> None:
        """Drop everything not yet in the store, and the states kept between batches."""
        self._kept.clear()
        self._states.clear()
        self._dirty.clear()
        self._recompute.clear()
        self._existed.clear()
        self._began.clear()
        self._staged.clear()
        self._scope = None

    def store(self, customer_id: str, state: CustomerState, wake: datetime | None) -> None:
        """Keep the new state for the batch's end with its wake time (`next_due`)."""
        self._states[customer_id] = None if state.is_empty() else state
        self._dirty[customer_id] = wake
        self._recompute.discard(customer_id)

    def stage(self, stamp: Callable[[bytes, bytes], bytes]) -> list[tuple[bytes, bytes | None]]:
        """Encode every changed customer and `stamp` it (key, value: the stored value):
        their changelog records (None: deleted).

        The sink sends them (raw key and value, to the partition `partition_for_key`
        gives) with the batch's alerts; the store is written by `commit` once the
        broker has them.
        """
        staged: list[tuple[bytes, bytes | None]] = []
        for customer_id in sorted(self._dirty):
            key = customer_id.encode()
            state = self._states[customer_id]
            if state is None:
                if customer_id not in self._existed:
                    continue  # never stored: nothing to delete
                value = None
            else:
                wake = self._dirty[customer_id]
                if customer_id in self._recompute:
                    wake = next_due(state)
                value = stamp(key, encode_state(state, wake, WAKE_POLICY))
            self._staged.append((key, value, state))
            staged.append((key, value))
        self._dirty.clear()
        self._recompute.clear()
        return staged

    def commit(self, tally: Callable[[bytes], Tally]) -> list[tuple[bytes, bytes | None]]:
        """The batch is confirmed: count each change in its partition's tally (`tally`, by
        key) and return the batch's writes for the store (None: delete)."""
        kept = self._kept
        began = self._began
        writes: list[tuple[bytes, bytes | None]] = []
        for key, value, state in self._staged:
            customer_id = key.decode()
            kept.pop(customer_id, None)  # written again: kept as the newest
            writes.append((key, value))
            after = NO_STATE
            if value is not None:
                kept[customer_id] = cast(CustomerState, state)
                after = footprint(cast(CustomerState, state))
            tally(key).add(began.get(customer_id, NO_STATE), after)
        while len(kept) > self._keep:
            del kept[next(iter(kept))]
        self._staged.clear()
        self._states.clear()
        self._existed.clear()
        self._began.clear()
        return writes


cache = StateCache(settings.state_cache)


def queue(
    topic: str,
    key: bytes | None,
    value: bytes | None,
    partition: int | None = None,
    headers: Headers = (),
) -> None:
    """Queue one record of the current batch in the sink.

    Processing an event awaits nothing: each record is queued when it is
    decided; the sink sends the batch's records together, in the order they
    were decided within each partition, and the batch is acknowledged only
    once the broker has them all.
    """
    sink.put(OutRecord(topic, key, value, partition, headers))


# HITRUN_ALERT_VERSION=1: per alert type, the fields its v1 schema allows (None: latest).
V1_FIELDS = (
    {kind: fields_of(f"{kind}.v1") for kind in ALERT_TYPES}
    if settings.alert_version == "1"
    else None
)


# Each alert role's topic.
OUTPUT_TOPICS = settings.output_topics


def queue_alert(customer_id: str, alert: Alert) -> None:
    """Queue one alert for its topic, count it and log it."""
    body = alert.body
    kind: str = body["type"]
    if V1_FIELDS is not None:  # what a later schema version added is left out
        body = {name: value for name, value in body.items() if name in V1_FIELDS[kind]}
    sink.put(OutRecord(OUTPUT_TOPICS[alert.role], alert.key.encode(), encode_alert(body)))
    metrics.count_alert(kind)
    alert_log.note(kind, customer_id, body["alert_id"])


# The effects `publish` has nothing to do for (no alert, no metric, no status): every paid
# order makes one of each, which would else go through every check below.
UNPUBLISHED = frozenset({CloseOrder, RecordPurchase})


def publish(customer_id: str, state: CustomerState, effects: Iterable[Effect]) -> None:
    """Queue each effect's alert; refresh the compacted blacklist status when it changed."""
    status_changed_at: datetime | None = None
    own_changed = False
    strikes_changed_at: datetime | None = None
    for effect in effects:
        if type(effect) in UNPUBLISHED:
            continue
        alert = to_alert(effect)
        if alert is not None:
            queue_alert(customer_id, alert)
        if isinstance(effect, ReportRecovery):
            metrics.recoveries.inc()
        elif isinstance(effect, DropUnmatchedPayment):
            metrics.unmatched_payments.inc()
        elif isinstance(effect, (Blacklist, Unblacklist)):
            status_changed_at = effect.since if isinstance(effect, Blacklist) else effect.at
            own_changed = own_changed or effect.linked_to is None
        if link_rules.shares_strikes and isinstance(effect, (RecordStrike, ReverseStrike)):
            strikes_changed_at = effect.at
    if status_changed_at is not None:
        queue(
            settings.topic_blacklist_status,
            customer_id.encode(),
            blacklist_status(customer_id, state.unpaid, status_changed_at),
        )
    if own_changed and status_changed_at is not None:
        # The identity stage keeps each customer's own listings (and strikes, when a
        # shop counts them together) with its identifiers.
        announce(customer_id, state, None, status_changed_at, again=True)
    elif strikes_changed_at is not None:
        announce(customer_id, state, None, strikes_changed_at, again=True)


def publish_retention(customer_id: str, effects: Iterable[RetentionEffect]) -> None:
    for effect in effects:
        queue_alert(customer_id, retention_alert(effect))


def blacklist_status(customer_id: str, state: UnpaidState, at: datetime) -> bytes | None:
    """The compacted status record: current listings, or a tombstone when there are none."""
    if not state.listings:
        return None
    return encode(
        {
            "type": "blacklist_status",
            "customer_id": customer_id,
            "updated_at": at.isoformat(),
            "listings": [
                {
                    "scope": listing.scope,
                    "since": listing.since.isoformat(),
                    "until": listing.until.isoformat(),
                    "offence": listing.offence,
                    "actor": listing.actor,
                }
                for listing in sorted(state.listings.values(), key=lambda x: x.scope)
            ],
        }
    )


def fire_due(partition: PartitionTimers, now: datetime) -> None:
    """Advance every customer of the partition whose next deadline is at or before `now`.

    Each customer's timers run in a scope of their own: one that raises is put
    back as it was, counted and logged, and left out of the index until its
    next event (which meets the same fault and is dead-lettered), so one
    customer never stops the partition's other deadlines.
    """
    index = partition.index
    if not index.has_due(now):
        return
    for _due, customer_id in index.pop_due(now):
        advance_scoped(partition, customer_id, now)


def advance_scoped(partition: PartitionTimers, customer_id: str, now: datetime) -> None:
    """Run one customer's due timers in a scope of its own (`fire_due`)."""
    mark = sink.mark()
    cache.begin()
    try:
        advance_customer(partition, customer_id, now)
    except Exception as exc:
        if STOP_ON_ERROR:
            raise
        sink.truncate(mark)
        cache.rollback()
        metrics.processing_error("timer", type(exc).__name__).inc()
        log.error(
            "timers of customer %s failed and were set aside: %s: %s",
            customer_id,
            type(exc).__name__,
            exc,
            extra={"customer_id": customer_id, "reason": "processing_error"},
        )
    else:
        cache.end()


def links_until(partition: PartitionTimers, now: datetime) -> datetime:
    """How far a customer's links may age at clock time `now`: with the link reports in
    event-time order (ORDER_SIGHTINGS), no further than the partition has applied them
    (every report before `reports.before`), so that a link ages out after the reports
    of earlier times and before those of later ones, in every run."""
    if ORDER_SIGHTINGS and partition.reports.before < now:
        return partition.reports.before
    return now


def age_waiting(partition: PartitionTimers) -> None:
    """Age the links of the customers that waited for the link reports to get this far."""
    now = partition.clock.now
    if not partition.links_waiting or now is None:
        return
    upto = links_until(partition, now)
    ready = sorted((due, c) for c, due in partition.links_waiting.items() if due <= upto)
    for _due, customer_id in ready:
        del partition.links_waiting[customer_id]
        advance_scoped(partition, customer_id, now)


def advance_customer(partition: PartitionTimers, customer_id: str, now: datetime) -> None:
    """Run one customer's timers due at `now` and queue what they decide."""
    state, stored = cache.load(customer_id)
    if not stored:
        return
    # Links that age out first: a blacklisting through one ends with it.
    linked_upto = links_until(partition, now)
    unlinked: list[LinkEffect] = []
    changes: list[Effect] = []
    if state.identity is not None:  # most customers have no identity part: no calls
        unlinked, changes = linked_changes(customer_id, state, linked_upto, now)
    state.unpaid, fired = unpaid.advance(state.unpaid, customer_id, now, policies, linked_upto)
    effects = changes + fired if changes else fired
    kept = retention.advance(state.retention, customer_id, now - LATENESS, retention_policy)
    wake = next_due(state)
    cache.store(customer_id, state, wake)
    if wake is not None and wake <= now:
        # A link that ages out, or a blacklisting through one that ends, at a time the
        # link reports have not reached: it waits for them, and the index holds what
        # comes after (`pop_due` would hand the customer back at once).
        partition.links_waiting[customer_id] = wake
        wake = next_due(state, after=now)
    partition.index.schedule(customer_id, wake)
    if unlinked:
        publish_links(customer_id, unlinked)
    if not REPLAY:
        wall = broker_time.now()
        for effect in effects:
            if isinstance(effect, (SendReminder, RecordStrike)):
                metrics.timer_lateness.observe(max((wall - effect.at).total_seconds(), 0.0))
    if effects:
        publish(customer_id, state, effects)
    if kept:
        publish_retention(customer_id, kept)


def linked_changes(
    customer_id: str, state: CustomerState, upto: datetime, now: datetime
) -> tuple[list[LinkEffect], list[Effect]]:
    """Age the customer's links up to `upto`, as far as the link reports allow
    (`links_until`), and follow them at `now`: the unlinks, and what they change on its
    blacklists. Only for a customer with an identity part: one without has nothing
    to age or follow, and its callers skip the call."""
    unlinked, changes = link_rules.expire(customer_id, state, upto)
    return unlinked, changes + link_rules.follow(customer_id, state, [], now)


def apply(partition: PartitionTimers, event: CustomerEvent, msg: RawMessage) -> None:
    """Fire what the event's time makes due, then apply the event to its customer."""
    if partition.clock.is_late(event.occurred_at, LATENESS):
        behind = partition.clock.events - event.occurred_at if partition.clock.events else None
        error = LateEvent(
            f"event time {event.occurred_at.isoformat()} is {behind} behind the partition's "
            f"event time; the allowed lateness is {LATENESS}"
        )
        metrics.late_event(msg.topic).inc()
        dead_letter(msg, Rejected(dead_letter_for(msg, error)))
        return
    now = partition.clock.observe(event.occurred_at)
    if partition.index.has_due(now):
        fire_due(partition, now)
    scoped(msg, apply_to_customer, partition, event, msg, now)


def scoped(msg: RawMessage, work: Callable[..., None], *args: Any) -> bool:
    """Apply `msg` by `work(*args)` in a scope of its own: if it raises, every state it loaded
    is put back, its records are dropped and `msg` is dead-lettered. False then."""
    mark = sink.mark()
    cache.begin()
    try:
        work(*args)
    except Exception as exc:
        if STOP_ON_ERROR:
            raise
        sink.truncate(mark)
        cache.rollback()
        processing_failed(msg, exc)
        return False
    cache.end()
    return True


def apply_to_customer(
    partition: PartitionTimers, event: CustomerEvent, msg: RawMessage, now: datetime
) -> None:
    """Apply one event to its customer's state and queue what the detectors decide."""
    customer_id = event.customer_id
    state, _ = cache.load(customer_id)
    if type(event) is AdminActionRequested:
        refused = admin_refusal(event, state, now)
        if refused is not None:
            dead_letter(msg, Rejected(dead_letter_for(msg, Unauthenticated(refused))))
            return
        if event.action == "erase":
            erase(partition, event, msg)
            return
    # Clean-ups wait for the customer's next touch (next_due): this is one.
    unpaid.prune(state.unpaid, now, policies)
    digest = unpaid.event_digest(event)
    duplicate = event.event_id in state.unpaid.seen
    if duplicate:
        reused = unpaid.reused_id(state.unpaid, event, digest)
        if reused is not None:
            dead_letter(msg, Rejected(dead_letter_for(msg, EventIdReused(reused))))
            return
    state.unpaid, effects = unpaid.handle(state.unpaid, event, policies, digest)
    kept: list[RetentionEffect] = []
    if not duplicate:
        # The customer's own timers up to the event fire first (tie rule), even
        # those the LATENESS delay has not fired on the stream clock yet.
        kept = retention.advance(state.retention, customer_id, event.occurred_at, retention_policy)
        kept += observe_retention(state.retention, event, effects)
    unlinked: list[LinkEffect] = []
    if state.identity is not None:  # most customers have no identity part: no calls
        unlinked, changes = linked_changes(customer_id, state, links_until(partition, now), now)
        effects += changes
    if (
        not duplicate
        and (type(event) is CheckoutConfirmed or type(event) is PaymentAttempted)
        and (event.identifiers or state.identity is not None)  # else nothing to announce
    ):
        announce(customer_id, state, event.identifiers, event.occurred_at)
    wake = next_due(state)
    cache.store(customer_id, state, wake)
    partition.index.schedule(customer_id, wake)
    if effects:
        publish(customer_id, state, effects)
    if kept:
        publish_retention(customer_id, kept)
    if unlinked:
        publish_links(customer_id, unlinked)
    metrics.count_input(msg.topic, event.type, "duplicate" if duplicate else "processed")
    if not REPLAY:  # a replayed event's lag is its age
        lag = (broker_time.now() - event.occurred_at).total_seconds()
        metrics.event_lag.observe(max(lag, 0.0))


def admin_refusal(event: AdminActionRequested, state: CustomerState, now: datetime) -> str | None:
    """Why a signed admin command is refused at its customer, or None to apply it.

    The ingest checked the signature; a copy of a good command written again
    later is refused here: once its event id is in the customer's state, or
    once the partition's stream clock has passed its expiry.
    """
    if event.event_id in state.unpaid.seen:
        return f"a replayed admin command: {event.event_id} was applied before"
    if event.expires_at is None or now > event.expires_at:
        expiry = event.expires_at.isoformat() if event.expires_at else "none"
        return f"an expired admin command (expiry {expiry}, stream clock {now.isoformat()})"
    return None


def erase(partition: PartitionTimers, event: AdminActionRequested, msg: RawMessage) -> None:
    """Forget the customer: state (a changelog tombstone), status (a tombstone) and timers.

    A `customer_erased` record on the erasures topic says who asked and when;
    it holds ids only.
    """
    customer_id = event.customer_id
    state, _ = cache.load(customer_id)
    if state.identity is not None:
        for sighting in identity.forget(state.identity, customer_id, event.occurred_at):
            queue_sighting(sighting)
    cache.store(customer_id, CustomerState(), None)
    partition.index.schedule(customer_id, None)
    partition.links_waiting.pop(customer_id, None)
    key = customer_id.encode()
    queue(settings.topic_blacklist_status, key, None)
    record = {
        "type": "customer_erased",
        "alert_id": alert_id("customer_erased", customer_id, event.event_id, ""),
        "customer_id": customer_id,
        "occurred_at": event.occurred_at.isoformat(),
        "requested_by": event.actor,
        "request_id": event.event_id,
    }
    queue(settings.topic_erasures, key, encode(record))
    metrics.count_alert("customer_erased")
    metrics.count_input(msg.topic, event.type, "processed")
    log.info(
        "customer %s erased at the request of %s",
        customer_id,
        event.actor,
        extra={"customer_id": customer_id, "actor": event.actor},
    )


def processing_failed(msg: RawMessage, exc: Exception) -> None:
    """Dead-letter a message whose application raised; its customer's state was put back."""
    metrics.processing_error("message", type(exc).__name__).inc()
    error = ProcessingError(f"{type(exc).__name__}: {exc}")
    dead_letter(msg, Rejected(dead_letter_for(msg, error)))


def observe_retention(
    state: RetentionState, event: CustomerEvent, effects: Iterable[Effect]
) -> list[RetentionEffect]:
    """Feed the retention detector what the event and the unpaid detector's verdict say."""
    if type(event) is CheckoutConfirmed:
        retention.checkout(state, traits_of(event))
    elif type(event) is InquiryReceived:
        retention.inquiry(state, event.shop_id, event.occurred_at)
    elif type(event) is OrderStatusChanged and event.status == "refunded":
        amount = event.refund.amount_minor if event.refund is not None else None
        retention.refund(state, event.order_id, amount)
    kept: list[RetentionEffect] = []
    for effect in effects:
        if type(effect) is RecordPurchase:
            order = Purchase(
                effect.order_id, effect.shop_id, effect.at, effect.amount_minor, effect.currency
            )
            kept += retention.purchase(state, event.customer_id, order, retention_policy)
    return kept


def from_future(msg: RawMessage, at: datetime, what: str) -> bool:
    """Live, whether `at` is further ahead of the worker's clock than HITRUN_MAX_CLOCK_SKEW
    allows: then `msg` is dead-lettered as `from_future`."""
    if REPLAY or at <= broker_time.now() + MAX_CLOCK_SKEW:
        return False
    error = FromFuture(
        f"{what} {at.isoformat()} is more than {MAX_CLOCK_SKEW} ahead "
        "of the worker's clock (HITRUN_MAX_CLOCK_SKEW)"
    )
    dead_letter(msg, Rejected(dead_letter_for(msg, error)))
    return True


def accept(msg: RawMessage, event: CustomerEvent | Watermark, partition: PartitionTimers) -> None:
    """Route an accepted event of `partition`: straight to the detectors (live) or through
    the reorder buffer."""
    # One producer's clock (or a hostile one) must not move the stream clock and
    # expire other customers' orders.
    if not REPLAY and from_future(msg, event.occurred_at, "event time"):
        return
    restored = partition.restored
    watermark = type(event) is Watermark
    again = restored is not None and (
        restored.already_applied(msg.topic, msg.offset, None)
        if isinstance(event, Watermark)
        else restored.already_applied(msg.topic, msg.offset, event.occurred_at, event.customer_id)
    )
    if again:
        # Read again after a restart, applied before it: its effects are stored.
        metrics.count_input(msg.topic, event.type, "duplicate")
        if not watermark:
            return
        # A watermark has no effect of its own, but how far its topic has been
        # read is not in the restored clock (it keeps only the times read before
        # the lowest held event): it counts again, or the held events wait forever.
    item = None if watermark else (event, msg)
    order = None
    if msg.topic == settings.reroute_topic:
        origin = origin_of(msg)
        if partition.second_copy(msg, origin):
            metrics.count_input(msg.topic, event.type, "duplicate")
            return
        # A rerouted event takes its place by where it was first read.
        order = (origin.topic, origin.offset)
    partition.buffer.add(msg.topic, msg.offset, event.occurred_at, item, order)
    if watermark and not again:
        metrics.count_input(msg.topic, event.type, "processed")
    if not REPLAY:
        return  # released by settle() once the batch is read
    mark = partition.buffer.watermark()
    released = partition.released_before
    # Every held event is at or after `released` (each release takes all before it): only
    # a later mark, or an event read after its time was released, has anything to release.
    if event.occurred_at < released or (mark is not None and mark > released):
        partition.release(mark or EARLIEST_TIME)
    if mark is not None:
        fire_due(partition, partition.clock.observe(mark))


def settle_live(number: int, partition: PartitionTimers, caught_up: CaughtUp) -> bool:
    """Live mode: release the partition's held events up to its aligned clock.

    The clock may advance to the minimum, over the partition's input topics
    that still have unread records, of the latest event time read from each; a
    topic read to its end holds nothing back, and with every topic read to its
    end, to the latest time read (a watermark's included). So a backlog on one topic never
    makes another topic's events late, and a restart reads its backlog in
    event-time order before deciding anything. With more than one partition,
    the clock also goes no further than the other partitions' progress marks
    (`PartitionTimers.bound`). At HITRUN_MAX_HELD_EVENTS held events the
    oldest are applied anyway, as if the lagging topics had caught up: their
    older events may then be dead-lettered as late_event.
    """
    buffer = partition.buffer
    held_before, clock_before = len(buffer), partition.clock.now
    if caught_up(TopicPartition(settings.reroute_topic, number)):
        partition.resume_sources(number, None)
    mark: datetime | None = None  # None: nothing holds the partition back
    for topic in BUFFERED_TOPICS:
        if caught_up(TopicPartition(topic, number)):
            continue
        seen = buffer.seen(topic)
        if seen is None:
            mark = EARLIEST_TIME  # unread records, none read yet: hold everything
            break
        mark = seen if mark is None else min(mark, seen)
    read_to_end = mark is None
    # The other partitions' marks bound it too; a bound is no event time of this
    # partition's (it may be wall time): the clock never passes what the topics read.
    limit = partition.bound(number)
    if limit is not None:
        mark = None if mark is None else min(mark, limit)
    partition.release(mark if limit is None or mark is not None else limit)
    while len(buffer) > MAX_HELD:
        oldest = cast(datetime, buffer.oldest())
        metrics.forced_releases.inc()
        partition.release(oldest + timedelta(microseconds=1))
    if read_to_end:
        # Every topic is read to its end: the partition's event time is the latest time
        # read (a watermark's too, which no event carries), as far as the marks allow.
        read = [at for at in map(buffer.seen, BUFFERED_TOPICS) if at is not None]
        if read:
            mark = max(read) if limit is None else min(max(read), limit)
    if mark is not None and mark > EARLIEST_TIME:
        fire_due(partition, partition.clock.observe(mark))
    if read_to_end:
        follow_tick(partition, number)
    return len(buffer) != held_before or partition.clock.now != clock_before


def dispatch(msg: RawMessage, verdict: Verdict, partition: PartitionTimers) -> None:
    """Carry out a verdict on a message of `partition`: process the event, reroute it, or
    dead-letter it."""
    if type(verdict) is Accepted:
        accept(msg, verdict.event, partition)
    elif isinstance(verdict, Reroute):
        if ALIGN_SOURCES and verdict.at <= broker_time.now() + MAX_CLOCK_SKEW:
            read = partition.rerouted_to
            if msg.topic not in read or verdict.at > read[msg.topic]:
                read[msg.topic] = verdict.at
        if partition.restored is not None and partition.restored.was_sent_on(msg.topic, msg.offset):
            # Read again after a restart, rerouted before it: the copy is in the reroute
            # topic (the clock record is sent only after a batch's reroutes are delivered).
            # A second copy would reach its partition long after its first, as a late event.
            metrics.count_input(msg.topic, "unknown", "duplicate")
            return
        queue(settings.reroute_topic, msg.key, msg.value, verdict.partition, verdict.headers)
        metrics.count_input(msg.topic, "unknown", "rerouted")
    elif isinstance(verdict, Rejected):
        dead_letter(msg, verdict)


def dead_letter(msg: RawMessage, verdict: Rejected) -> None:
    """Queue a refused message for the dead-letter topic, count it and log why."""
    letter = verdict.dead_letter
    queue(settings.topic_dead_letters, msg.key, encode(letter))
    metrics.count_input(msg.topic, "unknown", "dead_lettered")
    metrics.dead_letter(letter.reason).inc()
    log.warning(
        "dead letter %s from %s[%d]@%d: %s",
        letter.reason,
        letter.source.topic,
        letter.source.partition,
        letter.source.offset,
        letter.detail,
        extra={"reason": letter.reason, "source_topic": letter.source.topic},
    )


def on_tick(partition_number: int, wall_ms: int) -> None:
    """Live mode: move the partition's clock to the tick's wall time (as far as the other
    partitions' marks let it) and fire what is due."""
    partition = timers.of(partition_number)
    partition.tick_wall = datetime.fromtimestamp(wall_ms / 1000, tz=UTC)
    follow_tick(partition, partition_number)


def follow_tick(partition: PartitionTimers, number: int) -> None:
    """Move the clock towards the latest tick's wall time, as far as the other partitions'
    marks let it, and fire what is due.

    Each idle wake writes marks and reads the ones written at the wake before,
    so a tick's bound is the others' progress of a moment ago. The clock takes
    the rest of the tick's step when their next marks are read (`settle_live`),
    the partition still read to its end: no wall time is read but the tick's.
    """
    wall = partition.tick_wall
    if wall is None:
        return
    limit = partition.bound(number)
    if limit is None or limit >= wall:
        partition.tick_wall = None
        limit = wall
    fire_due(partition, partition.clock.tick(limit))


def read_mark(msg: RawMessage) -> None:
    """Take another partition's progress from a mark on this partition's reroute topic."""
    try:
        sources = progress.decode_mark(msg.value, settings.partitions)
    except InputRejected as exc:
        dead_letter(msg, Rejected(dead_letter_for(msg, exc)))
        return
    # One read again after a restart counts as it did the first time: what it vouches
    # for is read again before it.
    timers.of(msg.partition).heard_from(msg.partition, sources)
    metrics.progress_marks.labels(msg.topic, "read").inc()


def queue_marks(caught_up: CaughtUp, owned: Iterable[int]) -> None:
    """Write to every partition of the reroute topic how far each owned partition is read.

    Queued after the batch's reroutes, so each mark follows in its partition
    every event rerouted before it.
    """
    wall = broker_time.now()
    reached = {number: read_progress(number, caught_up, wall) for number in sorted(owned)}
    # Every partition gets a mark, one without sources too: that marks arrive at all
    # tells a partition that a silent source is silent, not the broker away.
    for target in range(settings.partitions):
        sources = {number: at for number, at in reached.items() if number != target}
        value = progress.encode_mark(sources)
        queue(settings.reroute_topic, None, value, target, progress.MARK_HEADERS)
        metrics.progress_marks.labels(settings.reroute_topic, "written").inc()


def read_progress(number: int, caught_up: CaughtUp, wall: datetime) -> datetime | None:
    """How far partition `number`'s input topics are read (streams/progress.py)."""
    return progress.source_progress(
        settings.watermarked_topics,
        timers.of(number).read_times(),
        lambda topic: caught_up(TopicPartition(topic, number)),
        wall,
    )


# --- linked accounts: the customer stage's side and the identity stage -------------


def announce(
    customer_id: str,
    state: CustomerState,
    identifiers: dict[str, str] | None,
    at: datetime,
    again: bool = False,
) -> None:
    """Send the identity stage the customer's identifiers it must hear of (agents/identity.py)."""
    for sighting in link_rules.announce(customer_id, state, identifiers, at, again):
        queue_sighting(sighting)


def queue_sighting(sighting: Sighting) -> None:
    queue_internal(settings.identity_topic, sighting.key, internal.encode(sighting))


def queue_internal(topic: str, key: bytes, value: bytes) -> None:
    """Queue a record of an identity topic, signed when the workers share a key."""
    headers = internal.headers(topic, key, value)
    queue(topic, key, value, partition_for_key(key, PARTITIONS), headers)


def publish_links(customer_id: str, effects: Iterable[LinkEffect]) -> None:
    """Queue the alerts of link effects (agents/linking.py: which ones)."""
    for effect in link_rules.alerted(effects):
        queue_alert(customer_id, link_alert(effect, link_policy))


PARTITIONS = settings.partitions
link_rules = LinkRules(policies, link_policy)
internal = InternalRecords(settings.internal_keys)


identifiers = IdentifierStates(lambda key: get_raw(customers_table.data, key))


def apply_sighting(msg: RawMessage) -> None:
    """The identity stage: take one sighting, tell each customer concerned what it changes."""
    seen = read_sighting(msg)
    if seen is not None:
        sight(msg, seen)


def read_sighting(msg: RawMessage) -> Sighting | None:
    """The sighting `msg` holds; None when it holds none (dead-lettered)."""
    seen = read_internal(msg, internal.decode_sighting, "an identifier sighting")
    if seen is None:
        return None
    if msg.key != seen.key:
        internal_refused(msg, "a sighting keyed other than by its identifier")
        return None
    if partition_for_key(seen.key, PARTITIONS) != msg.partition:
        # Applied here, the identifier's state would be written by a worker that does
        # not own its partition, behind that partition's clock record (a signature
        # covers topic, key and value, not the partition: a copy elsewhere passes).
        internal_refused(msg, "a sighting in another partition than its identifier's")
        return None
    return seen


def take_held(partition: PartitionTimers, msg: RawMessage) -> None:
    """A record of an identity topic, in event-time order (ORDER_SIGHTINGS): a mark
    releases what every partition has sent; a sighting or report waits for it, but one
    behind what is released already is applied at once (a late event's, or one sent
    again after a restart)."""
    sightings = msg.topic == settings.identity_topic
    stage = partition.sightings if sightings else partition.reports
    if msg.headers and progress.is_mark(msg.headers):
        partition.read(msg)
        read_stage_mark(partition, stage, msg)
        return
    record: Sighting | Report | None = read_sighting(msg) if sightings else read_report(msg)
    if record is None:
        partition.read(msg)
        return
    # A report goes by when the announcement it answers was made (`identity.heard_at`).
    at = record.at if isinstance(record, Sighting) else identity.heard_at(record)
    restored = partition.restored
    if restored is not None and restored.already_applied(
        msg.topic,
        msg.offset,
        at if msg.topic in restored.apart else None,
        internal_key(msg),
    ):
        metrics.count_input(msg.topic, type_of(record), "duplicate")
        return
    partition.read(msg)
    if at < stage.before:
        apply_held_record(msg, record)
        if not sightings:
            after_reports(partition)
        return
    # Workers send these at event or clock times, which never run ahead of the wall
    # clock: one that does (written by someone else) would hold back the commit of
    # its partition until the clocks reached it.
    if from_future(msg, at, "record time"):
        return
    stage.buffer.add(msg.topic, msg.offset, at, (msg, record), held_order(record))


def held_order(record: Sighting | Report) -> tuple[str, int]:
    """Where a held record goes among those of its instant: by what it is about, not by
    which partition sent it first."""
    if isinstance(record, Sighting):
        return f"{record.kind}:{record.hash} {record.customer}", int(record.forget)
    about = getattr(record, "kind", "") + ":" + getattr(record, "prefix", "")
    return f"{about} {getattr(record, 'other', '')} {type_of(record)}", 0


def type_of(record: Sighting | Report) -> str:
    return (
        "identifier_sighting" if isinstance(record, Sighting) else str(record.__struct_config__.tag)
    )


def apply_held_record(msg: RawMessage, record: Sighting | Report) -> None:
    if isinstance(record, Sighting):
        sight(msg, record)
    else:
        deliver(msg, record)


def read_stage_mark(partition: PartitionTimers, stage: HeldStage, msg: RawMessage) -> None:
    """Take the writing partitions' progress from a mark; apply what it releases."""
    if not internal.authentic(msg.topic, msg.key, msg.value, msg.headers):
        internal_refused(msg, Unauthenticated("a mark not signed with HITRUN_INTERNAL_KEY"))
        return
    try:
        sources = progress.decode_mark(msg.value, settings.partitions)
    except InputRejected as exc:
        internal_refused(msg, exc)
        return
    stage.heard(msg.topic, msg.partition, sources)
    metrics.progress_marks.labels(msg.topic, "read").inc()
    release_held(partition, stage)


def own_progress(partition: PartitionTimers) -> datetime:
    """How far the partition has applied its own input: every event before
    `released_before`, every timer up to its clock."""
    now = partition.clock.now
    if now is not None and now >= partition.released_before:
        return now + timedelta(microseconds=1)
    return partition.released_before


def release_held(partition: PartitionTimers, stage: HeldStage) -> bool:
    """Apply the records of `stage` the marks let through; True when any was applied.

    Link reports (`partition.reports`): none of a time the partition has not
    applied its own input up to.

    The marks pass a report about time t only once every customer partition has
    said it sent its sightings up to t, so a customer's report finds its state
    at t or later. A partition that a restart took back to an older clock record
    goes over its input again, while the other partitions already heard what it
    sent before: a report about a later time then waits for it (else a customer
    linked to an account blacklisted through it was blacklisted beside its own
    blacklisting, not yet made again, instead of after it).
    """
    reports = stage is partition.reports
    released = stage.release(own_progress(partition) if reports else None)
    for held in released:
        apply_held_record(*cast(tuple[RawMessage, Sighting | Report], held))
    if reports:
        after_reports(partition)
    return bool(released)


def after_reports(partition: PartitionTimers) -> None:
    """Fire what link reports made due at a time the clock has passed (a link heard of
    late that has aged out since, a blacklisting through it that has ended), and age
    the links that waited for the reports to get this far."""
    now = partition.clock.now
    if now is not None:
        fire_due(partition, now)
        age_waiting(partition)


def queue_stage_marks(topic: str, sent: Mapping[int, datetime]) -> None:
    """Write to every partition of `topic` (an identity topic) how far each owned partition
    has sent its records there (`CustomerProcessor._mark_stages`).

    Queued after the batch's records, so each mark follows in its partition every
    record sent before it.
    """
    value = progress.encode_mark(sent)
    headers = (*progress.MARK_HEADERS, *internal.headers(topic, b"", value))
    for target in range(PARTITIONS):
        queue(topic, None, value, target, headers)
        metrics.progress_marks.labels(topic, "written").inc()


def sight(msg: RawMessage, seen: Sighting) -> None:
    """Apply a sighting to its identifier; queue what each customer concerned must hear."""
    key = IDENTITY_KEY_PREFIX + seen.key
    before = identifiers.snapshot(key)
    try:
        reports = identity.sight(identifiers.load(key), seen, link_policy)
    except Exception as exc:
        if STOP_ON_ERROR:
            raise
        identifiers.restore(key, before)
        processing_failed(msg, exc)
        return
    identifiers.changed(key)
    for report in reports:
        queue_internal(settings.links_topic, report.customer.encode(), internal.encode(report))
    metrics.count_input(msg.topic, "identifier_sighting", "processed")


def apply_report(msg: RawMessage) -> None:
    """The customer stage: take what the identity stage says about one of its customers."""
    report = read_report(msg)
    if report is not None:
        deliver(msg, report)
        after_reports(timers.of(msg.partition))


def read_report(msg: RawMessage) -> Report | None:
    """The link report `msg` holds; None when it holds none (dead-lettered)."""
    report = read_internal(msg, internal.decode_report, "a link report")
    if report is None:
        return None
    if partition_for_key(report.customer.encode(), PARTITIONS) != msg.partition:
        internal_refused(msg, "a link report in another partition than its customer's")
        return None
    return report


def deliver(msg: RawMessage, report: Report) -> None:
    """Apply a link report to its customer; queue the alerts and changes it makes."""
    customer_id = report.customer
    partition = timers.of(msg.partition)

    def receive() -> None:
        state, _ = cache.load(customer_id)
        # Links that age out before the report's time first, at their own times.
        aged, aged_changes = link_rules.expire(customer_id, state, identity.heard_at(report))
        effects, changes = link_rules.hear(customer_id, state, report)
        effects = aged + effects
        changes = aged_changes + changes
        state.tidy()
        wake = next_due(state)
        cache.store(customer_id, state, wake)
        partition.index.schedule(customer_id, wake)
        publish_links(customer_id, effects)
        publish(customer_id, state, changes)

    if scoped(msg, receive):
        metrics.count_input(msg.topic, type_of(report), "processed")


def read_internal(msg: RawMessage, decode: Callable[[bytes], T], what: str) -> T | None:
    """The record of an internal topic's message; None when it is not `what` or not signed
    with the workers' key (dead-lettered)."""
    if not internal.authentic(msg.topic, msg.key, msg.value, msg.headers):
        internal_refused(msg, Unauthenticated(f"{what} not signed with HITRUN_INTERNAL_KEY"))
        return None
    try:
        return decode(msg.value or b"")
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        internal_refused(msg, f"not {what}: {exc}")
        return None


def internal_refused(msg: RawMessage, error: str | InputRejected) -> None:
    """A record on an internal topic hitrun did not write: dead-lettered, never applied."""
    if isinstance(error, str):
        error = SchemaViolation(error)
    dead_letter(msg, Rejected(dead_letter_for(msg, error)))


# The identity topics' records and the stage that applies each: an identifier's sighting in
# its partition of the identity topic, a link report in its customer's of the links topic.
INTERNAL_STAGES: dict[str, Callable[[RawMessage], None]] = {
    settings.identity_topic: apply_sighting,
    settings.links_topic: apply_report,
}


def stamp(key: bytes, value: bytes) -> bytes:
    """A state's stored value, stamped with the batch its partition is writing
    (`PartitionTimers.write_record`, which numbers it)."""
    partition = timers.partitions.get(customers_table.partition_for_key(key))
    return value if partition is None else stamped(partition.upcoming, value)


def internal_key(msg: RawMessage) -> str:
    """The key of the state a record of an identity topic changes: its identifier's
    (sightings), or its customer's (link reports)."""
    prefix = IDENTITY_KEY_PREFIX if msg.topic == settings.identity_topic else b""
    return (prefix + (msg.key or b"")).decode(errors="replace")


class CustomerProcessor:
    """The agent as streams/loop.py drives it: apply records and ticks, stage, confirm, reset."""

    def __init__(self) -> None:
        self._clock_writes: list[tuple[bytes, bytes]] = []
        self._marked_at: float = float("-inf")
        self._read_input = False  # records of the input topics read since the last marks
        # What the last marks on the identity topics said (`_mark_stages`), and when.
        self._staged_marks: dict[str, dict[int, datetime]] = {}
        self._staged_marks_at: float = float("-inf")
        # Applied, settled or ticked since the last batch the broker confirmed.
        self._unconfirmed = False

    def prepare(self) -> None:
        timers.prepare()
        # Where this worker's next state record of each partition should land: right after
        # what the recovery read, unless another writer comes in between (streams/repair.py).
        for tp, end in faust_bridge.recovered_ends(app).items():
            if tp.topic == changelog_topic_name:
                sink.expect(tp, end)

    def _state_headers(self, number: int) -> Headers:
        """The headers of this batch's state records of partition `number`: its writer token
        (streams/fencing.py)."""
        return writers.headers(number, app.consumer_generation_id)

    def rewrite(self, keys: Mapping[TopicPartition, set[bytes]]) -> None:
        store = customers_table.data
        for tp, written in keys.items():
            headers = self._state_headers(tp.partition)
            for key in sorted(written):
                sink.put(OutRecord(tp.topic, key, get_raw(store, key), tp.partition, headers))

    def apply(self, msg: RawMessage) -> None:
        self._unconfirmed = True
        partition = timers.of(msg.partition)
        if ORDER_SIGHTINGS and msg.topic in INTERNAL_STAGES:
            take_held(partition, msg)
            return
        internal_stage = INTERNAL_STAGES.get(msg.topic)
        if internal_stage is not None:
            # Applied at once, their effects stored with the clock record of the same
            # partition: one read before a restart is not applied twice.
            restored = partition.restored
            if restored is not None and restored.already_applied(
                msg.topic, msg.offset, None, internal_key(msg)
            ):
                metrics.count_input(msg.topic, "unknown", "duplicate")
                return
            partition.read(msg)
            internal_stage(msg)
            return
        partition.read(msg)
        if msg.topic == settings.reroute_topic:
            partition.resume_sources(msg.partition, msg.offset + 1)
            if msg.headers and progress.is_mark(msg.headers):
                read_mark(msg)
                return
        else:
            self._read_input = True
        try:
            verdict = classify(msg, ingest_rules)
        except Exception as exc:  # classify refuses bad input itself; this is a bug in it
            if STOP_ON_ERROR:
                raise
            processing_failed(msg, exc)
            return
        dispatch(msg, verdict, partition)

    def tick(self, partition: int, wall_ms: int) -> None:
        self._unconfirmed = True
        on_tick(partition, wall_ms)
        alert_log.flush()

    def settle(self, caught_up: CaughtUp, owned: Iterable[int]) -> bool:
        moved = False
        if not REPLAY:
            for number, partition in list(timers.partitions.items()):
                moved |= settle_live(number, partition, caught_up)
        if ALIGN_SOURCES:
            since = time.monotonic() - self._marked_at
            if since >= (PROGRESS_INTERVAL_S if self._read_input else IDLE_MARKS_S):
                self._marked_at = time.monotonic()
                self._read_input = False
                queue_marks(caught_up, owned)
                moved = True
        if ORDER_SIGHTINGS:
            # Reports the marks let through while the partition was behind them.
            for partition in timers.partitions.values():
                if len(partition.reports.buffer):
                    moved |= release_held(partition, partition.reports)
            moved |= self._mark_stages(owned)
        self._unconfirmed |= moved
        return moved

    def _mark_stages(self, owned: Iterable[int]) -> bool:
        """Write marks on the identity topics when a partition has sent further, at most
        every progress interval (and, live, at least every idle interval: a partition
        named by no mark for HITRUN_PROGRESS_TIMEOUT is no longer waited for). A
        replay's worker at rest writes none.

        On the identity topic, how far each owned partition has sent its sightings
        (`PartitionTimers.sent_before`); on the links topic, how far its identity
        stage has sent its reports: up to the sightings it released.
        """
        since = time.monotonic() - self._staged_marks_at
        if since < PROGRESS_INTERVAL_S:
            return False
        numbers = sorted(owned)
        reached = {
            settings.identity_topic: {n: timers.of(n).sent_before() for n in numbers},
            settings.links_topic: {n: timers.of(n).sightings.before for n in numbers},
        }
        news = reached != self._staged_marks
        if not news and (REPLAY or since < IDLE_MARKS_S):
            return False
        self._staged_marks_at = time.monotonic()
        self._staged_marks = reached
        for topic, sent in reached.items():
            queue_stage_marks(topic, sent)
        return True

    def held(self) -> dict[TopicPartition, int]:
        held: dict[TopicPartition, int] = {}
        for number, partition in timers.partitions.items():
            for topic, offset in partition.buffer.lowest_held().items():
                held[TopicPartition(topic, number)] = offset
            for stage in (partition.sightings, partition.reports):
                for topic, offset in stage.buffer.lowest_held().items():
                    held[TopicPartition(topic, number)] = offset
        return held

    def end_batch(self) -> None:
        alert_log.flush()
        # Per partition, the clock record goes first, then the deleted states, then
        # the states stamped with its batch (`PartitionTimers.write_record`).
        writes: dict[int, list[tuple[bytes, bytes | None]]] = {}
        for key, value in itertools.chain(cache.stage(stamp), identifiers.stage(stamp)):
            writes.setdefault(customers_table.partition_for_key(key), []).append((key, value))
        for number, partition in timers.partitions.items():
            changed = sorted(writes.pop(number, []), key=lambda write: write[1] is not None)
            record = partition.write_record(changed)
            if record is None and not changed:
                continue
            headers = self._state_headers(number)
            if record is not None:
                key = clock_key(number)
                self._clock_writes.append((key, record))
                sink.put(OutRecord(changelog_topic_name, key, record, number, headers))
            for key, value in changed:
                sink.put(OutRecord(changelog_topic_name, key, value, number, headers))
        for number, orphans in writes.items():  # of no partition this worker owns
            headers = self._state_headers(number)
            for key, value in orphans:
                sink.put(OutRecord(changelog_topic_name, key, value, number, headers))

    def confirmed(self, delivered: Mapping[TopicPartition, int]) -> None:
        writes = cache.commit(timers.tally)
        writes += identifiers.commit()
        writes += self._clock_writes
        self._clock_writes.clear()
        for partition in timers.partitions.values():
            partition.confirm()
        # With the states, what Faust does after each changelog send: a
        # persistent store (RocksDB) then recovers only the changelog's tail.
        offsets = {tp: o for tp, o in delivered.items() if tp.topic == changelog_topic_name}
        write_raw(customers_table.data, writes, offsets)
        for tp, offset in offsets.items():
            writers.wrote(tp.partition, offset)
        timers.set_gauges()
        metrics.held_events.set(sum(len(p.buffer) for p in timers.partitions.values()))
        self._unconfirmed = False

    def reset(self) -> None:
        # The deadline indexes match the store only if nothing was applied since the last
        # batch the broker confirmed (the loop resets between batches, once the batch in
        # hand is confirmed; a batch that fails ends the process).
        settled = not self._unconfirmed and not cache.pending()
        cache.forget()
        identifiers.forget()
        sink.discard()
        timers.clear(keep_indexes=settled)
        self._unconfirmed = False
        self._clock_writes.clear()


def stop_without_commit(exc: BaseException) -> None:
    """End the process now: a batch failed, and its offsets must not be committed.

    The loop never commits a batch that failed, but a graceful stop would
    still run Faust's shutdown around a half-applied batch. Exiting at once
    leaves the offsets at the last confirmed batch; a restarted worker
    recovers the table from its changelog and processes the batch again
    (alert ids are deterministic).
    """
    log.critical(
        "batch failed; stopping without committing its offsets: %r",
        exc,
        exc_info=exc,
        extra={"exit_code": EXIT_BATCH_FAILED},
    )
    logging.shutdown()
    os._exit(EXIT_BATCH_FAILED)


changelog_topic_name = customers_table.changelog_topic.get_topic_name()
sink = RecordSink(
    client_options(settings),
    client_id=f"{settings.app_id}-sink",
    state_topics=frozenset({changelog_topic_name}),
    clock=broker_time,
    batch_bytes=settings.produce_batch_bytes,
    # A mark vouching for nothing: the broker's time is read from its delivery before
    # anything else is written, or a tick moved a clock.
    probe=OutRecord(
        settings.reroute_topic, None, progress.encode_mark({}), 0, progress.MARK_HEADERS
    ),
)

metrics.wall_clock_offset.set_function(broker_time.offset_s)

changelog_reader = ChangelogReader(settings)
consume_loop = ConsumeLoop(
    CustomerProcessor(),
    sink,
    topics=frozenset(
        {
            *settings.input_topics,
            settings.reroute_topic,
            settings.identity_topic,
            settings.links_topic,
        }
    ),
    clock_topics=(*settings.watermarked_topics, settings.reroute_topic),
    live=not REPLAY,
    tick_interval_s=settings.tick_interval.total_seconds(),
    commit_interval_s=settings.commit_interval.total_seconds(),
    on_fatal=stop_without_commit,
    spent=lambda phase, seconds: metrics.loop_phase(phase).inc(seconds),
    fenced=metrics.fenced_batches.inc,
    states=changelog_reader,
    overwritten=metrics.overwritten_states.inc,
    wall_ms=broker_time.now_ms,
    partitions=settings.partitions,
)
faust_bridge.install(app, consume_loop, fetch_total_bytes=settings.fetch_total_bytes)
# The input topics are subscribed through the conductor, like an agent's would be.
app.topics.add(input_topic)


@app.on_before_shutdown.connect  # type: ignore[arg-type]  # mode types the sender positional-only
async def _on_shutdown(sender: Any, *args: Any, signal: Any, **kwargs: Any) -> None:
    alert_log.flush(force=True)
    await sink.stop()
    await changelog_reader.stop()
