"""Starts and stops a hitrun worker as a child process, for tests, the demo and the benchmark.

The code lives in streams/processes.py (`hitrun replay` starts workers too).
"""

import asyncio
from collections.abc import Mapping

from hitrun.streams.config import Settings
from hitrun.streams.processes import (
    TOPIC_SETTINGS,
    WorkerProcess,
    free_port,
    stop_group,
    topic_env,
    worker_env,
)
from hitrun.streams.topics import delete_topics_of

__all__ = [
    "TOPIC_SETTINGS",
    "WorkerProcess",
    "delete_run_topics",
    "free_port",
    "stop_group",
    "topic_env",
    "worker_env",
]


def delete_run_topics(env: Mapping[str, str], timeout_s: float = 30.0) -> str | None:
    """Delete the topics of the run `env` configures (every name starting with its app id),
    once its workers are stopped, so that runs do not pile topics up on a broker.

    Best effort: returns why it failed (None when it did not), never raises.
    """
    if not env.get("HITRUN_APP_ID"):
        return "no HITRUN_APP_ID: the shared default app's topics are not a run's own"
    settings = Settings.from_env(env)
    try:
        asyncio.run(asyncio.wait_for(delete_topics_of(settings, settings.app_id), timeout_s))
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None
