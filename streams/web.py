"""HTTP views on each worker: liveness and readiness (metrics come from the Prometheus sensor)."""

from __future__ import annotations

from faust import web

from streams.app import app


def readiness() -> tuple[bool, str]:
    """Whether this worker has its partitions and recovered tables, and why not."""
    if app.rebalancing:
        return False, "rebalancing"
    # TableManager always has a recovery service; its type stub omits it.
    if not app.tables.recovery.completed.is_set():  # type: ignore[attr-defined]
        return False, "recovering tables"
    assigned = app.consumer.assignment() if app.consumer else set()
    if not assigned:
        return False, "no partitions assigned"
    return True, f"{len(assigned)} partitions assigned"


@app.page("/healthz")
async def healthz(self: web.View, request: web.Request) -> web.Response:
    """Answers while the process is alive."""
    return self.json({"status": "alive"})


@app.page("/readyz")
async def readyz(self: web.View, request: web.Request) -> web.Response:
    """200 once partitions are assigned and tables recovered, 503 with the reason before."""
    ready, reason = readiness()
    return self.json({"ready": ready, "reason": reason}, status=200 if ready else 503)
