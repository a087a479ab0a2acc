"""A real single-node Apache Kafka (KRaft) broker on 127.0.0.1, run from jars fetched with Maven."""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import shlex
import shutil
import signal
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from hitrun.streams.processes import die_with_parent, free_port

POM = Path(__file__).resolve().parent / "kafka" / "pom.xml"
KAFKA_VERSION = "4.1.1"
READY_TOPIC = "__hitrun_ready"
# Every JVM here compiles with C1 only: Kafka's tools because they are short,
# the broker because its full tiered JIT (C2) spent 3.5-4.9 s of CPU on each
# of the first replays of a real-shaped file, as much as the broker's own work,
# on a machine where the workers share two cores with it; C1's code did that
# work no slower (docs/performance.md, "The local broker's JIT").
JIT = "-XX:TieredStopAtLevel=1"
# Extra JVM options for the broker, after the defaults (the last of a flag wins):
# `-XX:TieredStopAtLevel=4` gives back C2 for a long-running broker.
JVM_OPTS_VARIABLE = "HITRUN_KAFKA_JVM_OPTS"


class BrokerError(RuntimeError):
    """The broker could not be fetched, started or stopped."""


def cache_dir() -> Path:
    root = os.environ.get("HITRUN_KAFKA_CACHE") or Path.home() / ".cache" / "hitrun" / "kafka"
    return Path(root) / KAFKA_VERSION


def fetch() -> Path:
    """The directory of broker jars, fetched with Maven the first time only."""
    libs = cache_dir() / "libs"
    marker = cache_dir() / "complete"
    if marker.is_file() and POM.read_bytes() == marker.read_bytes():
        return libs
    if shutil.which("mvn") is None:
        raise BrokerError(
            "Maven (mvn) is needed once to fetch the Kafka jars; apt-get install maven"
        )
    if libs.exists():
        shutil.rmtree(libs)
    libs.parent.mkdir(parents=True, exist_ok=True)
    work = cache_dir() / "build"
    work.mkdir(exist_ok=True)
    shutil.copy(POM, work / "pom.xml")
    result = subprocess.run(
        ["mvn", "-B", "-q", "package", f"-Dlibs.dir={libs}"],
        cwd=work,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise BrokerError(f"mvn failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    shutil.rmtree(work, ignore_errors=True)
    marker.write_bytes(POM.read_bytes())
    return libs


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); reap it if it is ours.
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return True


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes in URL-safe base64 without padding.

    Never one that starts with "-": the storage tool's argument parser reads
    `--cluster-id -x...` as a missing value followed by an option, and the
    format failed on about one start in 64 (Kafka's own Uuid.randomUuid skips
    those ids for the same reason).
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")
AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"


@dataclass(frozen=True)
class SaslSsl:
    """A secured listener: SCRAM over TLS, with ACLs (Kafka's StandardAuthorizer in KRaft).

    `keystore` is a PEM file with the broker's private key (PKCS#8, unencrypted)
    and certificate chain, valid for 127.0.0.1; `ca` the PEM certificate its
    clients trust. Each user gets SCRAM-SHA-256 and -512 credentials when the
    storage is formatted; `admin` (one of them) is a super user, everyone else
    needs ACLs (`LocalKafka.acls`).
    """

    keystore: Path
    ca: Path
    users: Mapping[str, str] = field(default_factory=dict)
    admin: str = "admin"

    def client_options(self, user: str, mechanism: str = "SCRAM-SHA-512") -> dict[str, Any]:
        """aiokafka keyword arguments for `user` (servers not included)."""
        return {
            "security_protocol": "SASL_SSL",
            "ssl_context": ssl.create_default_context(cafile=str(self.ca)),
            "sasl_mechanism": mechanism,
            "sasl_plain_username": user,
            "sasl_plain_password": self.users[user],
        }


class LocalKafka:
    """One broker+controller JVM with its data, config and logs under `data_dir`."""

    def __init__(
        self,
        data_dir: Path,
        port: int = 9092,
        controller_port: int | None = None,
        heap_mb: int = 512,
        die_with_parent: bool = True,
        sasl_ssl: SaslSsl | None = None,
        jvm_options: list[str] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.port = port
        self.controller_port = controller_port or free_port()
        while self.controller_port == self.port:
            self.controller_port = free_port()
        self.heap_mb = heap_mb
        # A broker of a test run or the demo ends with its starter; one started by
        # `python -m hitrun.dev.localkafka start` (make kafka-start) is meant to outlive it.
        self.die_with_parent = die_with_parent
        self.process: subprocess.Popen[bytes] | None = None
        # None: one PLAINTEXT listener, no authentication, no ACLs.
        self.sasl_ssl = sasl_ssl
        # The broker's extra JVM options; None: HITRUN_KAFKA_JVM_OPTS's at start.
        self.jvm_options = jvm_options

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "broker.pid"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "broker.out"

    @property
    def pid(self) -> int | None:
        if self.process is not None:
            return self.process.pid
        try:
            return int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    @property
    def client_options(self) -> dict[str, Any]:
        """aiokafka keyword arguments for a client of this broker (its super user if secured)."""
        options: dict[str, Any] = {"bootstrap_servers": self.bootstrap}
        if self.sasl_ssl is not None:
            options |= self.sasl_ssl.client_options(self.sasl_ssl.admin)
        return options

    def _listener_config(self) -> list[str]:
        secured = self.sasl_ssl
        name = "PLAINTEXT" if secured is None else "SASL_SSL"
        lines = [
            f"listeners={name}://127.0.0.1:{self.port},"
            f"CONTROLLER://127.0.0.1:{self.controller_port}",
            f"advertised.listeners={name}://127.0.0.1:{self.port}",
            "controller.listener.names=CONTROLLER",
            f"inter.broker.listener.name={name}",
            f"listener.security.protocol.map={name}:{name},CONTROLLER:PLAINTEXT",
        ]
        if secured is None:
            return lines
        admin, password = secured.admin, secured.users[secured.admin]
        return [
            *lines,
            f"sasl.enabled.mechanisms={','.join(SCRAM_MECHANISMS)}",
            "sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512",
            # One login module per mechanism; the broker's own client logs in as the admin.
            *(
                f"listener.name.sasl_ssl.{mechanism.lower()}.sasl.jaas.config="
                "org.apache.kafka.common.security.scram.ScramLoginModule required "
                f'username="{admin}" password="{password}";'
                for mechanism in SCRAM_MECHANISMS
            ),
            "ssl.keystore.type=PEM",
            f"ssl.keystore.location={secured.keystore}",
            "ssl.truststore.type=PEM",
            f"ssl.truststore.location={secured.ca}",
            f"authorizer.class.name={AUTHORIZER}",
            # The controller listener is local PLAINTEXT: its principal is ANONYMOUS.
            f"super.users=User:{admin};User:ANONYMOUS",
            "allow.everyone.if.no.acl.found=false",
        ]

    def acls(self, *args: str) -> str:
        """Run Kafka's own kafka-acls (AclCommand) as the super user; returns its output."""
        if self.sasl_ssl is None:
            raise BrokerError("ACLs need a broker started with sasl_ssl")
        secured = self.sasl_ssl
        client = self.data_dir / "admin-client.properties"
        client.write_text(
            "\n".join(
                [
                    "security.protocol=SASL_SSL",
                    "sasl.mechanism=SCRAM-SHA-512",
                    "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule "
                    f'required username="{secured.admin}" '
                    f'password="{secured.users[secured.admin]}";',
                    "ssl.truststore.type=PEM",
                    f"ssl.truststore.location={secured.ca}",
                    "",
                ]
            )
        )
        result = subprocess.run(
            self._java(
                fetch(),
                "org.apache.kafka.tools.AclCommand",
                "--bootstrap-server",
                self.bootstrap,
                "--command-config",
                str(client),
                *args,
                heap_mb=256,
            ),
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        if result.returncode != 0:
            raise BrokerError(
                f"kafka-acls {' '.join(args)} failed:\n{result.stdout}{result.stderr}"
            )
        return result.stdout

    def _write_config(self) -> Path:
        logs = self.data_dir / "logs"
        config = self.data_dir / "server.properties"
        config.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.bootstrap.servers=127.0.0.1:{self.controller_port}",
                    *self._listener_config(),
                    f"log.dirs={logs}",
                    "num.partitions=1",
                    "auto.create.topics.enable=false",
                    "offsets.topic.replication.factor=1",
                    "offsets.topic.num.partitions=8",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "transaction.state.log.num.partitions=8",
                    "share.coordinator.state.topic.replication.factor=1",
                    "share.coordinator.state.topic.min.isr=1",
                    "group.initial.rebalance.delay.ms=0",
                    # Small segments and a short retention keep test data off the disk.
                    "log.segment.bytes=16777216",
                    "log.retention.hours=24",
                    "log.retention.check.interval.ms=60000",
                    "num.network.threads=2",
                    "num.io.threads=4",
                    "",
                ]
            )
        )
        (self.data_dir / "log4j2.properties").write_text(
            "\n".join(
                [
                    "status = warn",
                    "appender.file.type = File",
                    "appender.file.name = FILE",
                    f"appender.file.fileName = {self.data_dir / 'broker.log'}",
                    "appender.file.layout.type = PatternLayout",
                    "appender.file.layout.pattern = [%d] %p %m (%c)%n",
                    "appender.console.type = Console",
                    "appender.console.name = STDOUT",
                    "appender.console.layout.type = PatternLayout",
                    "appender.console.layout.pattern = [%d] %p %m (%c)%n",
                    "appender.console.filter.threshold.type = ThresholdFilter",
                    "appender.console.filter.threshold.level = warn",
                    "rootLogger.level = info",
                    "rootLogger.appenderRefs = file, console",
                    "rootLogger.appenderRef.file.ref = FILE",
                    "rootLogger.appenderRef.console.ref = STDOUT",
                    "logger.kafka.name = kafka",
                    "logger.kafka.level = info",
                    "logger.state.name = state.change.logger",
                    "logger.state.level = warn",
                    "",
                ]
            )
        )
        return config

    def _java(
        self, libs: Path, main: str, *args: str, heap_mb: int, extra: list[str] | None = None
    ) -> list[str]:
        """The command line of a JVM running `main`: the broker or one of Kafka's tools."""
        return [
            "java",
            f"-Xmx{heap_mb}m",
            f"-Xms{min(heap_mb, 256)}m",
            "-XX:+UseG1GC",
            JIT,
            *(extra or []),
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.data_dir}",
            "-cp",
            f"{libs}/*",
            main,
            *args,
        ]

    def _format(self, libs: Path, config: Path) -> None:
        if (self.data_dir / "logs" / "meta.properties").is_file():
            return
        cluster_id = new_cluster_id()
        result = subprocess.run(
            self._java(
                libs,
                "kafka.tools.StorageTool",
                "format",
                "--cluster-id",
                cluster_id,
                "--config",
                str(config),
                "--standalone",
                "--ignore-formatted",
                *self._scram_users(),
                heap_mb=256,
            ),
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise BrokerError(f"storage format failed:\n{result.stdout}\n{result.stderr}")

    def _scram_users(self) -> list[str]:
        """kafka-storage arguments creating each user's SCRAM credentials."""
        if self.sasl_ssl is None:
            return []
        return [
            argument
            for user, password in self.sasl_ssl.users.items()
            for mechanism in SCRAM_MECHANISMS
            for argument in ("--add-scram", f"{mechanism}=[name={user},password={password}]")
        ]

    def start(self, timeout: float = 60.0) -> str:
        """Start the broker and return its bootstrap address once a client round trip works."""
        if self.pid is not None and _pid_alive(self.pid):
            raise BrokerError(f"a broker (pid {self.pid}) already runs from {self.data_dir}")
        libs = fetch()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self._write_config()
        self._format(libs, config)
        out = self.log_file.open("ab")
        self.process = subprocess.Popen(
            self._java(
                libs, "kafka.Kafka", str(config), heap_mb=self.heap_mb, extra=self.broker_options()
            ),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent if self.die_with_parent else None,
        )
        out.close()
        self.pid_file.write_text(str(self.process.pid))
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self.bootstrap

    def broker_options(self) -> list[str]:
        """The broker's JVM options beyond the defaults: the constructor's, else the variable's."""
        if self.jvm_options is not None:
            return list(self.jvm_options)
        return shlex.split(os.environ.get(JVM_OPTS_VARIABLE, ""))

    def _wait_ready(self, timeout: float) -> None:
        # aiokafka logs every refused connection while the JVM boots; that is expected here.
        import logging

        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise BrokerError(
                    f"broker exited with {self.process.returncode} during start:\n{self.log_tail()}"
                )
            try:
                asyncio.run(asyncio.wait_for(_round_trip(self.client_options), timeout=10))
                return
            except Exception as exc:  # any failure means "not ready yet"
                last_error = exc
                time.sleep(0.3)
        raise BrokerError(f"broker not ready after {timeout}s ({last_error!r}):\n{self.log_tail()}")

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM the JVM, SIGKILL it if it lingers, and make sure it is gone."""
        pid = self.pid
        if pid is None:
            return
        if _pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while _pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _pid_alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
                while _pid_alive(pid):
                    time.sleep(0.05)
        if self.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(5)
        self.process = None
        self.pid_file.unlink(missing_ok=True)

    def log_tail(self, lines: int = 40) -> str:
        text = ""
        for path in (self.log_file, self.data_dir / "broker.log"):
            with contextlib.suppress(FileNotFoundError):
                text += "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) + "\n"
        return text or "(no broker log)"

    def __enter__(self) -> LocalKafka:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


async def _round_trip(options: Mapping[str, Any]) -> None:
    """Create the readiness topic if missing, then produce to and read back from it."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(**options, request_timeout_ms=5000)
    await admin.start()
    try:
        if READY_TOPIC not in await admin.list_topics():
            await admin.create_topics([NewTopic(READY_TOPIC, 1, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(**options, request_timeout_ms=5000)
    await producer.start()
    try:
        sent = await producer.send_and_wait(READY_TOPIC, b"ping")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(**options, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(READY_TOPIC, sent.partition)
        consumer.assign([tp])
        consumer.seek(tp, sent.offset)
        record = await consumer.getone()
        if record.value != b"ping":
            raise BrokerError("readiness round trip read back the wrong record")
    finally:
        await consumer.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hitrun.dev.localkafka", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("fetch", help="fetch the broker jars into the cache (once)")
    start = sub.add_parser("start", help="start a broker and wait until it is ready")
    start.add_argument("--data-dir", type=Path, default=Path(".hitrun/kafka"))
    start.add_argument("--port", type=int, default=9092)
    start.add_argument("--foreground", action="store_true", help="run until Ctrl-C, then stop")
    for name in ("stop", "status"):
        p = sub.add_parser(name)
        p.add_argument("--data-dir", type=Path, default=Path(".hitrun/kafka"))
    args = parser.parse_args(argv)

    if args.command == "fetch":
        print(fetch())
        return 0
    # A broker started without --foreground outlives this command (make kafka-start).
    detached = args.command == "start" and not args.foreground
    broker = LocalKafka(
        args.data_dir, port=getattr(args, "port", 9092), die_with_parent=not detached
    )
    if args.command == "start":
        started = time.monotonic()
        print(f"{broker.start()} ready in {time.monotonic() - started:.1f}s (pid {broker.pid})")
        if args.foreground:
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
            try:
                while broker.process is not None and broker.process.poll() is None:
                    time.sleep(0.5)
            except KeyboardInterrupt:
                pass
            finally:
                broker.stop()
        return 0
    if args.command == "stop":
        broker.stop()
        return 0
    pid = broker.pid
    alive = pid is not None and _pid_alive(pid)
    print(f"running (pid {pid})" if alive else "stopped")
    return 0 if alive else 1


if __name__ == "__main__":
    sys.exit(main())
