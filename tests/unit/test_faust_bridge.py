"""The Faust internals streams/faust_bridge.py relies on are still there and still behave so.

A faust-streaming upgrade that renames, removes or reorders any of them makes
one of these fail, instead of silently losing or skipping input records.
"""

from __future__ import annotations

import asyncio
import inspect
from importlib.metadata import version
from types import SimpleNamespace
from typing import Any

import aiokafka
import faust
import pytest
from faust.tables.manager import TableManager
from faust.tables.recovery import Recovery
from faust.transport.consumer import Consumer as BaseConsumer
from faust.transport.consumer import Fetcher
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.worker import Worker as FaustWorker
from mode.utils.queues import ThrowableQueue

from hitrun.streams import faust_bridge


def _faust_version() -> tuple[int, ...]:
    return tuple(int(part) for part in version("faust-streaming").split(".")[:3])


def test_the_installed_faust_is_a_release_the_bridge_was_written_against() -> None:
    low, high = faust_bridge.SUPPORTED_FAUST
    assert low <= _faust_version() <= high


def test_the_consumer_methods_the_loop_calls_keep_their_signatures() -> None:
    consumer = faust_aiokafka.Consumer
    assert list(inspect.signature(consumer._drain_messages).parameters) == ["self", "fetcher"]
    assert inspect.iscoroutinefunction(consumer._wait_next_records)
    assert list(inspect.signature(consumer._wait_next_records).parameters) == ["self", "timeout"]
    assert list(inspect.signature(consumer._to_message).parameters) == ["self", "tp", "record"]
    thread = faust_aiokafka.AIOKafkaConsumerThread
    assert inspect.iscoroutinefunction(thread.call_thread)
    assert callable(thread._ensure_consumer)


def test_the_fetcher_runs_the_consumers_drain_coroutine() -> None:
    # faust.transport.consumer.Fetcher._fetcher awaits consumer._drain_messages(self).
    source = inspect.getsource(Fetcher)
    assert "_drain_messages(self)" in source


def test_revocation_stops_the_flow_before_it_signals_hitrun() -> None:
    # The loop drops a batch fetched before a revocation by seeing the flow
    # stopped or its epoch moved; the signal (our handler) comes after both.
    source = inspect.getsource(faust.App._on_partitions_revoked)
    assert source.index("stop_flow") < source.index("on_partitions_revoked.send")
    assert source.index("pause_partitions") < source.index("on_partitions_revoked.send")


def test_resuming_after_recovery_seeks_every_partition_to_its_committed_offset() -> None:
    # After a rebalance the loop starts again from the committed offsets: Faust
    # seeks there when recovery resumes the streams, and records start_offset.
    recovery = inspect.getsource(Recovery._resume_streams)
    assert "perform_seek" in recovery
    seek = inspect.getsource(BaseConsumer.perform_seek)
    assert "self._read_offset" in seek and "seek_to_committed" in seek


def test_install_makes_the_app_create_a_consumer_that_hands_batches_to_the_runner() -> None:
    app = faust.App("bridge-test", broker="kafka://127.0.0.1:1", autodiscover=False)
    seen: list[Any] = []

    class Runner:
        async def run(self, source: faust_bridge.FaustSource) -> None:
            seen.append(source)

    previous = faust_bridge.HitrunConsumer.runner
    total = faust_bridge.HitrunConsumerThread.fetch_total_bytes
    try:
        faust_bridge.install(app, Runner(), fetch_total_bytes=5 << 20)
        assert faust_bridge.HitrunConsumerThread.fetch_total_bytes == 5 << 20
        # Transport.create_consumer instantiates transport.Consumer.
        assert app.transport.Consumer is faust_bridge.HitrunConsumer
        assert "self.Consumer(" in inspect.getsource(type(app.transport).create_consumer)
        # The consumer's drain (run by the Fetcher) goes to the runner, not to the conductor.
        consumer = object.__new__(faust_bridge.HitrunConsumer)
        consumer.__dict__["app"] = app
        asyncio.run(consumer._drain_messages(object()))
        assert len(seen) == 1 and isinstance(seen[0], faust_bridge.FaustSource)
    finally:
        faust_bridge.HitrunConsumer.runner = previous
        faust_bridge.HitrunConsumerThread.fetch_total_bytes = total


def test_the_consumer_state_faustsource_reads_is_set_up_by_faust() -> None:
    assert "self._read_offset = defaultdict" in inspect.getsource(BaseConsumer)
    assert "self.flow_active = False" in inspect.getsource(BaseConsumer.stop_flow)
    assert "tp_last_committed_at" in inspect.getsource(
        faust_aiokafka.AIOKafkaConsumerThread.__post_init__
    )


def test_install_refuses_an_app_whose_consumer_already_exists() -> None:
    app = faust.App("bridge-test-2", broker="kafka://127.0.0.1:1", autodiscover=False)
    app._consumer = object()  # as if the worker had started
    try:
        faust_bridge.install(app, object())  # type: ignore[arg-type]
    except RuntimeError as exc:
        assert "before it starts" in str(exc)
    else:
        raise AssertionError("install accepted an app whose consumer exists")


def test_a_recovery_clears_the_changelog_queue_after_resuming_its_standby_partitions() -> None:
    # What ChangelogGuard mends: the last resume of a recovery (which clears the
    # changelog queue) comes after the standby partitions were resumed and the
    # broker awaited, so standby records fetched meanwhile were dropped.
    restart = inspect.getsource(Recovery._restart_recovery.fun)  # a Service task
    assert restart.index("resume_partitions)(standby_tps)") < restart.index("on_recovery_completed")
    completed = inspect.getsource(Recovery.on_recovery_completed)
    assert "await" in completed[: completed.index("flow_control.resume()")]
    assert "clear_on_resume=True" in inspect.getsource(TableManager.changelog_queue.fget)


def test_the_recovery_skips_records_at_or_before_the_last_it_took_of_a_standby() -> None:
    slurp = inspect.getsource(Recovery._slurp_changelogs.fun)
    assert "seen_offset is None or offset > seen_offset" in slurp
    assert "offsets = standby_offsets" in slurp
    assert "buf = buffers[table]" in slurp


def test_the_guard_sits_on_a_real_apps_changelog_queue_and_recovery() -> None:
    app = faust.App("bridge-test-3", broker="kafka://127.0.0.1:1", autodiscover=False)
    queue = app.tables.changelog_queue  # type: ignore[attr-defined]
    assert isinstance(queue, ThrowableQueue)  # its clear cancels puts waiting for room
    guard = faust_bridge.ChangelogGuard.of(app)
    assert faust_bridge.ChangelogGuard.of(app) is guard
    recovery = app.tables.recovery  # type: ignore[attr-defined]
    assert guard.recovery is recovery
    assert (recovery.standby_tps, dict(recovery.standby_offsets), dict(recovery.buffers)) == (
        set(),
        {},
        {},
    )
    clears = guard.clears
    app.flow_control.resume()  # clears the queues it manages: the guard hears of it
    assert guard.clears == clears + 1


def test_tables_count_as_recovered_only_between_a_recovery_and_the_next_rebalance() -> None:
    # Faust never clears its recovery's `completed`: alone, it said "recovered" during
    # every recovery after the first, and the loop's progress marks then rebuilt the
    # deadline index from a store still being recovered.
    app = faust.App("bridge-test-4", broker="kafka://127.0.0.1:1", autodiscover=False)
    consumer = object.__new__(faust_bridge.HitrunConsumer)
    consumer.__dict__["app"] = app
    source = faust_bridge.FaustSource(consumer, object())
    tables: Any = app.tables
    assert not source.recovered()
    tables.recovery.completed.set()
    tables.on_actives_ready()  # the end of a recovery
    assert source.recovered()
    app.on_rebalance_start()  # a revocation: the next rebalance starts
    assert tables.recovery.completed.is_set()
    assert not source.recovered()
    tables.on_actives_ready()
    assert source.recovered()


def test_a_revocation_starts_the_rebalance_and_a_recovery_ends_it_with_actives_ready() -> None:
    listener = inspect.getsource(faust_aiokafka.ConsumerRebalanceListener.on_partitions_revoked)
    assert "app.on_rebalance_start()" in listener
    completed = inspect.getsource(Recovery.on_recovery_completed)
    assert completed.index("flow_control.resume()") < completed.index("on_actives_ready()")


def _start_calls(manager: Any, on_start: Any) -> list[str]:
    """The steps `on_start` takes on `manager`, its sleeps included."""
    calls: list[str] = []

    async def sleep(seconds: float) -> None:
        calls.append(f"sleep {seconds}")

    async def update_channels() -> None:
        calls.append("update channels")

    async def start_recovery() -> None:
        calls.append("start recovery")

    manager.sleep = sleep
    manager._update_channels = update_channels
    manager.recovery.start = start_recovery
    asyncio.run(on_start(manager))
    return calls


def test_the_prompt_table_manager_starts_as_faust_s_does_without_the_second() -> None:
    # Faust's on_start sleeps a second, then updates the channels and starts the
    # recovery; the prompt one does the same steps without the sleep.
    faust_steps = _start_calls(
        faust.App("bridge-test-5", broker="kafka://127.0.0.1:1", autodiscover=False).tables,
        TableManager.on_start,
    )
    assert faust_steps == ["sleep 1.0", "update channels", "start recovery"]
    app = faust.App(
        "bridge-test-6",
        broker="kafka://127.0.0.1:1",
        autodiscover=False,
        TableManager=faust_bridge.PromptTableManager,
    )
    assert isinstance(app.tables, faust_bridge.PromptTableManager)
    prompt_steps = _start_calls(app.tables, faust_bridge.PromptTableManager.on_start)
    assert prompt_steps == faust_steps[1:]


def test_the_prompt_worker_closes_its_loop_without_idling_a_second(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # mode's worker awaits its sentinel task after every service has stopped and
    # before it closes the loop; Faust's sentinel sleeps a second.
    shutdown = inspect.getsource(FaustWorker._shutdown_loop)
    assert "self._sentinel_task()" in shutdown
    assert shutdown.index("_gather_all()") < shutdown.index("_sentinel_task()")
    slept: list[float] = []
    real_sleep = asyncio.sleep

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        await real_sleep(0)

    monkeypatch.setattr(asyncio, "sleep", sleep)
    asyncio.run(FaustWorker._sentinel_task(object.__new__(FaustWorker)))
    asyncio.run(faust_bridge.PromptWorker._sentinel_task(object.__new__(FaustWorker)))
    assert slept == [1.0, 0]


def test_hitruns_app_uses_the_prompt_table_manager_and_worker() -> None:
    from hitrun.streams.app import app

    assert app.conf.TableManager is faust_bridge.PromptTableManager
    assert app.conf.Worker is faust_bridge.PromptWorker
    # A member hears of a rebalance at its next heartbeat: at most a quarter second later.
    assert app.conf.broker_heartbeat_interval <= 0.25


def test_faust_sleeps_a_second_fetching_nothing_and_waits_a_second_and_a_half_idle() -> None:
    # What FaustSource.fetch and HitrunConsumerThread work around: with every partition
    # paused (a recovery), Faust's fetch sleeps a second whatever its timeout; and its
    # aiokafka consumer has the broker hold an idle fetch 1.5 s, which aiokafka keeps
    # until it starts its fetcher.
    wait_next = inspect.getsource(BaseConsumer._wait_next_records)
    assert "self._get_active_partitions()" in wait_next
    assert "await self.sleep(1)" in wait_next
    assert "await self.wait(self.can_resume_flow)" in wait_next
    create = inspect.getsource(faust_aiokafka.AIOKafkaConsumerThread._create_worker_consumer)
    assert "fetch_max_wait_ms=1500" in create
    assert "fetch_max_bytes" not in create  # aiokafka's default: 50 MiB a fetch
    start = inspect.getsource(aiokafka.AIOKafkaConsumer.start)
    assert "fetch_max_wait_ms=self._fetch_max_wait_ms" in start
    assert "fetch_max_bytes=self._fetch_max_bytes" in start
    assert inspect.signature(aiokafka.AIOKafkaConsumer).parameters["fetch_max_bytes"].default == (
        50 * 1024 * 1024
    )


def test_hitruns_consumer_thread_makes_an_aiokafka_consumer_that_holds_idle_fetches_briefly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # an aiokafka consumer not started yet
    made = SimpleNamespace(_fetch_max_wait_ms=1500, _fetch_max_bytes=50 * 1024 * 1024)
    monkeypatch.setattr(
        faust_aiokafka.AIOKafkaConsumerThread,
        "_create_worker_consumer",
        lambda self, transport: made,
    )
    monkeypatch.setattr(faust_bridge.HitrunConsumerThread, "fetch_total_bytes", 3 << 20)
    thread = object.__new__(faust_bridge.HitrunConsumerThread)
    assert thread._create_worker_consumer(object()) is made
    assert made._fetch_max_wait_ms == faust_bridge.FETCH_MAX_WAIT_MS < 1500
    assert made._fetch_max_bytes == 3 << 20
    consumer = object.__new__(faust_bridge.HitrunConsumer)
    assert "HitrunConsumerThread(" in inspect.getsource(type(consumer)._new_consumer_thread)


class _PausedConsumer:
    """Faust's consumer while a recovery has paused every partition."""

    flow_active = True
    fetched = 0

    def _get_active_partitions(self) -> set[Any]:
        return set()

    async def _wait_next_records(self, timeout: float) -> tuple[Any, set[Any]]:
        self.fetched += 1
        await asyncio.sleep(1)
        return {}, set()


class _NothingToRepair:
    clears = 0

    async def repair(self, source: Any) -> set[Any]:
        return set()


def test_a_fetch_with_every_partition_paused_returns_at_once() -> None:
    consumer = _PausedConsumer()
    source = object.__new__(faust_bridge.FaustSource)
    source._consumer = consumer  # type: ignore[assignment]
    source._guard = _NothingToRepair()  # type: ignore[assignment]

    async def fetch() -> tuple[Any, float]:
        started = asyncio.get_running_loop().time()
        records = await source.fetch(1.0)
        return records, asyncio.get_running_loop().time() - started

    records, took = asyncio.run(fetch())
    assert records == {} and consumer.fetched == 0
    assert took < 0.5  # Faust's own fetch sleeps the whole second


class _CancelledUnderneath(_PausedConsumer):
    """Faust's consumer when a rebalance cancels the consumer thread's fetch: the thread
    call's future comes back holding a CancelledError."""

    def _get_active_partitions(self) -> set[Any]:
        return {"some partition"}

    async def _wait_next_records(self, timeout: float) -> tuple[Any, set[Any]]:
        self.fetched += 1
        promise = asyncio.get_running_loop().create_future()
        promise.set_exception(asyncio.CancelledError())
        return await promise  # type: ignore[no-any-return]


def _source_of(consumer: Any) -> faust_bridge.FaustSource:
    source = object.__new__(faust_bridge.FaustSource)
    source._consumer = consumer
    source._guard = _NothingToRepair()  # type: ignore[assignment]
    return source


def test_a_fetch_cancelled_under_the_loop_by_a_rebalance_comes_back_empty() -> None:
    # Faust's fetcher would crash the worker on it (its supervisor is None).
    consumer = _CancelledUnderneath()
    records = asyncio.run(_source_of(consumer).fetch(1.0))
    assert records == {} and consumer.fetched == 1


def test_a_fetch_whose_own_task_is_cancelled_still_stops() -> None:
    consumer = _CancelledUnderneath()
    consumer._wait_next_records = _PausedConsumer()._wait_next_records  # type: ignore[method-assign]
    source = _source_of(consumer)

    async def stop_while_fetching() -> None:
        task = asyncio.create_task(source.fetch(1.0))
        await asyncio.sleep(0.05)
        task.cancel()
        await task

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(stop_while_fetching())


def test_faust_s_producer_reads_every_topic_s_metadata_after_declaring_one() -> None:
    # Why HitrunProducer exists: each declaration forces a metadata update, and a
    # producer that has sent to no topic asks for every topic on the broker.
    assert "self.Producer(" in inspect.getsource(type(faust.App("p").transport).create_producer)
    declare = inspect.getsource(faust_aiokafka.Producer.create_topic)
    assert "force_metadata_update()" in declare
    update = inspect.getsource(aiokafka.AIOKafkaClient._metadata_update)
    assert "MetadataRequest(list(topics) if topics else None)" in update


def test_the_producer_declares_only_the_topics_hitrun_did_not_create(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    declared: list[str] = []

    async def declare(self: Any, topic: str, partitions: int, replication: int, **kw: Any) -> None:
        declared.append(topic)

    tracked: list[str] = []

    async def track(topic: str) -> None:
        tracked.append(topic)

    monkeypatch.setattr(faust_aiokafka.Producer, "create_topic", declare)
    monkeypatch.setattr(faust_bridge.HitrunProducer, "existing", frozenset({"made"}))
    producer = object.__new__(faust_bridge.HitrunProducer)
    producer._producer = SimpleNamespace(client=SimpleNamespace(add_topic=track))
    asyncio.run(producer.create_topic("made", 8, 1, compacting=True))
    asyncio.run(producer.create_topic("other", 1, 1))
    assert declared == ["other"]
    # What Faust's declaration did besides: the producer knows the topic's partitions
    # (Faust's router reads them), from a metadata request for its tracked topics.
    assert tracked == ["made"]
    assert "_topics" in inspect.getsource(aiokafka.AIOKafkaClient.add_topic)
    assert "self._producer" in inspect.getsource(faust_aiokafka.Producer._ensure_producer)
    app = faust.App("bridge-test-3", broker="kafka://127.0.0.1:1", autodiscover=False)
    # install() sets the runner for every consumer: put it back afterwards.
    monkeypatch.setattr(faust_bridge.HitrunConsumer, "runner", faust_bridge.HitrunConsumer.runner)
    faust_bridge.install(app, object())  # type: ignore[arg-type]
    assert app.transport.Producer is faust_bridge.HitrunProducer


def test_the_worker_command_names_every_topic_it_created_to_the_producer(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    from click.testing import CliRunner

    from hitrun.streams import allocator, topics, worker_command
    from hitrun.streams.config import Settings

    ensured: list[Settings] = []

    async def ensure(settings: Settings, **kw: Any) -> list[str]:
        ensured.append(settings)
        return []

    monkeypatch.setenv("HITRUN_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr(topics, "ensure_topics", ensure)
    monkeypatch.setattr(allocator, "bound_arenas", lambda: None)
    monkeypatch.setattr(worker_command, "use_event_loop", lambda name: None)
    monkeypatch.setattr(worker_command.gc, "set_threshold", lambda *a: None)
    monkeypatch.setattr(worker_command, "run_faust", lambda argv: None)
    monkeypatch.setattr(faust_bridge.HitrunProducer, "existing", frozenset())
    result = CliRunner().invoke(worker_command.worker, [])
    assert result.exit_code == 0, result.output
    (settings,) = ensured
    existing = faust_bridge.HitrunProducer.existing
    assert {settings.changelog_topic, settings.leader_topic} <= existing
    assert existing == {spec.name for spec in topics.topic_specs(settings)}


class _Coordinator:
    """aiokafka's group coordinator as `check_membership` uses it: the coordinator answers
    each heartbeat with the next error code (or raises the next exception)."""

    group_id = "g"
    generation = 7
    member_id = "m-1"

    def __init__(self, answers: list[int | BaseException]) -> None:
        self.answers = answers
        self.requests: list[Any] = []

    async def _send_req(self, request: Any) -> Any:
        self.requests.append(request)
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return SimpleNamespace(error_code=answer)


def _membership_source(coordinator: _Coordinator) -> faust_bridge.FaustSource:
    class Thread:
        def _ensure_consumer(self) -> Any:
            return SimpleNamespace(_coordinator=coordinator)

        async def call_thread(self, method: Any) -> Any:
            return await method()

    return _source_of(SimpleNamespace(_thread=Thread()))


@pytest.mark.parametrize(
    ("code", "outcome"),
    [
        (0, None),  # a member of its generation
        (27, None),  # rebalancing: still a member until it rejoins or is removed
        (25, faust_bridge.Fenced),  # UNKNOWN_MEMBER_ID: removed after its session timed out
        (22, faust_bridge.Fenced),  # ILLEGAL_GENERATION: the group moved on
        (15, aiokafka.errors.GroupCoordinatorNotAvailableError),  # cannot tell: retried
    ],
)
def test_a_membership_check_is_a_heartbeat_of_the_workers_own_generation(
    code: int, outcome: type[BaseException] | None
) -> None:
    coordinator = _Coordinator([code])
    check = _membership_source(coordinator).check_membership()
    if outcome is None:
        asyncio.run(check)
    else:
        with pytest.raises(outcome):
            asyncio.run(check)
    (request,) = coordinator.requests
    assert (request._group, request._generation_id, request._member_id) == ("g", 7, "m-1")


def test_a_membership_check_the_broker_cannot_answer_raises_its_error() -> None:
    coordinator = _Coordinator([aiokafka.errors.KafkaConnectionError()])
    with pytest.raises(aiokafka.errors.KafkaConnectionError):
        asyncio.run(_membership_source(coordinator).check_membership())


def test_aiokafkas_coordinator_has_what_the_membership_check_uses() -> None:
    from aiokafka.consumer.group_coordinator import GroupCoordinator

    assert inspect.iscoroutinefunction(GroupCoordinator._send_req)
    assert {"group_id", "generation", "member_id"} <= set(
        inspect.getsource(GroupCoordinator.__init__).replace("self.", " ").split()
    )
    assert aiokafka.errors.RebalanceInProgressError.errno == 27


def test_the_partition_count_comes_from_the_aiokafka_consumers_cluster_metadata() -> None:
    from aiokafka.cluster import ClusterMetadata

    cluster = ClusterMetadata()
    assert cluster.partitions_for_topic("unknown") is None
    assert "self.cluster = ClusterMetadata" in inspect.getsource(aiokafka.AIOKafkaClient.__init__)
    assert "self._client = AIOKafkaClient" in inspect.getsource(aiokafka.AIOKafkaConsumer.__init__)


def test_the_recovery_keeps_each_active_changelog_partitions_end_less_one() -> None:
    # `recovered_ends` reads it to know where the worker's first state record of each
    # partition should land (streams/repair.py).
    assert "value - 1" in inspect.getsource(Recovery._build_highwaters)
    assert "active_highwaters" in inspect.getsource(Recovery)
    tables = SimpleNamespace(
        recovery=SimpleNamespace(
            active_highwaters={
                faust.types.TP("changelog", 0): 41,
                faust.types.TP("changelog", 1): -1,  # empty
            }
        )
    )
    assert faust_bridge.recovered_ends(SimpleNamespace(tables=tables)) == {  # type: ignore[arg-type]
        aiokafka.TopicPartition("changelog", 0): 42,
        aiokafka.TopicPartition("changelog", 1): 0,
    }


def test_the_worker_bounds_a_fetch_over_all_its_partitions_by_its_setting() -> None:
    from hitrun.agents import customer

    total = customer.settings.fetch_total_bytes
    assert total == 8 * 1024 * 1024  # HITRUN_FETCH_TOTAL_BYTES
    assert faust_bridge.HitrunConsumer.runner is customer.consume_loop
    assert faust_bridge.HitrunConsumerThread.fetch_total_bytes == total
