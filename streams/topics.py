"""hitrun's topics: explicit names, partition counts and configs, created by hitrun itself."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaConnectionError, KafkaError

from hitrun.streams.config import Settings
from hitrun.streams.kafka_auth import BrokerUnreachable, bootstrap_servers, client_options, started

log = logging.getLogger(__name__)

_TOPIC_ALREADY_EXISTS = 36
_DAY_MS = 86_400_000
# Configs hitrun sets on its topics that exist already (an upgrade): others (retention)
# are the operator's to tune.
ENFORCED_CONFIGS = frozenset({"message.timestamp.type"})
# DescribeConfigs: a config set on the topic itself.
_DYNAMIC_TOPIC_CONFIG = 1


@dataclass(frozen=True)
class TopicSpec:
    """A topic hitrun needs, with the partition count it must have."""

    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)
    # Topics read by the customer agent must share one partition count, so
    # that a customer's events and state meet in the same partition number.
    co_partitioned: bool = True


class TopicLayoutError(RuntimeError):
    """An existing topic has a layout hitrun cannot work with."""


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """Every topic the worker reads or writes."""
    n = settings.partitions
    specs = [TopicSpec(name, n) for name in settings.input_topics]
    # Stamped by the broker's clock: the workers read its time from their writes to it
    # (streams/brokertime.py).
    specs.append(
        TopicSpec(
            settings.reroute_topic,
            n,
            {"retention.ms": str(7 * _DAY_MS), "message.timestamp.type": "LogAppendTime"},
        )
    )
    # The identity stage's input and output: each stage's state is in the table.
    specs.append(TopicSpec(settings.identity_topic, n, {"retention.ms": str(7 * _DAY_MS)}))
    specs.append(TopicSpec(settings.links_topic, n, {"retention.ms": str(7 * _DAY_MS)}))
    # Faust's own topics, created here too (Faust would create them as it starts, after
    # its consumer had asked for its metadata): a group whose members' metadata lacks
    # the changelog assigns no partition of it, and a worker taking partitions over
    # then recovers none of their states.
    specs.append(TopicSpec(settings.changelog_topic, n, {"cleanup.policy": "compact"}))
    specs.append(TopicSpec(settings.leader_topic, 1, co_partitioned=False))
    specs.extend(
        TopicSpec(name, n, {"retention.ms": str(30 * _DAY_MS)}, co_partitioned=False)
        for name in settings.output_topics.values()
    )
    specs.append(
        TopicSpec(
            settings.topic_blacklist_status,
            n,
            # Compacted: the latest record per customer is their status; a tombstone clears it.
            {"cleanup.policy": "compact", "min.compaction.lag.ms": "0", "segment.ms": "600000"},
            co_partitioned=False,
        )
    )
    specs.append(
        TopicSpec(
            settings.topic_dead_letters,
            n,
            # Dead letters keep the original bytes, personal data included.
            {"retention.ms": str(int(settings.dead_letter_retention.total_seconds() * 1000))},
            co_partitioned=False,
        )
    )
    specs.append(
        TopicSpec(
            settings.topic_erasures,
            n,
            # The record that each erasure was done: ids and who asked, nothing personal.
            {"retention.ms": str(365 * _DAY_MS)},
            co_partitioned=False,
        )
    )
    return specs


async def ensure_topics(
    settings: Settings,
    say: Callable[[str], None] | None = None,
    only: Collection[str] | None = None,
    *,
    wait_forever: bool = False,
) -> list[str]:
    """Create the missing topics and check the partition counts of existing ones.

    `only` limits the work to the named topics (a client that writes only
    those may have no right to create or describe the others). Waits for the
    broker up to HITRUN_CONNECT_TIMEOUT (`wait_forever`: as long as it
    takes, as a worker does), telling `say` about each failed attempt. Returns the
    names created. Raises `TopicLayoutError` when a co-partitioned topic exists
    with another partition count, since per-customer state would then be split
    across workers.
    """
    specs = [s for s in topic_specs(settings) if only is None or s.name in only]
    within = None if wait_forever else settings.connect_timeout_s
    admin = await _start_with_retry(settings, within, say)
    try:
        created = await _create_missing(admin, specs, settings.replication_factor)
        if created:
            await _wait_for_leaders(admin, created, within or 60.0)
        await _check_partition_counts(admin, specs)
        await _enforce_configs(admin, [s for s in specs if s.name not in created])
        return created
    finally:
        await admin.close()


async def _start_with_retry(
    settings: Settings, within_s: float | None, say: Callable[[str], None] | None
) -> AIOKafkaAdminClient:
    servers = bootstrap_servers(settings)
    loop = asyncio.get_running_loop()
    began = loop.time()
    deadline = None if within_s is None else began + within_s
    delay, attempt = 0.5, 0
    while True:
        attempt += 1
        admin = AIOKafkaAdminClient(**client_options(settings))
        try:
            await admin.start()
            return admin
        except KafkaConnectionError as exc:
            await admin.close()
            if deadline is not None and loop.time() + delay > deadline:
                raise BrokerUnreachable(servers, loop.time() - began, exc) from None
            if say is not None:
                say(
                    f"broker {','.join(servers)} unreachable (attempt {attempt}: {exc}); "
                    f"retrying in {delay:.1f}s"
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


async def _create_missing(
    admin: AIOKafkaAdminClient, specs: list[TopicSpec], replication: int
) -> list[str]:
    existing = set(await admin.list_topics())
    missing = [s for s in specs if s.name not in existing]
    if not missing:
        return []
    response = await admin.create_topics(
        [NewTopic(s.name, s.partitions, replication, topic_configs=s.config) for s in missing]
    )
    for topic, code, *message in _topic_errors(response):
        if code not in (0, _TOPIC_ALREADY_EXISTS):
            raise TopicLayoutError(f"cannot create topic {topic}: error {code} {message}")
    return [s.name for s in missing]


def _topic_errors(response: Any) -> list[tuple[Any, ...]]:
    return [tuple(entry) for entry in response.topic_errors]


async def _enforce_configs(admin: AIOKafkaAdminClient, specs: list[TopicSpec]) -> None:
    """Set ENFORCED_CONFIGS on existing topics that differ (created by an older version).

    AlterConfigs replaces a topic's whole set of configs, so the ones set on the
    topic are sent again with it. A principal without the right to alter topic
    configs gets a warning; the worker says what it then lacks.
    """
    wanted = {s.name: {k: v for k, v in s.config.items() if k in ENFORCED_CONFIGS} for s in specs}
    wanted = {name: configs for name, configs in wanted.items() if configs}
    if not wanted:
        return
    try:
        described = await _configs_of(admin, wanted)
        changes = [
            ConfigResource(ConfigResourceType.TOPIC, name, _set_on(present) | wanted[name])
            for name, present in described.items()
            if not _has(present, wanted[name])
        ]
        if not changes:
            return
        for response in await admin.alter_configs(changes):
            for error, message, _, name in response.resources:
                if error:
                    raise KafkaError(f"altering the configs of {name}: error {error} {message}")
        for change in changes:
            log.info("topic %s: set %s", change.name, wanted[change.name])
        await _wait_for_configs(admin, {c.name: wanted[c.name] for c in changes})
    except KafkaError as exc:
        log.warning("could not set %s on existing topics: %r", sorted(wanted), exc)


async def _configs_of(
    admin: AIOKafkaAdminClient, names: Collection[str]
) -> dict[str, dict[str, tuple[str, int]]]:
    """Per topic the broker describes (others left out), each config's value and source."""
    (described,) = await admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, name) for name in names]
    )
    return {
        name: {entry[0]: (entry[1], entry[3]) for entry in entries}
        for error, _, _, name, entries in described.resources
        if not error
    }


def _set_on(present: Mapping[str, tuple[str, int]]) -> dict[str, str]:
    """The configs set on the topic itself (not defaults of the broker's)."""
    return {k: value for k, (value, source) in present.items() if source == _DYNAMIC_TOPIC_CONFIG}


def _has(present: Mapping[str, tuple[str, int]], wanted: Mapping[str, str]) -> bool:
    return all(present.get(k, ("", 0))[0] == v for k, v in wanted.items())


async def _wait_for_configs(
    admin: AIOKafkaAdminClient, wanted: Mapping[str, Mapping[str, str]], within_s: float = 10.0
) -> None:
    """Until the broker describes each topic with the configs just set (applied through the
    controller, they reach the broker a moment later)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while loop.time() < deadline:
        described = await _configs_of(admin, wanted)
        if all(_has(described.get(name, {}), configs) for name, configs in wanted.items()):
            return
        await asyncio.sleep(0.1)
    log.warning("topics %s do not show their new configs after %.0fs", sorted(wanted), within_s)


async def _wait_for_leaders(admin: AIOKafkaAdminClient, names: list[str], within_s: float) -> None:
    # A new topic answers produce requests with NOT_LEADER until its partitions
    # have leaders; waiting here spares every producer that first burst of retries.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while loop.time() < deadline:
        described = await admin.describe_topics(names)
        if all(p["leader"] >= 0 for t in described for p in t["partitions"]) and all(
            t["partitions"] for t in described
        ):
            return
        await asyncio.sleep(0.1)
    raise TopicLayoutError(f"topics {names} have no leaders after {within_s}s")


async def _check_partition_counts(admin: AIOKafkaAdminClient, specs: list[TopicSpec]) -> None:
    described = await admin.describe_topics([s.name for s in specs])
    counts = {t["topic"]: len(t["partitions"]) for t in described}
    for spec in specs:
        if spec.co_partitioned and counts.get(spec.name) != spec.partitions:
            raise TopicLayoutError(
                f"topic {spec.name} has {counts.get(spec.name)} partitions, "
                f"HITRUN_PARTITIONS says {spec.partitions}; co-partitioned topics must match"
            )


class TopicMissing(TopicLayoutError):
    """A topic a tool reads does not exist (or this principal may not see it)."""


async def require_topics(consumer: AIOKafkaConsumer, names: Collection[str]) -> None:
    """Raise TopicMissing naming every topic in `names` the cluster does not show."""
    await consumer._client.force_metadata_update()  # aiokafka: no public refresh
    missing = sorted(n for n in names if consumer.partitions_for_topic(n) is None)
    if missing:
        raise TopicMissing(
            f"no topic {', '.join(missing)} on the cluster (or no right to describe it): "
            "start a worker or run `hitrun topics` first, and check HITRUN_APP_ID and "
            "HITRUN_TOPIC_*"
        )


async def committed_reader(settings: Settings) -> AIOKafkaConsumer:
    """A started consumer of committed records, with no group and no commits."""
    return await started(
        lambda: AIOKafkaConsumer(
            **client_options(settings),
            isolation_level="read_committed",
            enable_auto_commit=False,
        ),
        settings,
    )


async def assigned_consumer(
    settings: Settings, topics: Collection[str], *, from_beginning: bool
) -> AIOKafkaConsumer:
    """A read-committed consumer of its own (no group) assigned every partition of
    `topics`, at their beginning or their end; the caller stops it."""
    consumer = await committed_reader(settings)
    try:
        await require_topics(consumer, set(topics))
        tps = [
            TopicPartition(t, p)
            for t in topics
            for p in sorted(consumer.partitions_for_topic(t) or range(settings.partitions))
        ]
        consumer.assign(tps)
        if from_beginning:
            await consumer.seek_to_beginning(*tps)
        else:
            await consumer.seek_to_end(*tps)
    except BaseException:
        await consumer.stop()
        raise
    return consumer


async def read_from(
    settings: Settings, since: Mapping[TopicPartition, int]
) -> AsyncIterator[tuple[TopicPartition, ConsumerRecord[bytes, bytes]]]:
    """Every record of the partitions in `since`, from those offsets to the ends the
    partitions have when reading starts, in offset order per partition (read committed)."""
    consumer = await committed_reader(settings)
    try:
        await require_topics(consumer, {tp.topic for tp in since})
        ends = await consumer.end_offsets(list(since))
        todo = [tp for tp in since if ends[tp] > since[tp]]
        if not todo:
            return
        consumer.assign(todo)
        for tp in todo:
            consumer.seek(tp, since[tp])
        while todo:
            batch = await consumer.getmany(*todo, timeout_ms=1000)
            for tp, records in batch.items():
                for record in records:
                    if record.offset < ends[tp]:
                        yield tp, record
            todo = [tp for tp in todo if await consumer.position(tp) < ends[tp]]
    finally:
        await consumer.stop()


async def delete_topics_of(settings: Settings, prefix: str, settle_s: float = 10.0) -> list[str]:
    """Delete every topic whose name starts with `prefix` (a run's own topics); returns them.

    The broker deletes in the background, and lists a deleted topic for a moment
    after: this returns once none is listed any more (or after `settle_s`).
    """
    admin = await started(lambda: AIOKafkaAdminClient(**client_options(settings)), settings)
    try:
        names = sorted(name for name in await admin.list_topics() if name.startswith(prefix))
        if names:
            await admin.delete_topics(names)
        for _ in range(round(settle_s / 0.2)):  # looked at every 0.2 s
            if not set(names) & set(await admin.list_topics()):
                break
            await asyncio.sleep(0.2)
        return names
    finally:
        await admin.close()
