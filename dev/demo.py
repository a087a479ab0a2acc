"""`make demo`: local broker, worker and simulated traffic with live counters; Ctrl-C stops all."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from dev.localkafka import LocalKafka
from dev.worker import WorkerProcess, free_port, stop_group
from streams.simulate import SIMULATED_CLOCK_SKEW, SIMULATED_LATENESS

STATE = Path(".hitrun")


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


@contextlib.contextmanager
def broker() -> Iterator[str]:
    """The cluster named by HITRUN_KAFKA_BOOTSTRAP, or a local broker started (and stopped) here."""
    existing = os.environ.get("HITRUN_KAFKA_BOOTSTRAP")
    if existing:
        print(f"demo: using the existing cluster at {existing}")
        yield existing
        return
    port = 9092 if _port_free(9092) else free_port()
    kafka = LocalKafka(STATE / "kafka", port=port)
    print(f"demo: starting the local Kafka broker on 127.0.0.1:{port} ...", flush=True)
    started = time.monotonic()
    bootstrap = kafka.start()
    print(f"demo: broker ready in {time.monotonic() - started:.1f}s (pid {kafka.pid})", flush=True)
    try:
        yield bootstrap
    finally:
        kafka.stop()
        print("demo: broker stopped", flush=True)


def counters(body: bytes) -> dict[str, float]:
    """The demo's view of a /metrics scrape: totals by outcome and dead letters by reason."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == "hitrun_input_events_total":
                key = sample.labels["outcome"]
                out[key] = out.get(key, 0) + sample.value
            # Every reason and alert type is exported from the start at 0: show those seen.
            elif sample.name == "hitrun_dead_letters_total" and sample.value:
                out[f"dead:{sample.labels['reason']}"] = sample.value
            elif sample.name == "hitrun_alerts_total" and sample.value:
                out[f"alert:{sample.labels['type']}"] = sample.value
    return out


def main() -> int:
    STATE.mkdir(exist_ok=True)
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    with broker() as bootstrap:
        env = {
            "HITRUN_KAFKA_BOOTSTRAP": bootstrap,
            "HITRUN_DATA_DIR": str(STATE / "worker-data"),
            "HITRUN_ALLOWED_LATENESS": SIMULATED_LATENESS,
            "HITRUN_MAX_CLOCK_SKEW": SIMULATED_CLOCK_SKEW,
        }
        worker = WorkerProcess(env, STATE / "logs" / "worker.log", web_port=free_port())
        print("demo: starting the hitrun worker ...", flush=True)
        with worker:
            print(f"demo: worker ready: {worker.url}/metrics  (log: {worker.log_path})", flush=True)
            sim_log = (STATE / "logs" / "simulate.log").open("ab")
            simulator = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "streams.cli",
                    "simulate",
                    "--rate",
                    "300",
                    "--duration",
                    "86400",
                    "--malformed-ratio",
                    "0.02",
                    "--partitioner",
                    "crc32",
                    "--truth",
                    str(STATE / "truth.json"),
                ],
                env={**os.environ, **env, "HITRUN_WEB_PORT": str(free_port())},
                stdout=sim_log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            print(
                "demo: simulating shop traffic at 300 msg/s (2% malformed, crc32 partitioner); "
                "Ctrl-C to stop",
                flush=True,
            )
            try:
                while not stopping and simulator.poll() is None:
                    time.sleep(2)
                    status, body = worker.get("/metrics")
                    if status != 200:
                        continue
                    c = counters(body)
                    dead = ", ".join(
                        f"{k[5:]}={int(v)}" for k, v in sorted(c.items()) if k.startswith("dead:")
                    )
                    alerts = ", ".join(
                        f"{k[6:]}={int(v)}" for k, v in sorted(c.items()) if k.startswith("alert:")
                    )
                    print(
                        f"events processed={int(c.get('processed', 0))} "
                        f"rerouted={int(c.get('rerouted', 0))} "
                        f"dead-lettered={int(c.get('dead_lettered', 0))} [{dead}]"
                        f" | alerts [{alerts}]",
                        flush=True,
                    )
            finally:
                stop_group(simulator, 15)
                sim_log.close()
                print("demo: simulator stopped; stopping the worker ...", flush=True)
    print("demo: everything stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
