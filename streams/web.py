"""HTTP views on each worker: health, readiness, customer inspection and admin actions.

/metrics comes from the Prometheus sensor set up in streams/app.py.
"""

from __future__ import annotations

import hmac
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
from faust import web

from agents import retention
from agents.customer import (
    CLOCK_KEY_PREFIX,
    consume_loop,
    customers_table,
    policies,
    retention_policy,
    stream_clock,
)
from agents.state import decode_state
from agents.unpaid import describe, prune
from schemas import compiled_validator
from streams.app import admin_topic, app, settings
from streams.codec import encode


def readiness() -> tuple[bool, str]:
    """Whether this worker has its partitions and recovered tables, and why not."""
    if consume_loop.status.broker_error is not None:
        return False, f"broker unavailable ({consume_loop.status.broker_error}); retrying"
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


@app.page("/customers/{customer_id}")
@app.table_route(table=customers_table, match_info="customer_id")
async def customer(self: web.View, request: web.Request, customer_id: str) -> web.Response:
    """The customer's open orders, strikes and blacklist status, from the worker that owns them."""
    key = customer_id.encode()
    # The table's per-partition clock records are not customers.
    stored = None if key.startswith(CLOCK_KEY_PREFIX) else customers_table.get(key)
    if stored is None:
        return self.json({"error": "unknown customer", "customer_id": customer_id}, status=404)
    state = decode_state(stored)
    # Clean-ups wait for the customer's next event or timer; show the state as of the stream clock.
    now = stream_clock(customer_id)
    if now is not None:
        prune(state.unpaid, now, policies)
    return self.json(
        {
            "customer_id": customer_id,
            **describe(state.unpaid, policies),
            "retention": retention.describe(state.retention, retention_policy),
        }
    )


def _authorized(request: web.Request) -> tuple[bool, int, str]:
    if settings.admin_token is None:
        return False, 403, "admin actions are disabled: HITRUN_ADMIN_TOKEN is not set"
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token, settings.admin_token):
        return False, 401, "a valid bearer token is required"
    return True, 200, ""


async def _admin_action(self: web.View, request: web.Request, action: str) -> web.Response:
    ok, status, why = _authorized(request)
    if not ok:
        return self.json({"error": why}, status=status)
    try:
        body: dict[str, Any] = orjson.loads(await request.read())
    except orjson.JSONDecodeError as exc:
        return self.json({"error": f"invalid JSON: {exc}"}, status=400)
    if not isinstance(body, dict):
        return self.json({"error": "expected a JSON object"}, status=400)
    fields = ("customer_id", "shop_id", "scope", "actor", "reason", "duration_days")
    event: dict[str, Any] = {
        "type": "admin_action_requested",
        "event_id": f"admin-{uuid.uuid4().hex}",
        "occurred_at": datetime.now(UTC).isoformat(),
        "action": action,
        **{k: body[k] for k in fields if k in body},
    }
    try:
        compiled_validator("admin_action_requested.v1")(event)
    except Exception as exc:  # fastjsonschema's error names the offending field
        return self.json({"error": f"invalid request: {exc}"}, status=400)
    await admin_topic.send(key=event["customer_id"].encode(), value=encode(event))
    return self.json({"accepted": True, "event_id": event["event_id"]}, status=202)


@app.page("/admin/blacklist")
class AdminBlacklist(web.View):
    """POST {customer_id, shop_id, actor, reason[, scope, duration_days]} with a bearer token."""

    async def post(self, request: web.Request) -> web.Response:
        return await _admin_action(self, request, "blacklist")


@app.page("/admin/unblacklist")
class AdminUnblacklist(web.View):
    """POST {customer_id, shop_id, actor, reason[, scope]} with a bearer token."""

    async def post(self, request: web.Request) -> web.Response:
        return await _admin_action(self, request, "unblacklist")
