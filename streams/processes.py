"""Child processes hitrun starts: workers (`hitrun replay`, tests, the demo) and their ports.

Every child is started in its own session and dies with the thread that
started it (Linux), and is stopped by process id: nothing is left behind.
"""

from __future__ import annotations

import ctypes
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from prometheus_client.parser import text_string_to_metric_families

EPHEMERAL_RANGE = "/proc/sys/net/ipv4/ip_local_port_range"
PR_SET_PDEATHSIG = 1


def ephemeral_ports() -> tuple[int, int]:
    """The kernel's range of ports for outgoing connections (Linux; a common default elsewhere)."""
    try:
        low, high = (int(n) for n in Path(EPHEMERAL_RANGE).read_text().split())
    except (OSError, ValueError):
        return 32768, 60999
    return low, high


def free_port() -> int:
    """A TCP port on loopback, below the kernel's ephemeral range, that nothing is bound to.

    Not an ephemeral port (binding port 0 gives one): a client reconnecting to
    a port in that range while its server is down can be given that very port
    as its own source port and connect to itself (TCP simultaneous open), and
    then the restarted server cannot bind it.
    """
    low, _ = ephemeral_ports()
    first, last = (20_000, low - 1) if low > 21_000 else (1_025, max(low - 1, 1_025))
    for _ in range(500):
        port = random.randint(first, last)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise OSError(f"no free port found in {first}-{last}")


def die_with_parent() -> None:
    """In a child before exec: the kernel SIGKILLs it when the thread that started it ends.

    So a broker or worker started by a test run or the demo does not outlive
    it, even when that run is SIGKILLed. Linux only (elsewhere a no-op). The
    signal follows the starting *thread*: start long-lived children from the
    main thread.
    """
    if _prctl is not None:
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


# Looked up once here: between fork and exec the child should only call it.
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None


TOPIC_SETTINGS = (
    "checkouts",
    "payments",
    "orders",
    "inquiries",
    "admin",
    "dead_letters",
    "reminders",
    "strikes",
    "blacklist",
    "blacklist_status",
    "retention",
    "erasures",
)


def topic_env(prefix: str) -> dict[str, str]:
    """HITRUN_TOPIC_* variables naming every topic `prefix.<role>`, for an isolated run."""
    return {
        f"HITRUN_TOPIC_{role.upper()}": f"{prefix}.{role.replace('_', '-')}"
        for role in TOPIC_SETTINGS
    }


def worker_env(env: dict[str, str], number: int) -> dict[str, str]:
    """`env` for the `number`-th worker of a group on this machine: its own data directory.

    Each worker's RocksDB store locks its directory; a restarted worker given
    the same number finds its store again and recovers only the changelog's tail.
    """
    base = env.get("HITRUN_DATA_DIR", ".hitrun/data")
    return {**env, "HITRUN_DATA_DIR": str(Path(base) / f"worker-{number}")}


def stop_group(process: subprocess.Popen[bytes], timeout: float) -> int:
    """SIGTERM a child started with its own session (process group), SIGKILL it if it
    lingers; returns its exit code."""
    stop_groups([process], timeout)
    return process.returncode


def stop_groups(processes: list[subprocess.Popen[bytes]], timeout: float) -> None:
    """`stop_group` for several children at once: every one is sent SIGTERM before any is
    waited for, so that workers of one group leave it together instead of each handing
    its partitions to the others on its way out (a rebalance per worker)."""
    running = [p for p in processes if p.poll() is None]
    for process in running:
        os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for process in running:
        try:
            process.wait(max(deadline - time.monotonic(), 0.0))
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


class WorkerProcess:
    """A `hitrun worker` subprocess with its own environment, stopped by process id."""

    def __init__(
        self,
        env: dict[str, str],
        log_path: Path,
        web_port: int | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.web_port = web_port or free_port()
        self.env = {**os.environ, **env, "HITRUN_WEB_PORT": str(self.web_port)}
        self.log_path = log_path
        self.extra_args = extra_args
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def start(self, timeout: float = 90.0) -> WorkerProcess:
        """Start the worker and wait until /readyz answers 200."""
        self.launch()
        return self.wait_ready(timeout)

    def launch(self) -> WorkerProcess:
        """Start the worker process without waiting for it."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "hitrun.streams.cli", "worker", *self.extra_args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # The worker ends with the test run, benchmark or demo that started it.
            preexec_fn=die_with_parent,
        )
        log.close()
        return self

    def wait_ready(self, timeout: float = 90.0) -> WorkerProcess:
        """Wait until /readyz answers 200; raise with the log tail if the worker dies first."""
        if self.process is None:
            raise RuntimeError("launch() the worker first")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"worker exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            if self.get("/readyz")[0] == 200:
                return self
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"worker not ready after {timeout}s:\n{self.log_tail()}")

    def get(self, path: str, token: str | None = None) -> tuple[int, bytes]:
        """GET a path on the worker's web port: (status, body); (0, b"") when it does not answer."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            request = urllib.request.Request(self.url + path, headers=headers)
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return 0, b""

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the worker's samples `name` whose labels include `labels` (0 if unreachable)."""
        status, body = self.get("/metrics")
        if status != 200:
            return 0.0
        return sum(
            sample.value
            for family in text_string_to_metric_families(body.decode())
            for sample in family.samples
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
        )

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM the worker's process group, then SIGKILL if it lingers; returns the exit code."""
        if self.process is None:
            return None
        return stop_group(self.process, timeout)

    def kill(self) -> None:
        """SIGKILL at once: a crash, for recovery tests."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def __enter__(self) -> WorkerProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
