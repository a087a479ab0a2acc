"""Stream time per partition, and the per-partition index of customers' next deadlines."""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Any

import orjson

from hitrun.schemas.records import EARLIEST_TIME


@dataclass
class PartitionClock:
    """The stream clock of one partition: it only moves forward.

    Event times and watermarks move it in both modes; in live mode a tick also
    moves it to the tick's wall time, so idle partitions still fire on time.
    Lateness is judged against event time alone (`events`): a worker catching
    up on a backlog after ticks have moved the clock must not find the backlog late.
    """

    now: datetime | None = None
    events: datetime | None = None

    def observe(self, moment: datetime) -> datetime:
        """An event or watermark at `moment`; returns the clock."""
        if self.events is None or moment > self.events:
            self.events = moment
        return self.tick(moment)

    def tick(self, moment: datetime) -> datetime:
        """Wall time of a live tick (or any other reading that is not an event)."""
        if self.now is None or moment > self.now:
            self.now = moment
        return self.now

    def is_late(self, moment: datetime, lateness: timedelta) -> bool:
        """Is an event at `moment` older than the partition's event time by more than `lateness`?"""
        return self.events is not None and moment < self.events - lateness


@dataclass(frozen=True)
class Tier:
    """What a batch a worker died sending applied, to the keys whose states it sent.

    A partition's batch sends its clock record first, then the states it
    changed, each stamped with the batch's id (agents/state.py, `stamped`).
    A worker killed while they were on their way leaves a record that holds the
    batch and only some of its states: the next owner goes back to the record
    before it for the partition, and counts the batch's events as applied for
    the `keys` (customers, identifiers) whose stored state carries the stamp,
    and only for them. The tier is kept until what every key holds covers it.
    """

    batch: int
    read_next: dict[str, int]
    released_before: datetime
    keys: frozenset[str]
    # Topics released apart from the partition's events (ClockRecord.apart).
    apart: dict[str, datetime] = field(default_factory=dict)

    def applied(self, topic: str, offset: int, at: datetime | None) -> bool:
        """Had the batch applied the record at `offset` of `topic` (event time `at`)?"""
        before = self.apart.get(topic, self.released_before)
        return offset < self.read_next.get(topic, 0) and (at is None or at < before)

    def covered_by(
        self, read_next: dict[str, int], released_before: datetime, apart: dict[str, datetime]
    ) -> bool:
        """Does what every key holds (`read_next`, `released_before`, `apart`) include the tier?"""
        return (
            released_before >= self.released_before
            and all(read_next.get(topic, 0) >= n for topic, n in self.read_next.items())
            and all(topic in apart and apart[topic] >= at for topic, at in self.apart.items())
        )

    def encode(self) -> dict[str, object]:
        body: dict[str, object] = {
            "batch": self.batch,
            "read_next": dict(sorted(self.read_next.items())),
            "released_before": self.released_before.isoformat(),
            "keys": sorted(self.keys),
        }
        if self.apart:
            body["apart"] = {topic: at.isoformat() for topic, at in sorted(self.apart.items())}
        return body

    @classmethod
    def decode(cls, body: dict[str, Any]) -> Tier:
        return cls(
            int(body["batch"]),
            {topic: int(n) for topic, n in body["read_next"].items()},
            datetime.fromisoformat(body["released_before"]),
            frozenset(str(key) for key in body["keys"]),
            {topic: datetime.fromisoformat(at) for topic, at in body.get("apart", {}).items()},
        )


@dataclass
class ClockRecord:
    """What a partition persists with its customers' states, read back after a restart.

    `clock` and `seen` (the latest time read from each input topic) keep the
    partition's stream time. `read_next` (per topic, the next offset read) and
    `released_before` (every event read before this time has been applied;
    None: every event read) tell which records read again after a restart were
    applied already, so they are skipped instead of judged late. `origins` (per
    topic and partition a rerouted event was first read at, the offset after
    the last one read) tells a copy rerouted a second time from its first;
    `sources` are the other partitions' progress marks read (streams/progress.py).
    `apart` (per topic whose records are released apart from the partition's
    events: the identity topic's sightings) is that topic's `released_before`;
    a topic absent from it had every record read applied.
    These fields hold for every key of the partition; `tiers` (`Tier`) say what
    later batches applied to some keys, `batch` is the id of the last one.
    """

    clock: PartitionClock
    seen: dict[str, datetime]
    read_next: dict[str, int] = field(default_factory=dict)
    released_before: datetime | None = None
    origins: dict[tuple[str, int], int] = field(default_factory=dict)
    sources: dict[int, datetime | None] = field(default_factory=dict)
    apart: dict[str, datetime] = field(default_factory=dict)
    # A record a batch wrote (`batch` > 0): the number of states it stamped, the keys it
    # deleted, and the record before it (what every key held before the batch).
    batch: int = 0
    states: int = 0
    deleted: tuple[str, ...] = ()
    previous: ClockRecord | None = None
    tiers: tuple[Tier, ...] = ()

    def encode(self) -> bytes:
        return orjson.dumps(self._fields())

    def _fields(self) -> dict[str, Any]:
        apart: dict[str, Any] = {}
        if self.apart:  # absent: as written before sightings were held
            apart = {"apart": {t: at.isoformat() for t, at in sorted(self.apart.items())}}
        batch: dict[str, Any] = {}
        if self.batch:
            batch = {"batch": self.batch, "states": self.states, "deleted": list(self.deleted)}
            if self.previous is not None:
                batch["previous"] = self.previous._fields()
            if self.tiers:
                batch["tiers"] = [t.encode() for t in self.tiers]
        return {
            "v": 1,
            "now": _iso(self.clock.now),
            "events": _iso(self.clock.events),
            "seen": {topic: at.isoformat() for topic, at in sorted(self.seen.items())},
            "read_next": dict(sorted(self.read_next.items())),
            "released_before": _iso(self.released_before),
            "origins": {f"{t}:{p}": n for (t, p), n in sorted(self.origins.items())},
            "sources": {str(q): _iso(at) for q, at in sorted(self.sources.items())},
            **apart,
            **batch,
        }

    @classmethod
    def decode(cls, data: bytes) -> ClockRecord:
        """Raises ValueError for anything `encode` did not write."""
        try:
            return cls._from_fields(orjson.loads(data))
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError, ValueError) as exc:
            raise ValueError(f"not a clock record: {exc!r}") from None

    @classmethod
    def _from_fields(cls, record: dict[str, Any]) -> ClockRecord:
        if record.get("v") != 1:
            raise ValueError(f"unknown clock record version {record.get('v')!r}")
        previous = record.get("previous")
        return cls(
            clock=PartitionClock(now=_time(record["now"]), events=_time(record["events"])),
            seen={topic: datetime.fromisoformat(at) for topic, at in record["seen"].items()},
            read_next={topic: int(n) for topic, n in record["read_next"].items()},
            released_before=_time(record["released_before"]),
            # Absent from records written before copies were told apart.
            origins={
                (topic, int(partition)): int(n)
                for topic, partition, n in (
                    (*key.rsplit(":", 1), n) for key, n in record.get("origins", {}).items()
                )
            },
            sources={int(q): _time(at) for q, at in record.get("sources", {}).items()},
            apart={t: datetime.fromisoformat(at) for t, at in record.get("apart", {}).items()},
            # Absent from records written before batches were stamped.
            batch=int(record.get("batch", 0)),
            states=int(record.get("states", 0)),
            deleted=tuple(str(key) for key in record.get("deleted", ())),
            previous=None if previous is None else cls._from_fields(previous),
            tiers=tuple(Tier.decode(t) for t in record.get("tiers", ())),
        )

    def applied_before(self) -> datetime:
        """`released_before` as a time: a record that says every event read was applied
        (None) holds up to just after the latest time it read."""
        if self.released_before is not None:
            return self.released_before
        if not self.seen:
            return EARLIEST_TIME
        return max(self.seen.values()) + timedelta(microseconds=1)

    def was_read(self, topic: str, offset: int) -> bool:
        """Had the record at `offset` of `topic` been read when this record was written?"""
        return offset < self.read_next.get(topic, 0)

    def was_sent_on(self, topic: str, offset: int) -> bool:
        """Had a batch this record holds (its own fields or a tier's) read the record at
        `offset` of `topic`? What that batch sent on (a reroute) was delivered before
        the record was sent."""
        return self.was_read(topic, offset) or any(
            offset < t.read_next.get(topic, 0) for t in self.tiers
        )

    def already_applied(
        self, topic: str, offset: int, at: datetime | None, key: str | None = None
    ) -> bool:
        """Was the record at `offset` of `topic` (event time `at`; None for a watermark)
        applied before this record was written, to `key` (None: to every key)?

        A record of a topic released apart (`apart`) is judged by that topic's time.
        """
        before = self.apart.get(topic, self.released_before)
        if self.was_read(topic, offset) and (at is None or before is None or at < before):
            return True
        return key is not None and any(
            key in t.keys and t.applied(topic, offset, at) for t in self.tiers
        )

    def restored(self, stamped: frozenset[str], stored: Callable[[str], bool]) -> ClockRecord:
        """What holds after a restart, given the keys whose stored state carries the
        record's batch stamp (`stamped`) and whether a key has a stored state.

        With every state the batch sent stored (its stamped ones counted, its
        deleted ones gone) the record holds; otherwise the worker died while they
        were on their way: the record before it holds, and the batch is a `Tier`
        for the keys it reached: those stamped, and those it deleted that are gone.
        A customer gets a tombstone only if it had a stored state when the batch
        began, so gone means the tombstone arrived (an identifier with nothing
        stored before is gone either way, and empty is what the batch made of
        it). Left out, a deleted customer would have the batch's events applied
        again to no state at all: a retention window the batch closed opened
        again by the very events it had counted.
        """
        if self.previous is None:
            return self
        gone = [key for key in self.deleted if not stored(key)]
        if len(stamped) == self.states and len(gone) == len(self.deleted):
            return self.settled()
        reached = stamped.union(gone)
        tier = Tier(
            self.batch, dict(self.read_next), self.applied_before(), reached, dict(self.apart)
        )
        return replace(self.previous, batch=self.batch, tiers=(*self.tiers, tier))

    def settled(self) -> ClockRecord:
        """What holds once every state the record's batch sent is stored: the record itself,
        without what tells whether they were (`restored`)."""
        if self.previous is None:
            return self
        return replace(self, states=0, deleted=(), previous=None)

    def fields(self) -> ClockRecord:
        """What holds for every key: the record without what a batch adds (`restored`)."""
        return replace(self, batch=0, states=0, deleted=(), previous=None, tiers=())


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _time(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


# The epoch in each fixed offset met: a datetime minus one of its own timezone object
# is a plain subtraction, where one of another zone computes both offsets first.
_EPOCHS: dict[tzinfo | None, datetime] = {UTC: EPOCH}


def to_micros(moment: datetime) -> int:
    """An aware datetime as integer microseconds since the epoch."""
    zone = moment.tzinfo
    epoch = _EPOCHS.get(zone)
    if epoch is None:
        if type(zone) is not timezone:  # a zone with rules (DST): its offset varies
            epoch = EPOCH
        else:
            epoch = _EPOCHS[zone] = EPOCH.astimezone(zone)
    # The span's fields, not `span // _MICROSECOND`: a timedelta division converts both
    # to Python integers through several multiplications (about a fifth slower).
    span = moment - epoch
    return (span.days * 86_400 + span.seconds) * 1_000_000 + span.microseconds


def from_micros(micros: int) -> datetime:
    """The aware (UTC) datetime of integer microseconds since the epoch."""
    return EPOCH + micros * _MICROSECOND


# The width of a deadline index bucket: an hour, in microseconds.
BUCKET_MICROS = 3_600_000_000


@dataclass
class DeadlineIndex:
    """Each customer's next deadline in one partition, and who is due, earliest first.

    Due times are kept as integer microseconds since the epoch: a worker holds
    one entry per customer with anything pending (a million customers with
    open retention windows are a million entries), and an int is smaller and
    quicker to compare than a datetime. Most deadlines are far ahead (a
    retention window is 90 days), so an entry waits in the list of its hour
    (a list slot, not a heap entry of its own) until the clock reaches that
    hour; then the hour's entries go into the heap of (due, customer) that
    `pop_due` takes from. Entries are never updated in place: a customer whose
    deadline moved gets a new entry, and stale ones are skipped (`_latest` has
    the real one).
    """

    _latest: dict[str, int] = field(default_factory=dict)
    _hours: dict[int, list[str]] = field(default_factory=dict)
    _hour_heap: list[int] = field(default_factory=list)
    _heap: list[tuple[int, str]] = field(default_factory=list)
    # Every hour up to this one is in `_heap`.
    _opened: int = -(2**62)
    # The last instant `has_due` was asked about, in microseconds: a partition's clock
    # asks again with the same object until it moves.
    _asked: datetime | None = None
    _asked_micros: int = 0

    def schedule(self, customer_id: str, due: datetime | None) -> None:
        """Remember the customer's next deadline (None: nothing pending)."""
        self.schedule_micros(customer_id, None if due is None else to_micros(due))

    def schedule_micros(self, customer_id: str, due: int | None) -> None:
        """`schedule` with the deadline in epoch microseconds, as state summaries store it."""
        if due is None:
            self._latest.pop(customer_id, None)
            return
        if self._latest.get(customer_id) == due:
            return
        self._latest[customer_id] = due
        hour = due // BUCKET_MICROS
        if hour <= self._opened:
            heapq.heappush(self._heap, (due, customer_id))
            return
        waiting = self._hours.get(hour)
        if waiting is None:
            waiting = self._hours[hour] = []
            heapq.heappush(self._hour_heap, hour)
        waiting.append(customer_id)

    def _open(self, hour: int) -> None:
        """Move the entries of every hour up to `hour` into the heap."""
        latest = self._latest
        while self._hour_heap and self._hour_heap[0] <= hour:
            opened = heapq.heappop(self._hour_heap)
            for customer_id in self._hours.pop(opened):
                due = latest.get(customer_id)
                if due is not None and due // BUCKET_MICROS == opened:
                    heapq.heappush(self._heap, (due, customer_id))
        self._opened = max(self._opened, hour)

    def has_due(self, now: datetime) -> bool:
        """Whether `pop_due(now)` may find anyone: asked before each event and watermark,
        and most often no."""
        if now is not self._asked:
            self._asked, self._asked_micros = now, to_micros(now)
        limit = self._asked_micros
        if self._heap and self._heap[0][0] <= limit:
            return True
        return bool(self._hour_heap) and self._hour_heap[0] <= limit // BUCKET_MICROS

    def pop_due(self, now: datetime) -> Iterator[tuple[datetime, str]]:
        """Customers whose latest scheduled deadline is at or before `now`, earliest first."""
        if not self._latest:
            if self._heap or self._hours:  # every entry left is stale
                self._heap, self._hours, self._hour_heap = [], {}, []
            return
        limit = to_micros(now)
        if limit // BUCKET_MICROS > self._opened:
            self._open(limit // BUCKET_MICROS)
        while self._heap and self._heap[0][0] <= limit:
            due, customer_id = heapq.heappop(self._heap)
            if self._latest.get(customer_id) != due:
                continue  # superseded by a later schedule() call, or popped already
            del self._latest[customer_id]
            yield from_micros(due), customer_id

    def next_due(self) -> datetime | None:
        while True:
            while self._heap and self._latest.get(self._heap[0][1]) != self._heap[0][0]:
                heapq.heappop(self._heap)
            if self._heap:
                return from_micros(self._heap[0][0])
            if not self._hour_heap:
                return None
            self._open(self._hour_heap[0])  # every entry waiting is later than the heap's

    def due(self, customer_id: str) -> datetime | None:
        """The customer's scheduled deadline (None: nothing pending)."""
        micros = self._latest.get(customer_id)
        return None if micros is None else from_micros(micros)

    def __len__(self) -> int:
        return len(self._latest)


@dataclass
class ReorderBuffer:
    """Replay mode: releases one partition's events in event-time order, whatever the fetch order.

    Kafka fetches the input topics independently, so events of one partition
    arrive interleaved differently on every run. Each event is held until every
    watched topic has been read *past* its time (a later event or watermark of
    each topic), so that every event of the same instant is in the buffer when
    that instant is released, and released in one total order: (event time,
    topic, offset), with a rerouted event ordered by its original topic and
    offset. That order depends on the log alone, not on fetch or batch sizes,
    worker count or restarts, so a replay is deterministic.
    """

    topics: tuple[str, ...]
    # (time in epoch microseconds, ordering topic, ordering offset, topic, offset, arrival,
    # time, item): the arrival number breaks the tie of a record read twice, so items are
    # never compared. Integers, since a shop's times (its offset) and the watermarks'
    # (UTC) compare as datetimes only by computing both offsets each time.
    _pending: list[tuple[int, str, int, str, int, int, datetime, object]] = field(
        default_factory=list
    )
    _arrivals: Iterator[int] = field(default_factory=itertools.count)
    _seen: dict[str, datetime] = field(default_factory=dict)
    # watermark(), kept up to date by add(): it is asked after every event.
    _mark: datetime | None = None
    # The latest time added (an item's or a watermark's, of any topic).
    _latest: datetime | None = None
    # Offsets held per topic (a min-heap; released ones are dropped lazily), so
    # the loop never commits past an event that is held and not yet applied.
    _held: dict[str, list[int]] = field(default_factory=dict)
    _released: dict[str, set[int]] = field(default_factory=dict)
    # Per topic, (offset, latest time read up to that offset) in read order:
    # what a restart that reads again from the lowest held offset has seen.
    _progress: dict[str, deque[tuple[int, datetime]]] = field(default_factory=dict)

    def add(
        self,
        topic: str,
        offset: int,
        at: datetime,
        item: object | None,
        order: tuple[str, int] | None = None,
    ) -> None:
        """Record that `topic` has reached `at`; hold `item` (None for a bare watermark).

        `order` is the (topic, offset) that places the item among others of the
        same instant (default its own).
        """
        if self._latest is None or at > self._latest:
            self._latest = at
        if topic in self.topics:
            if topic not in self._seen or at > self._seen[topic]:
                self._seen[topic] = at
                if len(self._seen) == len(self.topics):  # every watched topic has been read
                    self._mark = min(self._seen.values())
            progress = self._progress.get(topic)
            if progress is None:
                progress = self._progress[topic] = deque()
            progress.append((offset, self._seen[topic]))
        if item is not None:
            by_topic, by_offset = order or (topic, offset)
            arrival = next(self._arrivals)
            entry = (to_micros(at), by_topic, by_offset, topic, offset, arrival, at, item)
            heapq.heappush(self._pending, entry)
            held = self._held.get(topic)
            if held is None:
                held = self._held[topic] = []
            heapq.heappush(held, offset)

    def watermark(self) -> datetime | None:
        """The time every watched topic has been read past (None until all have been seen)."""
        return self._mark

    def release(self) -> Iterator[tuple[datetime, object]]:
        """Held items before the watermark, in (time, topic, offset) order.

        An item at the watermark itself waits: a topic read up to that instant
        may still have more events of the same instant to come.
        """
        mark = self.watermark()
        if mark is not None:
            yield from self.release_before(mark)

    def latest(self) -> datetime | None:
        """The latest time added, of any topic (None before anything)."""
        return self._latest

    def seen(self, topic: str) -> datetime | None:
        """The latest time read from `topic` (an event or a watermark); None before any."""
        return self._seen.get(topic)

    def release_before(self, mark: datetime | None) -> Iterator[tuple[datetime, object]]:
        """Held items before `mark` (every item when None), in (time, topic, offset) order."""
        pending = self._pending
        limit = None if mark is None else to_micros(mark)
        while pending and (limit is None or pending[0][0] < limit):
            _, _, _, topic, offset, _, at, item = heapq.heappop(pending)
            released = self._released.get(topic)
            if released is None:
                released = self._released[topic] = set()
            released.add(offset)
            yield at, item

    def oldest(self) -> datetime | None:
        """The time of the oldest held item."""
        return self._pending[0][6] if self._pending else None

    def lowest_held(self) -> dict[str, int]:
        """Per topic, the lowest offset of an item still held (topics holding none are absent)."""
        lowest: dict[str, int] = {}
        for topic, held in self._held.items():
            released = self._released.get(topic)
            while held and released and held[0] in released:
                released.discard(heapq.heappop(held))
            if held:
                lowest[topic] = held[0]
        return lowest

    def seen_times(self) -> dict[str, datetime]:
        """Per topic, the latest time read before its lowest held offset, for persisting.

        A restart reads each topic again from its lowest held offset (the loop
        commits no further), so what was read from there on is read again:
        persisting the latest time read overall would let the restarted clock
        run ahead of records it has yet to read again, and find them late.
        """
        lowest = self.lowest_held()
        safe: dict[str, datetime] = {}
        for topic, seen in self._seen.items():
            first_held = lowest.get(topic)
            if first_held is None:
                safe[topic] = seen
                continue
            progress = self._progress.get(topic, deque())
            while len(progress) > 1 and progress[1][0] < first_held:
                progress.popleft()
            if progress and progress[0][0] < first_held:
                safe[topic] = progress[0][1]
        for topic, progress in self._progress.items():
            if topic not in lowest:
                while len(progress) > 1:
                    progress.popleft()
        return safe

    def restore_seen(self, seen: dict[str, datetime]) -> None:
        """Take back the latest times read (persisted before a restart)."""
        for topic, at in seen.items():
            self.add(topic, -1, at, None)

    def __len__(self) -> int:
        return len(self._pending)
