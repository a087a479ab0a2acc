"""The Faust app: settings, topics and the metrics registry that every worker shares."""

from __future__ import annotations

from pathlib import Path

import faust
from faust import web
from faust.sensors.prometheus import FaustMetrics
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from hitrun.schemas.registry import ALERT_TYPES
from hitrun.streams.config import Settings
from hitrun.streams.errors import REASONS
from hitrun.streams.faust_bridge import PromptTableManager, PromptWorker
from hitrun.streams.ingest import REROUTABLE_TYPES as INGEST_REROUTABLE
from hitrun.streams.ingest import IngestRules
from hitrun.streams.kafka_auth import bootstrap_servers, faust_credentials
from hitrun.streams.logs import logging_config, quiet_repeats
from hitrun.streams.metrics import EventlessPrometheusMonitor, FaustSensorCollector, Metrics

settings = Settings.from_env()

app = faust.App(
    settings.app_id,
    broker=[f"kafka://{server}" for server in bootstrap_servers(settings)],
    broker_credentials=faust_credentials(settings),
    # Input stays bytes until hitrun's own codec decodes it, so that a bad
    # message reaches the dead-letter topic intact instead of crashing Faust's.
    key_serializer="raw",
    value_serializer="raw",
    topic_partitions=settings.partitions,
    topic_replication_factor=settings.replication_factor,
    processing_guarantee=settings.processing_guarantee,
    broker_commit_interval=settings.commit_interval.total_seconds(),
    broker_session_timeout=settings.session_timeout.total_seconds(),
    # A member learns of a rebalance from its next heartbeat, and the group waits
    # for every member: the interval bounds the stall when a worker joins or leaves.
    broker_heartbeat_interval=min(0.25, settings.session_timeout.total_seconds() / 4),
    consumer_auto_offset_reset="earliest",
    # Partitions added to a topic reach the group with a metadata refresh; the loop then
    # stops the worker rather than apply a split assignment (streams/loop.py,
    # `_check_layout`).
    # aiokafka's default is five minutes.
    consumer_metadata_max_age_ms=30_000,
    # One fetch is one batch of hitrun's loop (streams/loop.py).
    broker_max_poll_records=settings.batch_size,
    consumer_max_fetch_size=settings.fetch_max_bytes,
    # The store is kept per app id, as its changelog topic is: workers of another
    # group never open databases whose applied offsets belong to another changelog.
    datadir=str(Path(settings.data_dir) / settings.app_id),
    store=settings.store,
    web_host=settings.web_host,
    web_bind=settings.web_host,
    web_port=settings.web_port,
    autodiscover=False,
    TableManager=PromptTableManager,
    Worker=PromptWorker,
    logging_config=logging_config(settings.log_json, settings.log_level),
)

# While the broker is away, aiokafka retries without pause and logs every attempt.
quiet_repeats("aiokafka", interval_s=10.0)

registry = CollectorRegistry()
metrics = Metrics(registry)
metrics.start_at_zero(
    {
        **settings.input_topics,
        settings.reroute_topic: INGEST_REROUTABLE,
        settings.identity_topic: ("identifier_sighting",),
        settings.links_topic: ("shared", "dropped", "forgotten"),
    },
    REASONS,
    ALERT_TYPES,
    (settings.reroute_topic, settings.identity_topic, settings.links_topic),
)
# Faust's own sensor metrics (less its per-event ones, which hitrun counts
# itself) are served on hitrun's /metrics page too, through a collector that
# renames its one millisecond histogram to seconds.
_faust_registry = CollectorRegistry()
app.monitor = EventlessPrometheusMonitor(
    metrics=FaustMetrics.create(_faust_registry, "hitrun_faust")
)
registry.register(FaustSensorCollector(_faust_registry))


@app.page("/metrics")
async def metrics_page(self: web.View, request: web.Request) -> web.Response:
    """Prometheus text format: hitrun's metrics and Faust's sensor metrics."""
    return self.bytes(generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


def _raw_topic(*names: str) -> faust.TopicT:
    return app.topic(
        *names,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.partitions,
        internal=False,
    )


input_topic = _raw_topic(
    *settings.input_topics, settings.reroute_topic, settings.identity_topic, settings.links_topic
)
reroute_topic = _raw_topic(settings.reroute_topic)
dead_letter_topic = _raw_topic(settings.topic_dead_letters)
output_topics = {role: _raw_topic(name) for role, name in settings.output_topics.items()}
status_topic = _raw_topic(settings.topic_blacklist_status)
admin_topic = _raw_topic(settings.topic_admin)

ingest_rules = IngestRules(
    accepted_types=settings.input_topics,
    reroute_topic=settings.reroute_topic,
    partitions=settings.partitions,
    max_message_bytes=settings.max_message_bytes,
    watermark_key=None if settings.watermark_key is None else settings.watermark_key.encode(),
    admin_key=None if settings.admin_key is None else settings.admin_key.encode(),
    admin_ttl=settings.admin_command_ttl,
)
