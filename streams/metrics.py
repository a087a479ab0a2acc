"""hitrun's Prometheus metrics, built on an injected registry so tests can read them back."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Generic, TypeVar

from faust.sensors.prometheus import PrometheusMonitor
from faust.types import TP, EventT, Message, StreamT
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from hitrun.streams.loop import PHASES

M = TypeVar("M", Counter, Gauge, Histogram)

OUTCOMES = ("processed", "duplicate", "dead_lettered", "rerouted")

_LATENESS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 1.5, 2, 3, 5, 10, 30, 60, 300)

# An index rebuild takes milliseconds for a few customers, seconds for a million.
_REBUILD_BUCKETS = (0.01, 0.1, 0.5, 1, 2, 5, 10, 30, 60)

# Event lag spans sub-second (live) to months (a historical replay).
_LAG_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 300, 3600, 86400, 30 * 86400)


class Children(Generic[M]):
    """The children of one labelled metric, looked up by label values once and then kept.

    `labels()` checks and converts its arguments and takes a lock on every
    call; the agent counts several labelled samples per event. Only for
    metrics whose children are never removed.
    """

    def __init__(self, metric: M) -> None:
        self._metric: M = metric
        self._children: dict[tuple[str, ...], M] = {}

    def __call__(self, *values: str) -> M:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._metric.labels(*values)
        return child


class Tally:
    """Increments of one labelled counter, kept in a dict until `flush` adds them up.

    A child's `inc` makes five Python calls and takes a lock; the event path
    counts an input event for every message and an alert for about every
    other one. A tally costs one call and a dict update. `Metrics` flushes
    its tallies whenever its registry is read (`TallyFlush`), so what is read
    is always up to date.
    """

    def __init__(self, children: Children[Counter]) -> None:
        self._children = children
        self._counts: dict[tuple[str, ...], int] = {}

    def __call__(self, *values: str) -> None:
        counts = self._counts
        counts[values] = counts.get(values, 0) + 1

    def flush(self) -> None:
        counts, self._counts = self._counts, {}
        for values, count in counts.items():
            self._children(*values).inc(count)


class TallyFlush(Collector):
    """Registered before any metric: the registry collects in registration order, so every
    read of it (the /metrics page, `get_sample_value`) first adds up the tallies."""

    def __init__(self, flush: Callable[[], None]) -> None:
        self._flush = flush

    def collect(self) -> Iterable[Metric]:
        self._flush()
        return ()


class Metrics:
    """The counters and histograms a worker updates while it processes events."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        registry.register(TallyFlush(self.flush_tallies))
        self.input_events = Counter(
            "hitrun_input_events_total",
            "Input messages by topic, event type and outcome.",
            ("topic", "type", "outcome"),
            registry=registry,
        )
        self.dead_letters = Counter(
            "hitrun_dead_letters_total",
            "Messages sent to the dead-letter topic, by reason code.",
            ("reason",),
            registry=registry,
        )
        self.late_events = Counter(
            "hitrun_late_events_total",
            "Events older than their partition's event time by more than the allowed lateness "
            "(dead-lettered as late_event), by input topic.",
            ("topic",),
            registry=registry,
        )
        self.event_lag = Histogram(
            "hitrun_event_lag_seconds",
            "Processing time minus event time of processed input events.",
            buckets=_LAG_BUCKETS,
            registry=registry,
        )

        self.alerts = Counter(
            "hitrun_alerts_total",
            "Alerts published, by alert type.",
            ("type",),
            registry=registry,
        )
        self.recoveries = Counter(
            "hitrun_recoveries_after_reminder_total",
            "Orders paid after at least one reminder.",
            registry=registry,
        )
        self.unmatched_payments = Counter(
            "hitrun_unmatched_payments_total",
            "Payments whose checkout never arrived within the hold period.",
            registry=registry,
        )
        self.open_checkouts = Gauge(
            "hitrun_open_checkouts",
            "Orders awaiting payment in this worker's partitions.",
            registry=registry,
        )
        self.blacklisted = Gauge(
            "hitrun_blacklisted_customers",
            "Customers on at least one blacklist, in this worker's partitions.",
            registry=registry,
        )
        self.customers = Gauge(
            "hitrun_customers_in_state",
            "Customers with stored state in this worker's partitions.",
            registry=registry,
        )
        self.index_rebuild = Histogram(
            "hitrun_index_rebuild_seconds",
            "Seconds spent rebuilding the deadline index after an assignment, scanning the "
            "stored states of the partitions whose index was not kept.",
            buckets=_REBUILD_BUCKETS,
            registry=registry,
        )
        self.index_partitions = Counter(
            "hitrun_index_partitions_total",
            "Partitions indexed after an assignment: `kept` (the index this worker had) "
            "or `scanned` (rebuilt from the stored states).",
            ("how",),
            registry=registry,
        )
        self.timer_lateness = Histogram(
            "hitrun_timer_lateness_seconds",
            "Live mode: wall time a reminder or expiry fired minus the time it was due.",
            buckets=_LATENESS_BUCKETS,
            registry=registry,
        )

        # The labelled counters of the event path, by label values.
        self.input_event = Children(self.input_events)
        self.dead_letter = Children(self.dead_letters)
        self.late_event = Children(self.late_events)
        self.alert = Children(self.alerts)
        # The two counted for (nearly) every message, by tallies.
        self.count_input = Tally(self.input_event)
        self.count_alert = Tally(self.alert)

        self.ready = Gauge(
            "hitrun_ready",
            "1 when the worker has partitions assigned and tables recovered, else 0.",
            registry=registry,
        )
        self.processing_errors = Counter(
            "hitrun_processing_errors_total",
            "Exceptions raised while applying one message (dead-lettered as processing_error), "
            "one customer's timers, or decoding a stored state at an index rebuild.",
            ("stage", "exception"),
            registry=registry,
        )
        self.processing_error = Children(self.processing_errors)
        self.wall_clock_offset = Gauge(
            "hitrun_wall_clock_offset_seconds",
            "How far the worker's system clock is ahead of the broker's (behind: negative); "
            "the worker runs on the broker's (NaN until it has read it).",
            registry=registry,
        )
        self.held_events = Gauge(
            "hitrun_held_events",
            "Events read but held until the partition's other input topics have passed their "
            "time (replay: by watermarks; live: or been read to their end); not committed yet.",
            registry=registry,
        )
        self.forced_releases = Counter(
            "hitrun_held_events_forced_total",
            "Live mode: times a partition held HITRUN_MAX_HELD_EVENTS events and applied its "
            "oldest without waiting for a lagging input topic.",
            registry=registry,
        )
        self.progress_marks = Counter(
            "hitrun_progress_marks_total",
            "Progress marks written and read, by topic: on the reroute topic (live: how far "
            "each partition's input is read), on the identity topics (how far each "
            "partition has sent its sightings and link reports; docs/detection.md).",
            ("topic", "direction"),
            registry=registry,
        )
        self.progress_waived = Counter(
            "hitrun_progress_waits_abandoned_total",
            "Live mode: times a partition stopped waiting for another partition whose "
            "progress marks had stopped for HITRUN_PROGRESS_TIMEOUT while others' arrived.",
            registry=registry,
        )
        self.loop_seconds = Counter(
            "hitrun_loop_seconds_total",
            "Seconds the consume loop spent, by phase: fetch (waiting for records, idle time "
            "included), apply (hitrun's own work on them: detectors, timers, alert and state "
            "records), publish (sending the batch's records and waiting for the broker), store "
            "(writing the batch's states to the local store), commit (committing offsets).",
            ("phase",),
            registry=registry,
        )
        self.loop_phase = Children(self.loop_seconds)
        self.fenced_batches = Counter(
            "hitrun_fenced_batches_total",
            "Batches dropped unpublished because the group coordinator no longer counted "
            "this worker a member (it stalled past its session timeout, or lost the "
            "coordinator): their state records were not written; the partitions' new owner "
            "applies their input.",
            registry=registry,
        )
        self.overwritten_states = Counter(
            "hitrun_overwritten_states_total",
            "Keys whose state records another writer (a worker the group had removed, whose "
            "records were on their way when it stalled) put after this worker's: this worker "
            "wrote its stored value over each.",
            registry=registry,
        )
        self.stale_states_skipped = Counter(
            "hitrun_stale_state_records_skipped_total",
            "State records read from the changelog (a recovery, a standby) and not applied: "
            "their writer token is below one read before them, so a worker the group had "
            "removed wrote them after its successor had begun (streams/fencing.py).",
            registry=registry,
        )
        self.consumer_lag = Gauge(
            "hitrun_consumer_lag_messages",
            "End offset minus committed offset, per input topic partition this worker owns.",
            ("topic", "partition"),
            registry=registry,
        )

    def start_at_zero(
        self,
        input_types: Mapping[str, Iterable[str]],
        reasons: Iterable[str],
        alert_types: Iterable[str],
        mark_topics: Iterable[str] = (),
    ) -> None:
        """Create every labelled series a rule or panel reads, at 0, before the first event.

        A series that does not exist yet is not 0 to Prometheus: a rate over
        it is empty, and a rule or panel reading it stays silent ("No data").
        """
        for topic, types in input_types.items():
            for event_type in (*types, "unknown"):
                for outcome in OUTCOMES:
                    self.input_event(topic, event_type, outcome)
            self.late_event(topic)
        for reason in reasons:
            self.dead_letter(reason)
        for alert_type in alert_types:
            self.alert(alert_type)
        for topic in mark_topics:
            for direction in ("written", "read"):
                self.progress_marks.labels(topic, direction)
        for phase in PHASES:
            self.loop_phase(phase)

    def flush_tallies(self) -> None:
        """Add the tallies' counts to their counters (done by every read of the registry)."""
        self.count_input.flush()
        self.count_alert.flush()

    def value(self, name: str, **labels: str) -> float:
        """Current value of a sample (0 when it was never set); for tests and the demo."""
        found = self.registry.get_sample_value(name, labels)
        return 0.0 if found is None else found


class EventlessPrometheusMonitor(PrometheusMonitor):
    """Faust's Prometheus sensor without its four per-message and per-event hooks.

    The end-offset gauge is set only when a partition's high watermark moves.

    hitrun counts every input message itself (`hitrun_input_events_total`, by
    topic, type and outcome); Faust's hooks counted the same messages again,
    four calls per event, and took about a tenth of a busy worker's CPU
    (docs/performance.md). Faust's other sensor metrics (commits, assignments,
    rebalances, topic buffers, ...) are kept; the families of the per-event hooks
    are not exported (FaustSensorCollector).
    """

    def on_message_in(self, tp: TP, offset: int, message: Message) -> None:
        return None

    def on_stream_event_in(
        self, tp: TP, offset: int, stream: StreamT, event: EventT
    ) -> dict[str, Any] | None:
        return None

    def on_stream_event_out(
        self,
        tp: TP,
        offset: int,
        stream: StreamT,
        event: EventT,
        state: dict[str, Any] | None = None,
    ) -> None:
        return None

    def on_message_out(self, tp: TP, offset: int, message: Message) -> None:
        return None

    def track_tp_end_offset(self, tp: TP, offset: int) -> None:
        # Faust calls this for every fetched message, with its partition's high
        # watermark, which only changes between fetches: set the gauge on a change.
        if self.tp_end_offsets.get(tp) != offset:
            super().track_tp_end_offset(tp, offset)


# Faust's per-message and per-event families: the hooks that fed them are off
# (EventlessPrometheusMonitor), and hitrun_input_events_total counts the same
# messages, so they would only ever read 0. Table operations go through
# hitrun's own state cache, not Faust's table API. None of them is exported.
_NEVER_COUNTED = (
    "_messages_received",
    "_messages_received_per_topic",
    "_messages_received_per_topics_partition",
    "_active_messages",
    "_total_events",
    "_total_active_events",
    "_total_events_per_stream",
    "_events_runtime_ms",
    "_table_operations",
)


class FaustSensorCollector:
    """Faust's sensor metrics that count something in hitrun (commits, assignments, rebalances,
    sends, HTTP, offsets), without the families whose hooks hitrun turns off."""

    def __init__(self, source: CollectorRegistry) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        for family in self.source.collect():
            if not family.name.endswith(_NEVER_COUNTED):
                yield family
