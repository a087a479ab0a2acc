"""Starts and stops a hitrun worker as a child process, for tests, the demo and the benchmark.

The code lives in streams/processes.py (`hitrun replay` starts workers too).
"""

import asyncio
import sys
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
    "RunTopics",
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


class RunTopics:
    """Runs (their HITRUN_* environments) whose topics are deleted later, together: a
    test's, a bench's."""

    def __init__(self) -> None:
        self.runs: list[dict[str, str]] = []

    def own(self, env: dict[str, str]) -> dict[str, str]:
        """`env`, whose topics (those starting with its app id) `delete` takes."""
        self.runs.append(env)
        return env

    def delete(self, since: int = 0, on: str | None = None) -> None:
        """Delete the topics of the runs owned since the `since`-th on the broker `on`
        (None: delete none; a broker that goes with its data needs no deletion), and
        forget those runs. A failure is printed, not raised."""
        for env in self.runs[since:]:
            if on is not None and env["HITRUN_KAFKA_BOOTSTRAP"] == on:
                failed = delete_run_topics(env)
                if failed is not None:
                    print(
                        f"could not delete the topics of {env['HITRUN_APP_ID']}: {failed}",
                        file=sys.stderr,
                    )
        del self.runs[since:]
