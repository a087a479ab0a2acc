"""The local broker's JVM: C1 only by default, and HITRUN_KAFKA_JVM_OPTS after the defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from hitrun.dev.localkafka import JIT, JVM_OPTS_VARIABLE, LocalKafka


def broker_command(broker: LocalKafka) -> list[str]:
    options = broker.broker_options()
    return broker._java(Path("/libs"), "kafka.Kafka", "server.conf", heap_mb=512, extra=options)


def test_the_broker_compiles_with_c1_only_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(JVM_OPTS_VARIABLE, raising=False)
    command = broker_command(LocalKafka(tmp_path))
    assert JIT == "-XX:TieredStopAtLevel=1"
    assert [option for option in command if "Tiered" in option] == [JIT]
    assert command[-2:] == ["kafka.Kafka", "server.conf"]


def test_options_from_the_variable_follow_the_defaults_so_they_win(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(JVM_OPTS_VARIABLE, "-XX:TieredStopAtLevel=4  -Dsome.flag='a b'")
    command = broker_command(LocalKafka(tmp_path))
    tiered = [i for i, option in enumerate(command) if "TieredStopAtLevel" in option]
    assert [command[i] for i in tiered] == [JIT, "-XX:TieredStopAtLevel=4"]
    assert "-Dsome.flag=a b" in command
    # Before the class path and the main class, where the JVM reads its options.
    assert command.index("-Dsome.flag=a b") < command.index("-cp")


def test_options_given_to_the_broker_replace_the_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(JVM_OPTS_VARIABLE, "-XX:TieredStopAtLevel=4")
    broker = LocalKafka(tmp_path, jvm_options=["-XX:+UseSerialGC"])
    command = broker_command(broker)
    assert "-XX:TieredStopAtLevel=4" not in command
    assert "-XX:+UseSerialGC" in command


def test_kafkas_tools_take_no_broker_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(JVM_OPTS_VARIABLE, "-XX:TieredStopAtLevel=4")
    command = LocalKafka(tmp_path)._java(Path("/libs"), "kafka.tools.StorageTool", heap_mb=256)
    assert "-XX:TieredStopAtLevel=4" not in command
    assert JIT in command
