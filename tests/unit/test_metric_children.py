"""Kept metric children; Faust's sensor without per-event hooks; every series starts at 0."""

from __future__ import annotations

from faust.sensors.prometheus import FaustMetrics
from faust.types import TP
from prometheus_client import CollectorRegistry, Counter, generate_latest

from hitrun.schemas.records import INPUT_EVENTS
from hitrun.schemas.registry import ALERT_TYPES, SCHEMA_DIR
from hitrun.streams.config import Settings
from hitrun.streams.errors import REASONS
from hitrun.streams.metrics import (
    Children,
    EventlessPrometheusMonitor,
    FaustSensorCollector,
    Metrics,
)


def test_a_kept_child_is_the_labelled_child_and_counts_into_the_registry() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.alert("order_expired").inc()
    metrics.alert("order_expired").inc(2)
    assert metrics.alert("order_expired") is metrics.alerts.labels("order_expired")
    assert registry.get_sample_value("hitrun_alerts_total", {"type": "order_expired"}) == 3


def test_a_tally_is_counted_in_every_read_of_the_registry_and_only_once() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    for _ in range(3):
        metrics.count_input("shop.payments", "payment_attempted", "processed")
    metrics.count_alert("order_expired")
    labels = {"topic": "shop.payments", "type": "payment_attempted", "outcome": "processed"}
    assert registry.get_sample_value("hitrun_input_events_total", labels) == 3
    assert registry.get_sample_value("hitrun_alerts_total", {"type": "order_expired"}) == 1
    # Read again, and counted again after the read: each count is added once.
    metrics.count_input("shop.payments", "payment_attempted", "processed")
    assert metrics.value("hitrun_input_events_total", **labels) == 4
    assert b'hitrun_alerts_total{type="order_expired"} 1.0' in generate_latest(registry)


def test_children_are_looked_up_once_per_label_values() -> None:
    counter = Counter("x_total", "x", ["a", "b"], registry=CollectorRegistry())
    children = Children(counter)
    assert children("1", "2") is children("1", "2")
    assert children("1", "2") is not children("1", "3")


def test_the_faust_sensor_skips_per_event_hooks_and_keeps_the_others() -> None:
    registry = CollectorRegistry()
    monitor = EventlessPrometheusMonitor(metrics=FaustMetrics.create(registry, "t"))
    tp = TP("shop.checkouts", 3)
    monitor.on_message_in(tp, 7, None)  # type: ignore[arg-type]
    assert monitor.on_stream_event_in(tp, 7, None, None) is None  # type: ignore[arg-type]
    monitor.on_stream_event_out(tp, 7, None, None, None)  # type: ignore[arg-type]
    monitor.on_message_out(tp, 7, None)  # type: ignore[arg-type]
    assert registry.get_sample_value("t_messages_received_total") == 0
    monitor.on_tp_commit({tp: 8})
    committed = {"topic": "shop.checkouts", "partition": "3"}
    assert registry.get_sample_value("t_topic_partition_offset_commited", committed) == 8


def test_the_end_offset_gauge_is_set_when_the_high_watermark_moves() -> None:
    registry = CollectorRegistry()
    monitor = EventlessPrometheusMonitor(metrics=FaustMetrics.create(registry, "t"))
    gauge = monitor._metrics.topic_partition_end_offset
    looked_up: list[dict[str, object]] = []
    labels = gauge.labels

    def counting(**names: object) -> object:
        looked_up.append(names)
        return labels(**names)

    gauge.labels = counting  # type: ignore[method-assign]
    tp = TP("shop.checkouts", 3)
    for offset in (10, 10, 10, 12, 12):
        monitor.track_tp_end_offset(tp, offset)
    other = TP("shop.checkouts", 4)
    monitor.track_tp_end_offset(other, 12)
    assert len(looked_up) == 3
    assert monitor.tp_end_offsets == {tp: 12, other: 12}
    where = {"topic": "shop.checkouts", "partition": "3"}
    assert registry.get_sample_value("t_topic_partition_end_offset", where) == 12


def test_faust_families_that_never_count_are_not_exported() -> None:
    source = CollectorRegistry()
    EventlessPrometheusMonitor(metrics=FaustMetrics.create(source, "hitrun_faust"))
    exported = {family.name for family in FaustSensorCollector(source).collect()}
    assert "hitrun_faust_messages_received" not in exported
    assert "hitrun_faust_total_events" not in exported
    assert "hitrun_faust_events_runtime_ms" not in exported
    assert "hitrun_faust_total_rebalances" in exported
    assert "hitrun_faust_topic_partition_offset_commited" in exported


def test_every_series_a_rule_or_panel_reads_exists_at_zero_from_the_start() -> None:
    settings = Settings.from_env({})
    registry = CollectorRegistry()
    marked = (settings.reroute_topic, settings.identity_topic, settings.links_topic)
    Metrics(registry).start_at_zero(settings.input_topics, REASONS, ALERT_TYPES, marked)
    for topic in marked:
        for direction in ("written", "read"):
            labels = {"topic": topic, "direction": direction}
            assert registry.get_sample_value("hitrun_progress_marks_total", labels) == 0
    for reason in REASONS:
        assert registry.get_sample_value("hitrun_dead_letters_total", {"reason": reason}) == 0
    for phase in ("fetch", "apply", "publish", "store", "commit"):
        assert registry.get_sample_value("hitrun_loop_seconds_total", {"phase": phase}) == 0
    for topic in settings.input_topics:
        assert registry.get_sample_value("hitrun_late_events_total", {"topic": topic}) == 0
        for outcome in ("processed", "dead_lettered", "rerouted", "duplicate"):
            labels = {"topic": topic, "type": "unknown", "outcome": outcome}
            assert registry.get_sample_value("hitrun_input_events_total", labels) == 0
    for alert_type in ("order_expired", "customer_blacklisted", "single_purchase"):
        assert registry.get_sample_value("hitrun_alerts_total", {"type": alert_type}) == 0


def test_alert_types_are_every_alert_the_agent_can_publish() -> None:
    published = (
        {path.stem.split(".")[0] for path in SCHEMA_DIR.glob("*.schema.json")}
        - {"common", "dead_letter", "blacklist_status", "watermark"}
        - set(INPUT_EVENTS)
    )
    assert set(ALERT_TYPES) == published
