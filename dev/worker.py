"""Starts and stops a hitrun worker as a child process, for tests, the demo and the benchmark.

The code lives in streams/processes.py (`hitrun replay` starts workers too).
"""

from hitrun.streams.processes import (
    TOPIC_SETTINGS,
    WorkerProcess,
    free_port,
    stop_group,
    topic_env,
    worker_env,
)

__all__ = ["TOPIC_SETTINGS", "WorkerProcess", "free_port", "stop_group", "topic_env", "worker_env"]
